"""Training engineering on a synthetic frame cache: runs, resumes exactly, DDP on gloo."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from gifqa_model.core.artifacts import KEYFRAMES_FILE
from gifqa_model.core.config import TrainParams
from gifqa_model.index.cache import load_tokens
from gifqa_model.train.loop import TrainingTimeout, run_train
from gifqa_model.train.schedule import cosine_lr
from tests.helpers import COLORS, TINY_TRAIN, make_cache, tiny_config


def _params(**kw) -> TrainParams:
    base = {
        **TINY_TRAIN,
        "max_steps": 8,
        "gifs_per_batch": 8,
        "warmup_steps": 2,
        "eval_every": 4,
        "checkpoint_every": 4,
        "lr": 3e-3,
        "max_minutes": 5,
    }
    return TrainParams(**{**base, **kw})


def test_cosine_schedule_warms_up_then_decays() -> None:
    p = TrainParams(lr=1.0, warmup_steps=10, max_steps=110)
    assert cosine_lr(0, p) == pytest.approx(0.1)
    assert cosine_lr(10, p) == pytest.approx(1.0)
    assert cosine_lr(60, p) == pytest.approx(0.5)
    assert cosine_lr(110, p) == pytest.approx(0.0)


def test_a_run_past_its_time_cap_fails_checkpointed_and_writes_no_model(tmp_path: Path) -> None:
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    with pytest.raises(TrainingTimeout, match=r"train.max_minutes \(0.001\) passed at step"):
        run_train(qa, kf, idx, _params(max_steps=100_000, max_minutes=0.001), tmp_path / "out")
    assert (tmp_path / "out" / "checkpoints" / "last.pt").is_file()  # a rerun resumes there
    assert not (tmp_path / "out" / "model").exists()


def test_two_runs_give_byte_identical_weights(tmp_path: Path) -> None:
    """Same code, data, params and seed: the same bytes, whatever the clock did."""
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    runs = [run_train(qa, kf, idx, _params(resume=False), tmp_path / name) for name in "ab"]
    assert runs[0]["steps"] == runs[1]["steps"] == 8
    a, b = ((tmp_path / name / "model" / "model.safetensors").read_bytes() for name in "ab")
    assert a == b


def test_train_saves_model_curve_and_metrics(tmp_path: Path) -> None:
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    m = run_train(qa, kf, idx, _params(grad_accum=2), tmp_path / "out")
    assert m["steps"] == 8 and "val_accuracy" in m
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "model" / "tokenizer" / "tokenizer.json").is_file()
    curve = pd.read_csv(tmp_path / "out" / "curve.csv")
    assert len(curve) == 8 and curve.mvm_loss.gt(0).all()


def test_killed_and_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    straight = run_train(qa, kf, idx, _params(resume=False), tmp_path / "a")
    run_train(qa, kf, idx, _params(stop_at_step=4), tmp_path / "b")  # preempted
    assert json.loads(json.dumps(straight))["steps"] == 8
    resumed = run_train(qa, kf, idx, _params(), tmp_path / "b")
    assert resumed["steps"] == 8
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit: the schedule follows the step alone
    assert resumed["final_loss"] == straight["final_loss"]


def test_a_checkpoint_resumes_only_for_the_fingerprint_it_was_saved_with(
    tmp_path: Path, caplog
) -> None:
    """Other params or inputs (another fingerprint): a fresh start that ends where a straight
    run does; the same fingerprint: a resume from the checkpoint's step. Each says so."""
    caplog.set_level("INFO", logger="gifqa_model.train.loop")
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    straight = run_train(qa, kf, idx, _params(resume=False), tmp_path / "a")
    run_train(qa, kf, idx, _params(stop_at_step=4, lr=1e-2), tmp_path / "b", fingerprint="old")
    other = run_train(qa, kf, idx, _params(), tmp_path / "b", fingerprint="new")
    assert other["resumed_from_step"] == 0 and other["steps"] == 8
    a, b = ((tmp_path / n / "model" / "model.safetensors").read_bytes() for n in "ab")
    assert a == b  # nothing of the other run's checkpoint leaked in
    run_train(qa, kf, idx, _params(stop_at_step=4), tmp_path / "c", fingerprint="same")
    same = run_train(qa, kf, idx, _params(), tmp_path / "c", fingerprint="same")
    assert same["resumed_from_step"] == 4 and same["final_loss"] == straight["final_loss"]
    checkpoint = {n: tmp_path / n / "checkpoints" / "last.pt" for n in "bc"}
    assert (
        f"{checkpoint['b']} was saved for other inputs or params: starting over" in caplog.messages
    )
    assert f"resumed from {checkpoint['c']} at step 4" in caplog.messages


