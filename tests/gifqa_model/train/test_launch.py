"""The train stage with `train.nproc: 2`: `gifqa train` re-runs itself under torchrun (2 CPU
processes, gloo), both ranks train the same weights, rank 0 alone writes and logs (once a
step), and a failing rank fails the stage by name."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from gifqa_model.core.config import TrainParams
from gifqa_model.train.launch import failure_message, torchrun_command
from tests.helpers import TINY_TRAIN, make_cache

STEPS = 4


def _project(root: Path, **train) -> Path:
    """What the train stage reads (the validate and index stages' outputs) and a params.yaml."""
    qa, _ = make_cache(root / "outputs")
    clean = root / "outputs" / "validate"
    clean.mkdir(parents=True)
    qa.to_parquet(clean / "qa_clean.parquet", index=False)
    gifs = sorted(qa.gif_id.unique())
    pd.DataFrame(
        {
            "gif_id": gifs,
            "description": [f"a {g}" for g in gifs],
            "path": [f"data/gifs/{g}.gif" for g in gifs],
        }
    ).to_parquet(clean / "manifest_clean.parquet", index=False)
    section = {
        **TINY_TRAIN,
        "max_steps": STEPS,
        "gifs_per_batch": 8,
        "warmup_steps": 1,
        "eval_every": 2,
        "checkpoint_every": 2,
        "nproc": 2,
        **train,
    }
    (root / "params.yaml").write_text(yaml.safe_dump({"train": section}))
    return root


def _gifqa_train(root: Path) -> subprocess.CompletedProcess:
    """`gifqa train` in `root`, with a temporary folder of its own (`root/../tmp`)."""
    (root.parent / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "TMPDIR": str(root.parent / "tmp"),
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # rich folds a word longer than the line (a deep temporary path): wide lines keep the
        # message's words whole wherever pytest puts its temporary folder
        "COLUMNS": "1000",
    }
    # two ranks write one pipe: their long tracebacks interleave, a character's bytes apart
    return subprocess.run(
        ["gifqa", "train"],
        cwd=root,
        env=env,
        text=True,
        errors="replace",
        capture_output=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_stage_trains_on_two_processes_and_rank0_alone_writes(
    tmp_path: Path, monkeypatch
) -> None:
    root = _project(tmp_path / "p")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("ddp", artifact_location=(tmp_path / "art").as_uri())
    run_id = mlflow.MlflowClient().create_run(exp).info.run_id
    monkeypatch.setenv("GIFQA_MLFLOW_RUN_ID", run_id)

    proc = _gifqa_train(root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    metrics = json.loads((root / "metrics" / "train.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == STEPS
    # each rank prints its metrics, then the launcher rank 0's file: both ranks trained, and
    # their weights agree (DDP all-reduced the gradients; ranks apart end on different sums)
    text = " ".join(proc.stdout.split())
    assert text.count('"world_size": 2') == 3, text[-3000:]
    sums = re.findall(r'"param_checksum": ([-0-9.e]+)', text)
    assert len(sums) == 3 and set(sums) == {str(metrics["param_checksum"])}, sums
    # one writer: rank 0's files only, the checkpoint gone once done
    out = root / "outputs" / "train"
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "model", "training_curve.png"]
    assert (out / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in (root / "metrics").iterdir()) == ["train.json"]
    assert not (root / "outputs" / ".checkpoints" / "train").exists()
    with open(out / "curve.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert rows[-1]["val_accuracy"]  # rank 0's curve: only rank 0 validates
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # logged once a step
    # nothing left in the temporary folder: torchrun's log folder went with the launcher's
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.slow
def test_a_failing_rank_fails_the_stage_saying_which(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", tokenizer_dir=str(tmp_path / "no-tokenizer"))
    proc = _gifqa_train(root)
    text = " ".join(proc.stdout.split())  # rich wraps the message
    assert proc.returncode == 1, text[-3000:] + proc.stderr[-3000:]
    assert "train stopped: training under torchrun (1 machine(s) x 2 processes) failed" in text
    assert "first failure: rank " in text and "no-tokenizer" in text
    assert not (root / "metrics" / "train.json").exists()


def test_the_failure_names_the_first_failed_rank_first(tmp_path: Path) -> None:
    train = TrainParams(nproc=3)
    assert "no rank on this machine raised an error" in failure_message(-9, tmp_path, train)
    for rank, t, error in [
        (0, 2.0, "RuntimeError: peer closed"),
        (2, 1.0, "ValueError: bad"),
        (1, 3.0, "RuntimeError: peer closed"),
    ]:
        (tmp_path / f"rank-{rank}.json").write_text(
            json.dumps({"rank": rank, "local_rank": rank, "host": "h", "time": t, "error": error})
        )
    assert failure_message(1, tmp_path, train).endswith(
        "exit code 1; first failure: rank 2 (local 2 on h): ValueError: bad; then "
        "rank 0 (local 0 on h), rank 1 (local 1 on h): RuntimeError: peer closed"
    )


def test_torchrun_command_one_machine_or_a_rendezvous(tmp_path: Path) -> None:
    one = torchrun_command(TrainParams(nproc=4), tmp_path / "p.yaml")
    assert one[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in one
    assert one[one.index("--nproc-per-node") + 1] == "4"
    assert one[-5:] == ["-m", "gifqa_model.cli", "train", "--params", str(tmp_path / "p.yaml")]
    many = torchrun_command(
        TrainParams(nproc=8, nnodes=2, rdzv_endpoint="trainer-0:29400"), tmp_path / "p.yaml"
    )
    assert "--standalone" not in many
    assert many[many.index("--nnodes") + 1] == "2"
    assert many[many.index("--rdzv-endpoint") + 1] == "trainer-0:29400"
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        TrainParams(nnodes=2)
