"""Retention picks exactly the versions that will never serve: refused by the gate, older than
the window, never champion (a rollback may need one), holding no alias, not dropped already."""

from __future__ import annotations

import time

import pytest
from mlflow.exceptions import MlflowException

from gifqa_model.registry.retention import (
    RETENTION_TAG,
    drop_weights,
    expired_versions,
    logged_model_id,
)
from gifqa_model.registry.versions import DIGEST_TAG, GATE_TAG, create_version, promote, rollback
from tests.helpers import logged_echo_model

NAME = "gifqa-test"
DAY = 86400


def _versions(client, decisions: list[str]) -> None:
    for i, decision in enumerate(decisions):
        run_id, uri = logged_echo_model()
        v = create_version(client, NAME, uri, run_id, {DIGEST_TAG: f"d{i}"}, "card")
        client.set_model_version_tag(NAME, str(v), GATE_TAG, decision)


def test_only_refused_old_never_champion_unaliased_versions_expire(client) -> None:
    # v1 champion; v2 rejected; v3 rejected after a spell as champion; v4 held; v5 rejected but
    # the newest, so challenger
    _versions(client, ["promoted", "rejected", "rejected", "held", "rejected"])
    promote(client, NAME, 1, "first")
    promote(client, NAME, 3, "by hand")
    rollback(client, NAME, "worse")
    later = time.time() + 2 * DAY
    assert [int(v.version) for v in expired_versions(client, NAME, 1, now=later)] == [2, 4]
    assert expired_versions(client, NAME, 3, now=later) == []  # inside the window
    assert expired_versions(client, NAME, 1) == []  # registered just now

    dropped = drop_weights(client, NAME, expired_versions(client, NAME, 1, now=later))
    assert len(dropped) == 2
    for model_id in dropped:  # marked deleted (mlflow gc removes the files): no longer found
        with pytest.raises(MlflowException, match="not found"):
            client.get_logged_model(model_id)
    for v in (2, 4):
        tags = client.get_model_version(NAME, str(v)).tags
        assert RETENTION_TAG in tags and tags[GATE_TAG] in ("rejected", "held")  # record kept
    assert expired_versions(client, NAME, 1, now=later) == []  # not twice
    for v in (1, 3, 5):
        model_id = logged_model_id(client.get_model_version(NAME, str(v)))
        assert client.get_logged_model(model_id).model_id == model_id