def test_the_stage_fingerprint_follows_the_train_params_and_every_input(tmp_path: Path) -> None:
    from gifqa_model.core.artifacts import (
        CLIP_DIR,
        FRAMES_FILE,
        MANIFEST_CLEAN_FILE,
        QA_CLEAN_FILE,
    )
    from gifqa_model.core.config import Params
    from gifqa_model.stages import out_dir, train_fingerprint

    inputs = [
        out_dir("validate", tmp_path) / MANIFEST_CLEAN_FILE,
        out_dir("validate", tmp_path) / QA_CLEAN_FILE,
        out_dir("index", tmp_path) / KEYFRAMES_FILE,
        out_dir("index", tmp_path) / FRAMES_FILE,
        out_dir("index", tmp_path) / CLIP_DIR / "weights.bin",
    ]
    for i, f in enumerate(inputs):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(bytes([i]) * 8)
    params = Params()
    base = train_fingerprint(params, tmp_path)
    assert train_fingerprint(params, tmp_path) == base
    changed = params.model_copy(update={"train": params.train.model_copy(update={"lr": 1e-2})})
    assert train_fingerprint(changed, tmp_path) != base
    for f in inputs:
        old = f.read_bytes()
        f.write_bytes(old[:-1] + b"x")
        assert train_fingerprint(params, tmp_path) != base, f.name
        f.write_bytes(old)
    assert train_fingerprint(params, tmp_path) == base


TRAIN_SCRIPT = """
import hashlib, sys
from pathlib import Path
from gifqa_model.core.deps import import_stage
import_stage("train")  # as `gifqa train` and each rank import it: the collector paused
import pandas as pd
from gifqa_model.core.artifacts import KEYFRAMES_FILE
from gifqa_model.core.config import TrainParams
from gifqa_model.train.loop import run_train
from tests.helpers import make_cache
root = Path(sys.argv[1])
qa, idx = make_cache(root)
params = TrainParams.model_validate_json(sys.argv[2])
run_train(qa, pd.read_parquet(idx / KEYFRAMES_FILE), idx, params, root / "out")
print(hashlib.sha256((root / "out" / "model" / "model.safetensors").read_bytes()).hexdigest())
"""


def test_two_processes_give_the_same_weights_as_this_one(tmp_path: Path) -> None:
    """Determinism across processes (fresh thread pools, fresh allocators, another thread
    count), not only within one: each process trains on its own copy of the same cache."""
    import hashlib

    params = _params(resume=False)
    repo = Path(__file__).resolve().parents[3]
    digests = []
    for name in "ab":
        proc = subprocess.run(
            [sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path / name), params.model_dump_json()],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=600,
            env={**__import__("os").environ, "PYTHONPATH": str(repo)},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        digests.append(proc.stdout.split()[-1])
    qa, idx = make_cache(tmp_path / "here")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # this process's own count (another test's leftover) is not the run's
    try:
        run_train(qa, pd.read_parquet(idx / KEYFRAMES_FILE), idx, params, tmp_path / "here" / "out")
        assert torch.get_num_threads() == 1  # and the run gives it back
    finally:
        torch.set_num_threads(before)
    here = (tmp_path / "here" / "out" / "model" / "model.safetensors").read_bytes()
    assert digests[0] == digests[1] == hashlib.sha256(here).hexdigest()


@pytest.mark.parametrize("flag", [False, True])
def test_the_deterministic_flag_reaches_torch(tmp_path: Path, flag: bool) -> None:
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        run_train(qa, kf, idx, _params(deterministic=flag, max_steps=2), tmp_path / "out")
        assert torch.are_deterministic_algorithms_enabled() is flag
    finally:
        torch.use_deterministic_algorithms(before)


