"""Back-pressure: a burst of 24 concurrent 4 MB uploads to a real `gifqa serve` on 127.0.0.1.
Past `max_inflight` requests are refused with 429 + Retry-After before their bodies are read;
memory stays bounded and `/healthz` keeps answering throughout."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from gifqa_model.serve.settings import ServeSettings
from tests.gifqa_model.serve.conftest import QUESTION, serving

BURST, UPLOAD_MB, MAX_INFLIGHT = 24, 4.0, 4


@pytest.fixture(scope="module")
def server(pair, tmp_path_factory):
    with serving(pair, tmp_path_factory.mktemp("burst"), GIFQA_MAX_INFLIGHT=str(MAX_INFLIGHT)) as (
        url,
        proc,
    ):
        yield url, psutil.Process(proc.pid)


def test_a_burst_of_big_uploads_is_refused_early_and_memory_stays_bounded(server, gif) -> None:
    url, proc = server
    body = gif + b"\0" * (int(UPLOAD_MB * 1e6) - len(gif))  # trailing bytes: a big upload
    # big but admissible: the refusals under test are the admission limit's, not the size cap's
    assert len(body) <= ServeSettings().max_upload_bytes
    httpx.post(
        f"{url}/v1/answer",
        files={"file": ("a.gif", gif, "image/gif")},
        data={"question": QUESTION},
        timeout=60,
    ).raise_for_status()  # warm
    baseline = proc.memory_info().rss
    peak, health, done = [baseline], [], threading.Event()

    def watch() -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                peak.append(proc.memory_info().rss)
                health.append(client.get(f"{url}/healthz").status_code)
                done.wait(0.05)

    def upload(_i: int) -> tuple[int, str | None]:
        r = httpx.post(
            f"{url}/v1/answer",
            files={"file": ("big.gif", body, "image/gif")},
            data={"question": QUESTION},
            timeout=120,
        )
        return r.status_code, r.headers.get("retry-after")

    # the watcher runs as a future: an error or a /healthz timeout in it fails the test
    with ThreadPoolExecutor(1) as side:
        watcher = side.submit(watch)
        try:
            with ThreadPoolExecutor(BURST) as pool:
                results = list(pool.map(upload, range(BURST)))
        finally:
            done.set()
        watcher.result()
    statuses = [s for s, _ in results]
    growth_mb = (max(peak) - baseline) / 1e6
    print(
        f"burst of {BURST} × {UPLOAD_MB} MB: statuses "
        f"{ {s: statuses.count(s) for s in set(statuses)} }, RSS +{growth_mb:.0f} MB, "
        f"{len(health)} health checks"
    )
    assert set(statuses) <= {200, 422, 429}, statuses
    assert statuses.count(429) > 0 and statuses.count(429) < BURST
    assert all(ra == "1" for s, ra in results if s == 429)
    assert health and set(health) == {200}, "the server stopped answering /healthz"
    # each admitted upload is held at most a few times over (spool, read, copy)
    assert growth_mb < MAX_INFLIGHT * UPLOAD_MB * 6, f"RSS grew {growth_mb:.0f} MB"
