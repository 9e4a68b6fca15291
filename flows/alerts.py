"""Where a failed run is seen: a tag on its MLflow run and a webhook an operator watches.

`GIFQA_ALERT_WEBHOOK` (gifqa_model/core/notices.py) receives a JSON POST per failed flow run: the
flow, the run, its state message and the MLflow run it tagged; and one per drift check that
warns or does more (`"event": "drift"`). A hook never raises: a notice that cannot be delivered
is logged, and the run's own failure stands.
"""

from __future__ import annotations

import logging

from gifqa_model.core.notices import post_notice

log = logging.getLogger(__name__)


def tag_failed_run(flow_run_id: str, message: str) -> str | None:
    """Mark the MLflow run this flow run started (found by its tag) as failed, with why."""
    try:
        from mlflow import MlflowClient

        client = MlflowClient()
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            f"tags.`prefect.flow_run_id` = '{flow_run_id}'",
            max_results=1,
        )
        if not runs:
            return None
        run = runs[0]
        client.set_tag(run.info.run_id, "failure.reason", message[:5000])
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FAILED")
        return run.info.run_id
    except Exception as err:  # the tracking server may be what failed
        log.warning("could not tag the MLflow run of flow run %s: %s", flow_run_id, err)
        return None


def notify_drift(flow: str, result) -> int:
    """A JSON POST of a drift check that calls for action (monitor/drift.py's DriftResult)."""
    return post_notice(
        {
            "event": "drift",
            "flow": flow,
            "action": result.action,
            "share": result.share,
            "features": result.drifted,
            "reason": result.reason[:5000],
        }
    )


def notify_failure(flow, flow_run, state) -> None:
    """Prefect `on_failure` / `on_crashed` hook of the retrain flow."""
    message = str(getattr(state, "message", "") or state)
    run_id = tag_failed_run(str(flow_run.id), message)
    post_notice(
        {
            "flow": flow.name,
            "flow_run": flow_run.name,
            "flow_run_id": str(flow_run.id),
            "state": getattr(state, "name", str(state)),
            "message": message[:5000],
            "mlflow_run_id": run_id,
        }
    )


def close_abandoned_runs(experiment_id: str, current_flow_run: str) -> list[str]:
    """MLflow runs left RUNNING by a flow run that has ended (its process was killed, or the
    tracking server was down when it failed) are marked FAILED, with why; returns their ids."""
    from uuid import UUID

    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    client = MlflowClient()
    closed = []
    runs = client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
    with get_client(sync_client=True) as prefect:
        for run in runs:
            owner = run.data.tags.get("prefect.flow_run_id")
            if not owner or owner == current_flow_run:
                continue
            try:
                state = prefect.read_flow_run(UUID(owner)).state
            except (ObjectNotFound, ValueError):
                state = None
            if state is None or state.is_final():
                reason = f"abandoned: flow run {owner} ended ({state.name if state else 'gone'})"
                client.set_tag(run.info.run_id, "failure.reason", reason)
                client.set_terminated(run.info.run_id, "FAILED")
                closed.append(run.info.run_id)
    return closed
