"""The maintenance flow (`gifqa-maintenance/maintenance`, daily on `deploy.maintenance_cron`):
what would otherwise grow for ever is bounded by `deploy.retention_days`.

- the weights of versions the gate refused that long ago, never champion, are dropped
  (registry/retention.py) and `mlflow gc` removes their files; the versions, their decisions
  and their runs stay;
- Prefect's flow runs that ended that long ago are deleted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from gifqa_model.core.config import MODEL_NAME, load_params
from gifqa_model.registry.retention import drop_weights, expired_versions

BACKEND_ENV = "GIFQA_MLFLOW_BACKEND_URI"  # the tracking server's database, for `mlflow gc`
ARTIFACTS_ENV = "GIFQA_MLFLOW_ARTIFACTS"  # where a tracking server that proxies keeps them
ENDED = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]


def backend_store_uri() -> str | None:
    """The database `mlflow gc` must open: the tracking URI when it is one, else the stack's."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("sqlite:", "postgresql", "mysql")):
        return uri
    return os.environ.get(BACKEND_ENV) or None


def collect_mlflow_garbage(logged_model_ids: list[str]) -> bool:
    """`mlflow gc` of the given (deleted) logged models: their files go; False when the
    database is out of reach (the models stay marked deleted; a later run collects them)."""
    backend = backend_store_uri()
    if not logged_model_ids or backend is None:
        return False
    cmd = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", backend]
    if os.environ.get(ARTIFACTS_ENV):
        cmd += ["--artifacts-destination", os.environ[ARTIFACTS_ENV]]
    cmd += ["--logged-model-ids", ",".join(logged_model_ids)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"mlflow gc failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return True


def delete_ended_flow_runs(days: float, keep: str | None = None) -> int:
    """Delete the flow runs that ended more than `days` ago (never `keep`, this run)."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    deleted = 0
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    end_time=FlowRunFilterEndTime(before_=cutoff),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ENDED)),
                    id=FlowRunFilterId(not_any_=[keep]) if keep else None,
                ),
                limit=200,
            )
            if not runs:
                return deleted
            for run in runs:
                client.delete_flow_run(run.id)
                deleted += 1


@flow(name="gifqa-maintenance", log_prints=True)
def maintenance(
    project_dir: str = ".", days: float | None = None, model_name: str = MODEL_NAME
) -> dict:
    """Drop the refused versions' weights and the ended flow runs older than the window."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    params = load_params(Path(project_dir) / "params.yaml").deploy
    days = params.retention_days if days is None else days
    t0 = time.monotonic()
    client = MlflowClient()
    expired = expired_versions(client, model_name, days)
    dropped = drop_weights(client, model_name, expired)
    collected = collect_mlflow_garbage(dropped)
    runs = delete_ended_flow_runs(days, keep=flow_run.get_id())
    summary = {
        "versions": [int(v.version) for v in expired],
        "files_collected": collected,
        "flow_runs_deleted": runs,
        "seconds": round(time.monotonic() - t0, 1),
    }
    logger.info(
        "retention %s days: weights of v%s dropped%s; %d flow runs deleted",
        days,
        ", v".join(map(str, summary["versions"])) or " none",
        "" if collected or not dropped else " (files stay until mlflow gc reaches the database)",
        runs,
    )
    return summary
