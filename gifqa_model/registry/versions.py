"""MLflow model registry: every trained model is a version of `gifqa`; aliases mark roles.

`challenger` is always the newest version. `champion` is the one served: the first version
takes it, and later versions take it from the champion only when they pass the promotion
gate (test accuracy at least the champion's plus `min_improvement`).
"""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from gifqa_model.config import RegistryParams

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


def alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def register(client: MlflowClient, model_uri: str, run_id: str, accuracy: float,
             params: RegistryParams) -> dict:
    """Register a version, tag it with its accuracy, set challenger, promote if it wins."""
    try:
        client.create_registered_model(params.model_name)
    except MlflowException:
        pass  # exists already
    mv = client.create_model_version(params.model_name, model_uri, run_id=run_id,
                                     tags={"accuracy": f"{accuracy:.6f}"})
    client.set_registered_model_alias(params.model_name, CHALLENGER, mv.version)
    decision = promote_if_better(client, mv.version, accuracy, params)
    return {"version": int(mv.version), **decision}


def promote_if_better(client: MlflowClient, version: int | str, accuracy: float,
                      params: RegistryParams) -> dict:
    champion = alias_version(client, params.model_name, CHAMPION)
    if champion is None:
        reason = "no champion yet"
        promoted = True
    else:
        tags = client.get_model_version(params.model_name, champion).tags
        champ_acc = float(tags.get("accuracy", "-1"))
        promoted = accuracy >= champ_acc + params.min_improvement
        reason = (f"challenger {accuracy:.4f} vs champion v{champion} {champ_acc:.4f} "
                  f"(min improvement {params.min_improvement})")
    if promoted:
        client.set_registered_model_alias(params.model_name, CHAMPION, version)
    log.info("promotion of v%s: %s (%s)", version, promoted, reason)
    champion_now = alias_version(client, params.model_name, CHAMPION)
    return {"promoted": promoted, "reason": reason, "champion_version": champion_now}
