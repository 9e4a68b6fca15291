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


def test_the_window_edge_and_other_models_versions(client) -> None:
    """A version exactly `days` old stays; one a moment older goes. Another registered model's
    versions are never this model's to expire."""
    import math

    _versions(client, ["rejected", "rejected"])  # v2, the newest, is challenger: kept
    run_id, uri = logged_echo_model()
    create_version(client, "other-model", uri, run_id, {DIGEST_TAG: "z"}, "card")
    client.set_model_version_tag("other-model", "1", GATE_TAG, "rejected")
    created = client.get_model_version(NAME, "1").creation_timestamp
    # the float `now` whose cutoff, computed as the code does, is exactly the creation time
    now = created / 1000 + 10 * DAY
    while (now - 10 * DAY) * 1000 < created:
        now = math.nextafter(now, math.inf)
    while (now - 10 * DAY) * 1000 > created:
        now = math.nextafter(now, -math.inf)
    assert (now - 10 * DAY) * 1000 == created
    assert expired_versions(client, NAME, 10, now=now) == []  # exactly the window: kept
    assert [int(v.version) for v in expired_versions(client, NAME, 10, now=now + 5)] == [1]


def test_dropped_weights_are_stamped_with_the_utc_time(client, monkeypatch) -> None:
    from gifqa_model.registry.versions import stamp_seconds

    _versions(client, ["rejected", "rejected"])
    before = time.time()
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # a machine whose local time is not UTC
    time.tzset()
    try:
        drop_weights(client, NAME, expired_versions(client, NAME, 1, now=time.time() + 2 * DAY))
    finally:
        monkeypatch.undo()
        time.tzset()
    stamp = client.get_model_version(NAME, "1").tags[RETENTION_TAG]
    when = stamp_seconds(stamp)
    assert before - 1 <= when <= time.time() + 1, stamp
