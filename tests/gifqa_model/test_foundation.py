"""The foundation: what the simulator knows enters a retrain only as pretrained weights.

A tiny foundation is built by its own command's function on a corpus of its own seed, then
two retrains run on one corpus, one with ShapesWorld's ground truth deleted: their weights are
the same bytes, because no stage that makes a retrain's weights reads it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from gifqa_model import stages
from gifqa_model.core.artifacts import CLIP_DIR, MODEL_DIR, out_dir
from gifqa_model.core.config import Params, apply_overrides
from gifqa_model.core.digests import tree_digest, weights_digest
from gifqa_model.model.foundation import WHOLE_DIR, foundation_paths
from tests.helpers import TINY_MODEL

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "shapes": {"n_gifs": 40, "workers": 1},
    "ingest": {"workers": 1},
    "clip": {"fit_steps": 3, "fit_batch_size": 16},
    "index": {"frames_per_gif": 4, "decode_workers": 1},
    "train": {
        "max_steps": 3,
        "eval_every": 3,
        "eval_samples": 8,
        "gifs_per_batch": 4,
        "scene_labels": ["count"],
        "model": TINY_MODEL,
    },
    # the project's foundation.train asks 3,200 steps; a tiny build needs only a few
    "foundation": {"n_gifs": 40, "train": {"max_steps": 3, "warmup_steps": 1}},
}


@contextlib.contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _project_params(**changes) -> Params:
    """The repo's params.yaml (foundation pins included) made tiny."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return Params.model_validate(apply_overrides(apply_overrides(base, TINY), changes))


