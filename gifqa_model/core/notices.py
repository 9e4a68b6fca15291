"""JSON notices to the people and services downstream: one home for sending and checking them.

`GIFQA_ALERT_WEBHOOK` holds one http(s) URL or several, comma-separated; each receives a JSON
POST per notice (a failed flow run, a drift check that calls for action, an alias that moved).
With `GIFQA_WEBHOOK_SECRET` set, each notice is signed the way MLflow signs its registry
webhooks (HMAC-SHA256 over `<delivery id>.<timestamp>.<body>`, sent as `v1,<base64>`), so one
check (`verify`) serves both kinds. Sending never raises: a notice that cannot be delivered is
logged and the caller's own outcome stands.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
import urllib.request
import uuid
from collections.abc import Mapping

log = logging.getLogger(__name__)
WEBHOOK_ENV = "GIFQA_ALERT_WEBHOOK"
SECRET_ENV = "GIFQA_WEBHOOK_SECRET"
# our headers and MLflow's (mlflow/webhooks/constants.py): same scheme, own names
HEADERS = {
    "gifqa": ("X-Gifqa-Delivery-Id", "X-Gifqa-Timestamp", "X-Gifqa-Signature"),
    "mlflow": ("X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature"),
}
MAX_AGE_S = 300  # a signed notice older than this is refused (a replay)


class NoticeError(ValueError):
    """A notice that is not signed by the shared secret, or too old."""


def webhook_urls(value: str | None = None) -> list[str]:
    """The http(s) URLs in `value` (default: the environment); others are logged and skipped."""
    value = os.environ.get(WEBHOOK_ENV, "") if value is None else value
    urls = []
    for url in (u.strip() for u in value.split(",")):
        if not url:
            continue
        if url.startswith(("http://", "https://")):
            urls.append(url)
        else:
            log.warning("%s: %r is not an http(s) URL; no notice sent there", WEBHOOK_ENV, url)
    return urls


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(body: bytes, secret: str | None, now: float | None = None) -> dict[str, str]:
    """The headers of one delivery: an id and a timestamp always, a signature with a secret."""
    delivery, stamp, sig = HEADERS["gifqa"]
    headers = {
        "Content-Type": "application/json",
        delivery: str(uuid.uuid4()),
        stamp: str(int(time.time() if now is None else now)),
    }
    if secret:
        headers[sig] = signature(secret, headers[delivery], headers[stamp], body)
    return headers


def post_notice(
    payload: dict, urls: list[str] | None = None, timeout: float = 5.0, secret: str | None = None
) -> int:
    """POST `payload` to every webhook URL; returns how many took it (2xx)."""
    urls = webhook_urls() if urls is None else urls
    secret = secret if secret is not None else os.environ.get(SECRET_ENV) or None
    body = json.dumps(payload, sort_keys=True).encode()
    delivered = 0
    for url in urls:
        req = urllib.request.Request(
            url, data=body, method="POST", headers=signed_headers(body, secret)
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s)
                delivered += 200 <= resp.status < 300
        except OSError as err:
            log.warning("notice to %s not delivered: %s", url, err)
    return delivered


def verify(headers: Mapping[str, str], body: bytes, secret: str, now: float | None = None) -> str:
    """Which sender signed `body` ("gifqa" or "mlflow"); raises NoticeError when neither did
    with `secret`, or when the timestamp is more than MAX_AGE_S away from now."""
    lower = {k.lower(): v for k, v in headers.items()}
    for sender, names in HEADERS.items():
        delivery, stamp, sig = (lower.get(n.lower()) for n in names)
        if sig is None:
            continue
        if delivery is None or stamp is None or not stamp.isdigit():
            raise NoticeError(f"a {sender} signature without its delivery id and timestamp")
        if abs((time.time() if now is None else now) - int(stamp)) > MAX_AGE_S:
            raise NoticeError(f"the notice's timestamp is more than {MAX_AGE_S} s away")
        if not hmac.compare_digest(sig.encode(), signature(secret, delivery, stamp, body).encode()):
            raise NoticeError("the signature does not match the shared secret")
        return sender
    raise NoticeError("the notice is not signed")
