"""Retention: the weights of versions that will never serve are dropped after a while.

A version the gate refused (`rejected`, or `held` for drift) more than `days` ago, that was
never champion and holds no alias now, keeps its registry entry, its tags (the decision and
why), its run and metrics; only its logged model is marked deleted, so that `mlflow gc`
removes its files. A version that was ever champion is never touched: a rollback may need it.
"""

from __future__ import annotations

import time

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from gifqa_model.registry.versions import CHAMPION, GATE_TAG, history, utc_stamp

RETENTION_TAG = "retention.weights_deleted"  # on a version: when its weights were dropped
NEVER_SERVES = ("rejected", "held")


def expired_versions(
    client: MlflowClient, name: str, days: float, now: float | None = None
) -> list[ModelVersion]:
    """Versions whose weights may go: refused by the gate, registered more than `days` ago,
    never champion, no alias now, not dropped already; oldest first."""
    cutoff_ms = ((time.time() if now is None else now) - days * 86400) * 1000
    ever_champion = {h["version"] for h in history(client, name) if h["alias"] == CHAMPION}
    aliased = {int(v) for v in client.get_registered_model(name).aliases.values()}
    keep = ever_champion | aliased
    out = [
        v
        for v in client.search_model_versions(f"name='{name}'")
        if v.tags.get(GATE_TAG) in NEVER_SERVES
        and v.creation_timestamp < cutoff_ms
        and int(v.version) not in keep
        and RETENTION_TAG not in v.tags
    ]
    return sorted(out, key=lambda v: int(v.version))


def logged_model_id(version: ModelVersion) -> str:
    """The logged model a version was registered from (its source `models:/m-...`)."""
    return version.model_id or version.source.removeprefix("models:/")


def drop_weights(client: MlflowClient, name: str, versions: list[ModelVersion]) -> list[str]:
    """Mark each version's logged model deleted and tag the version; returns the logged model
    ids (what `mlflow gc --logged-model-ids` then removes for good)."""
    dropped = []
    stamp = utc_stamp()
    for v in versions:
        model_id = logged_model_id(v)
        client.delete_logged_model(model_id)
        client.set_model_version_tag(name, v.version, RETENTION_TAG, stamp)
        dropped.append(model_id)
    return dropped