class _Payload:
    """Unpickling this runs code: what a tampered checkpoint would carry."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))


def test_a_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path, tmp_cwd) -> None:
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    run_train(qa, kf, idx, _params(stop_at_step=4), tmp_path / "b")
    ckpt = tmp_path / "b" / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "curve": [_Payload()]}, ckpt)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run_train(qa, kf, idx, _params(), tmp_path / "b")
    assert not (tmp_cwd / "PWNED").exists()


def test_each_checkpoint_reader_refuses_a_pickled_object_by_itself(tmp_path, tmp_cwd) -> None:
    """The fingerprint read and the restore each load with weights only (the restore is not
    covered by the fingerprint read before it: a checkpoint may be replaced in between)."""
    from gifqa_model.train.checkpoint import checkpoint_fingerprint, load_checkpoint

    tampered = tmp_path / "last.pt"
    torch.save({"step": 1, "curve": [_Payload()], "fingerprint": "f"}, tampered)
    for read in (
        lambda: checkpoint_fingerprint(tampered),
        lambda: load_checkpoint(tampered, None, None, torch.device("cpu")),
    ):
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            read()
    assert not (tmp_cwd / "PWNED").exists()


def test_a_checkpoint_holds_its_step_curve_fingerprint_and_architecture(tmp_path) -> None:
    """What a person opening `last.pt` reads: the step, the curve, the fingerprint it resumes
    for and the model's architecture; written whole (no temporary file left)."""
    from dataclasses import asdict

    from gifqa_model.model.modeling import GifQAModel
    from gifqa_model.train.checkpoint import checkpoint_fingerprint, save_checkpoint

    cfg = tiny_config(vision_width=8, vocab_size=11)
    model = GifQAModel(cfg)
    path = tmp_path / "ckpt" / "last.pt"
    curve = [{"step": 2, "loss": 1.5}]
    save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1), 2, curve, "fp")
    state = torch.load(path, weights_only=True)
    assert (state["step"], state["curve"], state["fingerprint"]) == (2, curve, "fp")
    assert state["config"] == asdict(cfg) and checkpoint_fingerprint(path) == "fp"
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_a_checkpoint_saved_without_a_fingerprint_reads_as_none(tmp_path) -> None:
    """Saved before fingerprints: "" (which matches no run's fingerprint, so it starts over)."""
    from gifqa_model.train.checkpoint import checkpoint_fingerprint

    torch.save({"step": 3, "curve": []}, tmp_path / "old.pt")
    assert checkpoint_fingerprint(tmp_path / "old.pt") == ""


def test_seed_everything_seeds_every_generator_and_sets_the_determinism_flag() -> None:
    import random

    from gifqa_model.train.loop import seed_everything

    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    before = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(11, deterministic=False)
        first = draws()
        assert not torch.are_deterministic_algorithms_enabled()
        random.seed(0), np.random.seed(0), torch.manual_seed(0)  # anything else in between
        seed_everything(11)
        assert draws() == first and torch.are_deterministic_algorithms_enabled()
        # an op without a deterministic kernel (some CUDA ones) warns instead of failing the run
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        random.seed(11), np.random.seed(11), torch.manual_seed(11)
        assert draws() == first  # the seed itself, not another
    finally:
        torch.use_deterministic_algorithms(before)


SPLIT_SCRIPT = """
import os, sys
from pathlib import Path
from gifqa_model.core.deps import import_stage
import_stage("train")  # as each rank of the train stage imports it: the collector paused
import pandas as pd
from gifqa_model.train.loop import TrainParams, run_train
root = Path(sys.argv[1])
qa = pd.read_parquet(root / "qa.parquet")
kf = pd.read_parquet(root / "index" / "keyframes.parquet")
p = TrainParams.model_validate_json(sys.argv[2])
# a folder per rank: the machine of rank 1 never sees the checkpoint rank 0 wrote
run_train(qa, kf, root / "index", p, root / f"out{os.environ['RANK']}")
"""


def _split_params(stop: int | None) -> TrainParams:
    return TrainParams(
        **{**TINY_TRAIN, "max_steps": 4, "gifs_per_batch": 8, "warmup_steps": 1},
        **{"eval_every": 2, "checkpoint_every": 2, "stop_at_step": stop},
    )


