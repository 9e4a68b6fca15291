"""Notices downstream (core/notices.py): signed as MLflow signs its registry webhooks, so one
check serves both; checked against MLflow's own signer, and delivered to every URL given."""

from __future__ import annotations

import json

import pytest

from gifqa_model.core.notices import (
    MAX_AGE_S,
    NoticeError,
    post_notice,
    signed_headers,
    verify,
    webhook_urls,
)
from tests.helpers import Receiver, reserved_ports

BODY = json.dumps({"event": "alias_moved", "model": "gifqa", "alias": "champion"}).encode()


def test_mlflow_signed_deliveries_verify_with_the_same_secret() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    headers = {
        "X-MLflow-Delivery-Id": "d-1",
        "X-MLflow-Timestamp": "1700000000",
        "X-MLflow-Signature": _generate_hmac_signature("s", "d-1", "1700000000", BODY.decode()),
    }
    assert verify(headers, BODY, "s", now=1700000000) == "mlflow"
    with pytest.raises(NoticeError, match="does not match"):
        verify(headers, BODY, "other", now=1700000000)


def test_gifqa_signatures_match_mlflows_scheme() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    h = signed_headers(BODY, "s", now=1700000000)
    reference = _generate_hmac_signature("s", h["X-Gifqa-Delivery-Id"], "1700000000", BODY.decode())
    assert h["X-Gifqa-Signature"] == reference
    assert "X-Gifqa-Signature" not in signed_headers(BODY, None)  # no secret: unsigned


def test_a_notice_is_refused_unsigned_tampered_or_out_of_date() -> None:
    h = signed_headers(BODY, "s", now=1_000_000)
    assert verify(h, BODY, "s", now=1_000_000 + MAX_AGE_S) == "gifqa"  # the edge: still fresh
    assert verify(h, BODY, "s", now=1_000_000 - MAX_AGE_S) == "gifqa"
    with pytest.raises(NoticeError, match="away"):
        verify(h, BODY, "s", now=1_000_000 + MAX_AGE_S + 1)
    with pytest.raises(NoticeError, match="does not match"):
        verify(h, BODY.replace(b"champion", b"challenger"), "s", now=1_000_000)
    with pytest.raises(NoticeError, match="not signed"):
        verify({"Content-Type": "application/json"}, BODY, "s")
    with pytest.raises(NoticeError, match="delivery id and timestamp"):
        verify({"x-gifqa-signature": h["X-Gifqa-Signature"]}, BODY, "s")
    lower = {k.lower(): v for k, v in h.items()}  # HTTP header names are case-insensitive
    assert verify(lower, BODY, "s", now=1_000_000) == "gifqa"


def test_each_url_gets_the_notice_and_a_dead_one_costs_only_itself(caplog) -> None:
    a, b = Receiver(), Receiver()
    with reserved_ports() as (dead,):
        urls = webhook_urls(f"{a.url}, file:///etc/passwd,,http://127.0.0.1:{dead}/ ,{b.url}/x")
        assert urls == [a.url, f"http://127.0.0.1:{dead}/", f"{b.url}/x"]
        assert post_notice({"event": "test", "n": 1}, urls, secret="s", timeout=2) == 2
    a.close(), b.close()
    assert a.received == b.received == [{"event": "test", "n": 1}]
    assert verify(a.headers[0], json.dumps({"event": "test", "n": 1}).encode(), "s") == "gifqa"
    assert "not an http(s) URL" in caplog.text and "not delivered" in caplog.text


def test_no_url_sends_nothing(monkeypatch) -> None:
    monkeypatch.delenv("GIFQA_ALERT_WEBHOOK", raising=False)
    assert webhook_urls() == [] and post_notice({"event": "test"}) == 0