@pytest.fixture(scope="module")
def foundation(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("foundation")
    with _cwd(root):
        metrics = stages.stage_foundation(_project_params(foundation={"digest": None}), Path("."))
    return root / "foundation" / "model", metrics


def _retrain(root: Path, params: Params) -> str:
    """ingest → … → train in `root` (its data/ already there); the weights' digest."""
    with _cwd(root):
        for run in (stages.stage_ingest, stages.stage_synth_qa, stages.stage_validate):
            run(params, Path("."))
        stages.stage_index(params, Path("."))
        stages.stage_train(params, Path("."))
        return weights_digest(out_dir("train", Path(".")) / MODEL_DIR)


def test_the_foundation_is_built_on_its_own_seed_in_the_full_profiles_layout(
    foundation: tuple[Path, dict],
) -> None:
    folder, metrics = foundation
    assert metrics["seed"] == 7000 and metrics["digest"] == tree_digest(folder)
    assert metrics["clip"]["clip_fit_scene_loss_first"] > 0  # it did learn from ground truth
    for path in foundation_paths(str(folder)).values():
        assert Path(path).exists(), path
    assert (folder / WHOLE_DIR / "model.safetensors").is_file()


def test_a_retrain_gives_the_same_weights_with_the_ground_truth_deleted(
    foundation: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, metrics = foundation
    params = _project_params(foundation={"digest": metrics["digest"]})
    with_truth, without = tmp_path / "with", tmp_path / "without"
    for root in (with_truth, without):
        shutil.copytree(folder, root / "foundation" / "model")
    with _cwd(with_truth):
        stages.stage_data(params, Path("."))
    shutil.copytree(with_truth / "data", without / "data")
    (without / "data" / "shapesworld" / "ground_truth.jsonl").unlink()

    assert _retrain(with_truth, params) == _retrain(without, params)
    # the CLIP it cached tokens with is the foundation's, frozen: no fit happened
    index = (with_truth / "metrics" / "index.json").read_text()
    assert "clip_fit_steps" not in index
    # and the keyframes were still scored where the ground truth exists (scoring may read it)
    assert "keyframe_precision" in index
    clip_weights = Path("outputs") / "index" / CLIP_DIR / "clip.safetensors"
    assert (without / clip_weights).read_bytes() == (with_truth / clip_weights).read_bytes()


def test_the_retrain_starts_from_the_foundations_weights(foundation: tuple[Path, dict]) -> None:
    from gifqa_model.model.configuration import GifQAConfig
    from gifqa_model.model.modeling import GifQAModel

    folder, _ = foundation
    whole = GifQAModel.from_pretrained(folder / WHOLE_DIR)
    cfg = {
        k: v
        for k, v in vars(whole.cfg).items()
        if not k.startswith(("scene_", "qformer_config", "lm_config"))
    }
    paths = foundation_paths(str(folder))
    cfg |= {"qformer_dir": paths["train.model.qformer_dir"], "lm_dir": paths["train.model.lm_dir"]}
    loaded = GifQAModel(GifQAConfig(**cfg), pretrained=True).state_dict()
    reference = whole.state_dict()
    assert loaded.keys() <= reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in loaded)


def test_retrain_stages_refuse_ground_truth_settings(tmp_path: Path) -> None:
    """Before they read anything: the settings alone are refused, naming the way out."""
    with pytest.raises(ValueError, match="train.scene_weight.*foundation"):
        stages.stage_train(_project_params(train={"scene_weight": 1.0}), tmp_path)
    fit_on_truth = _project_params(clip={"pretrained_path": None, "fit_scene_weight": 1.0})
    with pytest.raises(ValueError, match="clip.fit_scene_weight.*foundation"):
        stages.stage_index(fit_on_truth, tmp_path)


def test_a_foundation_other_than_the_pinned_one_is_refused(
    foundation: tuple[Path, dict], tmp_path: Path
) -> None:
    folder, metrics = foundation
    params = _project_params(foundation={"digest": metrics["digest"]})
    shutil.copytree(folder, tmp_path / "foundation" / "model")
    stages.check_foundation(params, tmp_path)  # the pinned one passes
    tok = tmp_path / "foundation" / "model" / "tokenizer" / "tokenizer_config.json"
    tok.write_text(tok.read_text() + " ")
    with pytest.raises(ValueError, match="foundation.digest"):
        stages.check_foundation(params, tmp_path)
    shutil.rmtree(tmp_path / "foundation")
    with pytest.raises(FileNotFoundError, match="foundation"):
        stages.check_foundation(params, tmp_path)


def test_the_foundation_registers_once_with_a_card_naming_its_seed_and_ground_truth(
    foundation: tuple[Path, dict], tmp_path: Path
) -> None:
    import mlflow

    from gifqa_model.registry.foundation import FOUNDATION_MODEL, register_foundation

    folder, metrics = foundation
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = _project_params()
    assert register_foundation(params, folder, metrics) == 1
    assert register_foundation(params, folder, metrics) == 1  # its digest is there already
    mv = mlflow.MlflowClient().get_model_version(FOUNDATION_MODEL, "1")
    assert "seed 7000" in mv.description and "ground truth" in mv.description


def test_the_foundation_card_word_for_word() -> None:
    from gifqa_model.registry.foundation import foundation_card

    params = Params.model_validate({"foundation": {"seed": 5, "n_gifs": 9}})
    card = foundation_card(params, {"digest": "d" * 64, "train": {"val_accuracy": 0.5, "steps": 7}})
    assert card.split("\n") == [
        "# gifqa-foundation `dddddddddddd`",
        "",
        "The tiny profile's stand-in for pretrained weights (CLIP, BLIP-2 Q-Former, LM).",
        "",
        "- **Learned from**: a ShapesWorld corpus of generator seed 5 (9 GIFs), which no retrain "
        "and no benchmark split uses; its descriptions, their QA, **and the generator's ground "
        "truth** (per-cell colour and shape in the CLIP fit, each object's motion, count and "
        "start cell in training).",
        "- **Settings changed from the project's**: clip.fit_scene_weight=1.0, train.lr=0.001, "
        "train.max_steps=3200, train.scene_weight=1.0, train.warmup_steps=100.",
        "- **Its own val accuracy** (its corpus): 0.5 after 7 steps.",
        "- **A retrain** loads it through the full profile's paths and learns on from GIFs, "
        "descriptions and QA only; it never rebuilds it. A new foundation is a deliberate, "
        "recorded change: `gifqa foundation build --pin`, then commit.",
    ]
    bare = foundation_card(Params(), {})
    assert bare.startswith("# gifqa-foundation ``\n")
    assert "- **Its own val accuracy** (its corpus): n/a after n/a steps." in bare


def test_registering_the_foundation_records_its_run_files_digest_and_card(tmp_path: Path) -> None:
    """What `gifqa foundation register` leaves in the registry, field by field; a second
    foundation is a second version of the same model, in the same experiment."""
    import mlflow
    from mlflow import MlflowClient

    from gifqa_model.core.digests import tree_digest
    from gifqa_model.registry.foundation import (
        FOUNDATION_EXPERIMENT,
        FOUNDATION_MODEL,
        foundation_card,
        register_foundation,
    )
    from gifqa_model.registry.versions import DIGEST_TAG

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    folder = tmp_path / "model"
    (folder / "clip").mkdir(parents=True)
    (folder / "clip" / "w.bin").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    params = Params.model_validate({"foundation": {"seed": 5, "n_gifs": 9}})
    metrics = {"digest": "ignored: the folder's own digest is what is recorded"}
    store = (tmp_path / "artifacts").as_uri()
    assert register_foundation(params, folder, metrics, artifact_location=store) == 1
    digest = tree_digest(folder)
    mv = client.get_model_version(FOUNDATION_MODEL, "1")
    card = foundation_card(params, metrics)
    assert mv.description == card and mv.tags == {DIGEST_TAG: digest, "seed": "5"}
    run = client.get_run(mv.run_id)
    assert mv.source == f"{run.info.artifact_uri}/foundation"
    assert run.info.run_name == f"foundation-{digest[:12]}" and run.info.status == "FINISHED"
    assert run.data.params == {"seed": "5", "n_gifs": "9", "digest": digest}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == FOUNDATION_EXPERIMENT and experiment.artifact_location == store
    files = {a.path for a in client.list_artifacts(mv.run_id, "foundation")}
    assert files == {"foundation/clip", "foundation/config.json"}
    assert client.list_artifacts(mv.run_id, "foundation/clip")[0].path == "foundation/clip/w.bin"
    assert {a.path for a in client.list_artifacts(mv.run_id)} == {"foundation", "model_card.md"}
    local = client.download_artifacts(mv.run_id, "model_card.md", str(tmp_path))
    assert Path(local).read_text() == card
    model = client.get_registered_model(FOUNDATION_MODEL)
    assert model.description == "gifqa's pretrained foundation"
    (folder / "config.json").write_text('{"changed": true}')
    assert register_foundation(params, folder, metrics) == 2  # the model and experiment exist
    second = client.get_model_version(FOUNDATION_MODEL, "2")
    assert client.get_run(second.run_id).info.experiment_id == experiment.experiment_id
    assert second.tags[DIGEST_TAG] == tree_digest(folder) != digest
    assert register_foundation(params, folder, metrics) == 2