@pytest.mark.slow
def test_ranks_that_would_resume_from_different_steps_fail_saying_why(tmp_path: Path) -> None:
    """Rank 0 finds its checkpoint at step 2, rank 1 none: both stop before training (they
    would train different schedules, or hang) and say where the checkpoints must be."""
    qa, idx = make_cache(tmp_path)
    qa.to_parquet(tmp_path / "qa.parquet")
    script = tmp_path / "split.py"
    script.write_text(SPLIT_SCRIPT)
    repo = Path(__file__).resolve().parents[3]
    # rank 0's machine trained to step 2 alone (a checkpoint is the same in any world size)
    run_train(qa, pd.read_parquet(idx / KEYFRAMES_FILE), idx, _split_params(2), tmp_path / "out0")
    assert (tmp_path / "out0" / "checkpoints" / "last.pt").is_file()
    saved = (tmp_path / "out0" / "model" / "model.safetensors").read_bytes()
    second = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
        + [str(script), str(tmp_path), _split_params(None).model_dump_json()],
        cwd=repo,
        capture_output=True,
        text=True,
        errors="replace",  # two ranks' tracebacks interleave in one pipe, mid-character
        timeout=600,
        env={
            **__import__("os").environ,
            "PYTHONPATH": str(repo),
            "OMP_NUM_THREADS": "1",
            "TMPDIR": str(tmp_path),  # torchrun's log folder, which it leaves behind
        },
    )
    assert second.returncode != 0
    for rank in (0, 1):
        checkpoint = tmp_path / f"out{rank}" / "checkpoints" / "last.pt"
        assert (
            f"ranks resumed from different steps ({checkpoint} is not on every machine): put "
            "outputs/.checkpoints on storage all machines share, or delete it to start over"
        ) in second.stderr + second.stdout
    # nothing trained, nothing saved over the first run's weights
    assert (tmp_path / "out0" / "model" / "model.safetensors").read_bytes() == saved


def test_time_reversal_trains_on_reversed_clips(tmp_path: Path) -> None:
    """About half the GIFs of a batch play backwards: their frames reach the model in reverse
    order at mirrored times; the others forwards."""
    from gifqa_model.train.loop import Batches, build

    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    params = _params(time_reversal=0.5, max_steps=4)
    setup = build(qa, kf, idx, params)
    batches = [Batches(setup, params).draw(step, 0) for step in range(20)]
    flips = np.concatenate([b.flip for b in batches])
    assert 0.25 < flips.mean() < 0.75, flips.mean()
    for b in batches:
        frames = setup.cache.frames(b.rows, b.flip)
        src = frames.source.numpy()[frames.index.numpy()]  # (B, F) cache rows as played
        times = frames.times.numpy()[frames.index.numpy()]
        for row, flipped, t in zip(src, b.flip, times, strict=True):
            step = np.diff(row)
            assert (step < 0).all() if flipped else (step > 0).all(), (row, flipped)
            assert (np.diff(t) > 0).all()  # played time always runs forwards
    m = run_train(qa, kf, idx, params, tmp_path / "out")
    assert m["steps"] == 4
    curve = pd.read_csv(tmp_path / "out" / "curve.csv")
    assert "val_accuracy_color" in curve  # per-qtype validation curves


def test_caption_task_trains_on_descriptions_and_needs_them(tmp_path: Path) -> None:
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    texts = {
        g: f"a {a} circle is staying still ." for g, a in zip(qa.gif_id, qa.answer, strict=True)
    }
    m = run_train(
        qa, kf, idx, _params(captions=True, max_steps=4), tmp_path / "out", descriptions=texts
    )
    assert m["steps"] == 4
    # the description words are in the vocabulary the model was trained with
    vocab = json.loads((tmp_path / "out" / "model" / "tokenizer" / "tokenizer.json").read_text())[
        "model"
    ]["vocab"]
    assert {"describe", "staying", "still"} <= set(vocab)
    with pytest.raises(ValueError, match="descriptions"):
        run_train(qa, kf, idx, _params(captions=True, max_steps=1), tmp_path / "again")


def test_scene_loss_trains_the_visual_side_and_needs_targets(tmp_path: Path) -> None:
    qa, idx = make_cache(tmp_path)
    kf = pd.read_parquet(idx / KEYFRAMES_FILE)
    n_rows = len(load_tokens(idx))
    # each frame: its GIF's colour in cell 0 (the tokens encode it), background elsewhere
    scene = np.zeros((n_rows, 4, 2), dtype=np.int64)
    for g, colour in enumerate(qa.answer):
        scene[g * 4 : (g + 1) * 4, 0] = [COLORS.index(colour) + 1, 1]
    params = _params(scene_weight=1.0, scene_grid=2, max_steps=12, eval_every=6)
    m = run_train(qa, kf, idx, params, tmp_path / "out", scene=scene)
    assert m["steps"] == 12
    curve = pd.read_csv(tmp_path / "out" / "curve.csv")
    assert curve.scene_loss.iloc[-3:].mean() < curve.scene_loss.iloc[:3].mean()
    cfg = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert cfg["scene_cells"] == 4 and cfg["scene_classes"] == [8, 5]
    from gifqa_model.model.modeling import GifQAModel

    GifQAModel.from_pretrained(tmp_path / "out" / "model")  # the head's weights load back
    with pytest.raises(ValueError, match="scene targets"):
        run_train(qa, kf, idx, params, tmp_path / "again")
