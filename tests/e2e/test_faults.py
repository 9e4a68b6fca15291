"""Faults on one machine, with the real pipeline: a run killed mid-train resumes from its
checkpoint and DVC reruns only what is stale; a full disk fails the stage and nothing partial
is recorded as done, in the ingest stage and in watch-data's import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gifqa_model.core.artifacts import CHECKPOINTS_DIR
from gifqa_model.core.config import ShapesParams, load_params
from gifqa_model.data.drop import import_drop
from gifqa_model.data.shapesworld import generate_corpus
from gifqa_model.stages import stage_data
from tasks.stages import stage_env
from tests.helpers import make_project, sh, wait_until

pytestmark = pytest.mark.integration
DVC = [sys.executable, "-m", "dvc"]
# the kill comes at the first checkpoint (step 5): enough steps after it that the run is still
# going when it lands, few enough that the resumed run is short; two GIFs a batch, a quarter
# of the default's CPU a step (where training stops is under test, not what it learns)
STEPS = 60
TRAIN = {"max_steps": STEPS, "checkpoint_every": 5, "eval_every": STEPS, "gifs_per_batch": 2}


@pytest.fixture()
def project(tmp_path) -> Path:
    root = make_project(tmp_path / "p", {"train": TRAIN})
    stage_data(load_params(root / "params.yaml"), root=root)
    sh([*DVC, "add", "-q", "data"], root)
    return root


def test_a_run_killed_mid_train_resumes_and_reruns_only_what_is_stale(project: Path) -> None:
    """`dvc repro` as a flow run starts it, its stages forked by a stage server; the whole run
    (DVC, the stage command and the stage) SIGKILLed at the first checkpoint, then run again."""
    from flows.stageserver import stage_server

    with stage_server(stage_env(), project) as served:
        env = stage_env(served)
        proc = subprocess.Popen(
            [*DVC, "repro", "train"],
            cwd=project,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        ckpt = project / CHECKPOINTS_DIR / "train" / "last.pt"
        try:
            wait_until(
                lambda: ckpt.is_file() or proc.poll() is not None,
                timeout=900,
                what="the first checkpoint",
            )
            assert proc.poll() is None, "training ended before it could be killed"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker dies: no cleanup runs
            proc.wait()
        lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
        assert "train" not in lock and "index" in lock  # the killed stage is not recorded as done
        again = subprocess.run(
            [*DVC, "repro", "train"], cwd=project, env=env, text=True, capture_output=True
        )
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    for stage in ["ingest", "synth_qa", "validate", "index"]:
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    metrics = json.loads((project / "metrics" / "train.json").read_text())
    assert metrics["resumed_from_step"] >= 5 and metrics["steps"] == STEPS
    assert not ckpt.exists()  # a finished run leaves nothing to resume


@pytest.fixture()
def small_disk(tmp_path):
    """A 16 KiB tmpfs: a real full disk (ENOSPC) for whatever is written under it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts: list[Path] = []

    def mount(where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)], check=True)
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_disk_during_ingest_records_nothing_as_done(project: Path, small_disk) -> None:
    small_disk(project / "outputs")
    proc = subprocess.run(
        [*DVC, "repro", "ingest"], cwd=project, text=True, capture_output=True, env=stage_env()
    )
    assert proc.returncode != 0
    assert "No space left on device" in " ".join((proc.stdout + proc.stderr).split())
    assert not (project / "dvc.lock").exists() or "ingest" not in (
        yaml.safe_load((project / "dvc.lock").read_text()).get("stages") or {}
    )
    assert not (project / "metrics" / "ingest.json").exists()
    subprocess.run(["umount", "-l", str(project / "outputs")], check=True)
    sh([*DVC, "repro", "ingest"], project)  # space again: the stage runs and is recorded
    assert "ingest" in yaml.safe_load((project / "dvc.lock").read_text())["stages"]


def test_full_disk_during_a_drop_import_leaves_corpus_and_drop_as_they_were(
    tmp_path: Path, small_disk
) -> None:
    drop = tmp_path / "drop"
    generate_corpus(drop, ShapesParams(n_gifs=20, seed=5))
    before = sorted(p.relative_to(drop) for p in drop.rglob("*"))
    corpus = small_disk(tmp_path / "corpus")
    with pytest.raises(OSError, match="No space left"):
        import_drop(drop, corpus)
    assert sorted(p.relative_to(drop) for p in drop.rglob("*")) == before
    assert list(corpus.rglob("*.gif")) == [] and not (corpus / "descriptions.tsv").exists()
    assert not [p for p in corpus.rglob("*") if p.is_file()]  # no partial file left
