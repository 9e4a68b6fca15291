"""Prefect tasks: run one DVC stage, read its metrics, copy them into MLflow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from prefect import get_run_logger, task

from gifqa_model.core.artifacts import read_metrics
from gifqa_model.core.config import flatten


def stage_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a stage subprocess runs in: this interpreter's bin first on PATH, and
    Python's output unbuffered, so what a stage prints is seen when it prints it."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def stream(
    cmd: list[str], cwd: str | Path, env: dict[str, str], on_line, every_s: float = 10.0
) -> tuple[int, list[str]]:
    """Run `cmd` (stderr into stdout) and hand each line to `on_line` as it is printed. A line
    rewritten in place (a progress bar's carriage returns: step / total, loss, accuracy, time
    left) is handed on at most every `every_s` s, and once more in its final state, so a log
    gets plain lines. Returns the exit code and the last 200 lines."""
    tail: list[str] = []
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    pending, bar, shown = b"", "", time.monotonic() - every_s

    def emit(text: str) -> None:
        tail.append(text)
        del tail[:-200]
        on_line(text)

    while chunk := os.read(proc.stdout.fileno(), 65536):
        # [text, end, text, end, ..., what is not yet ended]
        *ended, pending = re.split(rb"([\r\n])", pending + chunk)
        for raw, end in zip(ended[::2], ended[1::2], strict=True):
            text = raw.decode("utf-8", "replace").rstrip()
            if end == b"\r":  # a bar's new state: shown now and then
                bar = text or bar
                if bar and time.monotonic() - shown >= every_s:
                    emit(bar)
                    shown, bar = time.monotonic(), ""
            elif text or bar:  # a line, or the bar's final state ended by its newline
                emit(text or bar)
                bar = ""
    if pending.strip() or bar:
        emit(pending.decode("utf-8", "replace").strip() or bar)
    return proc.wait(), tail


def flatten_metrics(metrics: dict, prefix: str) -> dict[str, float]:
    """Nested stage metrics → flat numeric MLflow metrics (`stage/key/sub`): MLflow's UI
    groups charts by what comes before the first "/", so each stage is one section."""
    flat = flatten(metrics, prefix, sep="/")
    return {
        k.replace(" ", "_"): float(v) for k, v in flat.items() if isinstance(v, bool | int | float)
    }


def changed_stages(project_dir: str | Path, stages: list[str]) -> set[str]:
    """Which of `stages` `dvc status` finds changed (the stage, its deps, params or outputs):
    one DVC process for the pipeline where a `dvc repro --single-item` each costs one a stage.
    Every stage when the status cannot be read: DVC then decides, stage by stage."""
    cmd = [sys.executable, "-m", "dvc", "status", "--json"]
    out = subprocess.run(cmd, cwd=project_dir, env=stage_env(), capture_output=True, text=True)
    try:
        status = json.loads(out.stdout) if out.returncode == 0 else None
    except json.JSONDecodeError:
        status = None
    return set(stages) if not isinstance(status, dict) else set(stages) & set(status)


@task(name="dvc-stage", retries=1, retry_delay_seconds=5, log_prints=True)
def run_dvc_stage(
    stage: str, project_dir: str, env: dict[str, str] | None = None, unchanged: bool = False
) -> dict:
    """`dvc repro --single-item <stage>`; a stage whose deps did not change is skipped by DVC.
    `unchanged`: `dvc status` found it so and no stage before it ran in this run: skipped
    without a DVC process, its metrics read as they are."""
    logger = get_run_logger()
    if unchanged:
        metrics = read_metrics(stage, Path(project_dir))
        logger.info("stage %s unchanged (dvc status): skipped", stage)
        return {"metrics": metrics, "skipped": True}
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    logger.info("running %s in %s", " ".join(cmd[2:]), project_dir)
    code, tail = stream(
        cmd, project_dir, stage_env(env), lambda line: logger.info("[%s] %s", stage, line)
    )
    if code != 0:
        lines = "\n".join(tail[-60:])
        raise RuntimeError(f"stage {stage} failed (exit {code}):\n{lines}")
    skipped = any("didn't change, skipping" in line for line in tail)
    metrics = read_metrics(stage, Path(project_dir))
    logger.info(
        "stage %s %s: %s",
        stage,
        "skipped (cached)" if skipped else "ran",
        {k: v for k, v in metrics.items() if not isinstance(v, dict | list)},
    )
    return {"metrics": metrics, "skipped": skipped}


@task(name="log-stage-metrics")
def log_stage_metrics(stage: str, result: dict) -> None:
    mlflow.log_metrics(flatten_metrics(result["metrics"], stage))
    mlflow.set_tag(f"stage.{stage}.skipped", str(result["skipped"]).lower())
