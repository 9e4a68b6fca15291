"""The train stage on several processes or machines: with `train.nproc` > 1 the stage runs
itself again under `torchrun` (DDP: gloo on CPU, nccl on CUDA), waits, and turns a failed rank
into one clear error.

One machine: `torchrun --standalone` (a free local port, nothing to configure). Several
(`train.nnodes` > 1): `gifqa train` is started on every machine with the same params, and their
torchruns meet at `train.rdzv_endpoint` (c10d rendezvous); rank 0 runs on one of them and alone
writes `outputs/train` and `metrics/train.json` there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from gifqa_model.core.config import Params, TrainParams

log = logging.getLogger(__name__)

FAILURES_ENV = "GIFQA_TRAIN_FAILURES"  # the folder where each failing rank leaves its error
RDZV_ID = "gifqa-train"  # the same on every machine of a run: it names the rendezvous


class DistributedTrainFailed(RuntimeError):
    """A rank of a torchrun training failed; the message says which and why."""


def under_torchrun() -> bool:
    """True in a process torchrun started (it sets RANK and WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ or "RANK" in os.environ


def torchrun_command(train: TrainParams, params_file: Path) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`, so this interpreter) on the train
    command: each rank runs the stage as `gifqa train` does."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(train.nproc)]
    if train.nnodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [
            "--nnodes",
            str(train.nnodes),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            train.rdzv_endpoint,
            "--rdzv-id",
            RDZV_ID,
        ]
    return [*cmd, "-m", "gifqa_model.cli", "train", "--params", str(params_file)]


def run_under_torchrun(params: Params, root: Path = Path(".")) -> None:
    """Train under torchrun in `root` with exactly `params`; raises DistributedTrainFailed
    naming the failed ranks when torchrun fails."""
    import torch

    train = params.train
    if torch.cuda.is_available() and train.nproc > torch.cuda.device_count():
        raise ValueError(
            f"train.nproc is {train.nproc} but this machine has "
            f"{torch.cuda.device_count()} GPU(s): one process per GPU"
        )
    with tempfile.TemporaryDirectory(prefix="gifqa-torchrun-") as tmp:
        # the ranks read these params, not params.yaml: a caller's overrides reach them
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))
        failures = Path(tmp) / "failures"
        failures.mkdir()
        cmd = torchrun_command(train, params_file)
        log.info("training on %d x %d processes: %s", train.nnodes, train.nproc, " ".join(cmd))
        # TMPDIR: torchrun's own log folder (torchelastic_*), which it never removes, and the
        # ranks' temporary files go with this folder
        env = {**os.environ, FAILURES_ENV: str(failures), "TMPDIR": tmp}
        code = subprocess.run(cmd, cwd=root, env=env, check=False).returncode
        if code != 0:
            raise DistributedTrainFailed(failure_message(code, failures, train))


def failure_message(code: int, failures: Path, train: TrainParams) -> str:
    """What failed, first failure first (a rank that dies takes the others down after it)."""
    head = (
        f"training under torchrun ({train.nnodes} machine(s) x {train.nproc} processes) "
        f"failed, exit code {code}"
    )
    reports = sorted(
        (json.loads(f.read_text()) for f in failures.glob("rank-*.json")), key=lambda r: r["time"]
    )
    if not reports:
        return (
            f"{head}; no rank on this machine raised an error (killed, out of memory, or a "
            "rank on another machine failed): see torchrun's root cause above"
        )
    by_error: dict[str, list[str]] = {}  # ranks that failed alike, in order of the first
    for r in reports:
        by_error.setdefault(r["error"], []).append(
            f"rank {r['rank']} (local {r['local_rank']} on {r['host']})"
        )
    lines = [f"{', '.join(ranks)}: {error}" for error, ranks in by_error.items()]
    return f"{head}; first failure: " + "; then ".join(lines)


def record_failure(exc: BaseException) -> None:
    """Leave this rank's error where the launching stage reads it."""
    folder = os.environ.get(FAILURES_ENV)
    if not folder:
        return
    rank = os.environ.get("RANK", "0")
    report = {
        "rank": int(rank),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "host": socket.gethostname(),
        "time": time.time(),
        "error": f"{type(exc).__name__}: {exc}",
    }
    Path(folder, f"rank-{rank}.json").write_text(json.dumps(report))


@contextlib.contextmanager
def failures_recorded() -> Iterator[None]:
    """Record an error raised inside (then raise it on) when a launching stage waits for it."""
    try:
        yield
    except Exception as exc:
        record_failure(exc)
        raise
