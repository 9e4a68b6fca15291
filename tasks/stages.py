"""Prefect tasks: run one DVC stage, read its metrics, copy them into MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
from prefect import get_run_logger, task

from gifqa_model.core.artifacts import read_metrics
from gifqa_model.core.config import flatten


def stage_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a stage subprocess runs in: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def flatten_metrics(metrics: dict, prefix: str) -> dict[str, float]:
    """Nested stage metrics → flat numeric MLflow metrics (`stage/key/sub`): MLflow's UI
    groups charts by what comes before the first "/", so each stage is one section."""
    flat = flatten(metrics, prefix, sep="/")
    return {
        k.replace(" ", "_"): float(v) for k, v in flat.items() if isinstance(v, bool | int | float)
    }


@task(name="dvc-stage", retries=1, retry_delay_seconds=5, log_prints=True)
def run_dvc_stage(stage: str, project_dir: str, env: dict[str, str] | None = None) -> dict:
    """`dvc repro --single-item <stage>`; a stage whose deps did not change is skipped by DVC."""
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    logger.info("running %s in %s", " ".join(cmd[2:]), project_dir)
    proc = subprocess.run(cmd, cwd=project_dir, env=stage_env(env), text=True, capture_output=True)
    for line in (proc.stdout or "").splitlines()[-40:]:
        logger.info("[%s] %s", stage, line)
    if proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-60:])
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}):\n{tail}")
    skipped = "didn't change, skipping" in (proc.stdout or "")
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
