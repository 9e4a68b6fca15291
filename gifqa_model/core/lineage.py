"""Where a run came from, as its MLflow tags record it: what started it and which data it saw.

The retrain flow writes these tags; the dashboard and compare read them. One home for both sides.
"""

from __future__ import annotations

DATA_TAG = "dvc.ingest."  # prefix of the ingest output's hash: the corpus version a run saw
TRIGGER_TAG = "prefect.trigger"  # what started the flow run that made the run


def trigger_of(tags: list[str], deployment_id: str | None) -> str:
    """What started a flow run, from its Prefect tags: the drop folder's watcher
    (`trigger:<name>`), a schedule, a deployment run by hand, or `gifqa run` in a terminal."""
    named = next((t.split(":", 1)[1] for t in tags if t.startswith("trigger:")), None)
    if named:
        return named
    if "auto-scheduled" in tags:
        return "schedule"
    return "deployment" if deployment_id else "manual"
