"""The FastAPI app against a real tiny (untrained) model pair, plus fakes for the batching and
hot-swap tests.

Answers from the untrained model are gibberish; the tests check the API around it: keyframes,
refusals with the right status and reason, the lifespan, batching, the swap and the limits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gifqa_model.data.gifs import GifError, GifLimits, _walk, decode_frames, encode_gif
from gifqa_model.data.shapesworld import ShapesParams, generate_example
from gifqa_model.index.clipcut import IndexParams
from gifqa_model.inference.pyfunc import log_pyfunc
from gifqa_model.serve.app import create_app
from gifqa_model.serve.loading import LoadedModel, load_model, resolve_model_version
from gifqa_model.serve.settings import ServeSettings
from tests.gifqa_model.serve.conftest import QUESTION
from tests.helpers import Background, described_frames, wait_until


@pytest.fixture(scope="module")
def served(pair):
    """One app for the module; the factory counts how often it is asked to load."""
    calls: list[ServeSettings] = []

    def factory(settings: ServeSettings, version: int | None) -> LoadedModel:
        calls.append(settings)
        return load_model(settings, version)

    settings = ServeSettings(model_dir=pair[0], clip_dir=pair[1], poll_seconds=0)
    with TestClient(create_app(settings, factory)) as client:
        assert len(calls) == 1  # loaded at startup, before any request
        yield SimpleNamespace(client=client, calls=calls)


def _post(client: TestClient, gif: bytes | None, question: str | None = QUESTION):
    files = {"file": ("x.gif", gif, "image/gif")} if gif is not None else None
    data = {"question": question} if question is not None else None
    return client.post("/v1/answer", files=files, data=data)


def test_good_gif_answers_with_time_ordered_keyframes(served, gif) -> None:
    r = _post(served.client, gif)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "answer",
        "confidence",
        "keyframes",
        "n_frames",
        "in_domain",
        "domain_distance",
        "model_version",
        "latency_ms",
    }
    assert body["in_domain"] is None  # this pair has no domain index
    assert isinstance(body["answer"], str) and 0 < body["confidence"] <= 1
    assert body["n_frames"] == 16 and body["model_version"] is None and body["latency_ms"] > 0
    keys = body["keyframes"]
    assert len(keys) == IndexParams().top_k * IndexParams().group_size
    assert keys == sorted(set(keys)) and 0 <= keys[0] and keys[-1] < 16


def test_lifespan_loads_once_and_probes_report_it(served, gif, pair) -> None:
    for _ in range(2):
        assert _post(served.client, gif).status_code == 200
    assert len(served.calls) == 1
    assert served.client.get("/healthz").json() == {"status": "alive", "model_version": None}
    assert served.client.get("/readyz").json() == {"status": "ready", "model_version": None}
    info = served.client.get("/v1/model").json()
    assert info["uri"] == f"local:{pair[0]}" and info["version"] is None
    assert info["last_error"] is None and info["vision_runtime"] == "onnx"  # the default, exported


def test_json_body_answers_like_multipart(served, gif) -> None:
    form = _post(served.client, gif).json()
    r = served.client.post(
        "/v1/answer", json={"gif": base64.b64encode(gif).decode(), "question": QUESTION}
    )
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("answer", "confidence", "keyframes")} == {
        k: form[k] for k in ("answer", "confidence", "keyframes")
    }
    bad = served.client.post("/v1/answer", json={"gif": "not base64!", "question": QUESTION})
    assert bad.status_code == 422 and bad.json()["reason"] == "bad_base64"
    assert (
        served.client.post(
            "/v1/answer", content=b"x", headers={"content-type": "text/plain"}
        ).json()["reason"]
        == "unsupported_media_type"
    )


def test_batch_route_answers_each_item_and_names_a_bad_one(served, gif, shared_data) -> None:
    real = min((shared_data / "real_gifs").glob("*.gif"), key=lambda p: p.stat().st_size)
    b64 = [base64.b64encode(g).decode() for g in (gif, real.read_bytes())]
    items = [
        {"gif": b64[0], "question": QUESTION},
        {"gif": b64[1], "question": QUESTION},
        {"gif": b64[0], "question": "how many squares are there ?"},
    ]
    r = served.client.post("/v1/answer:batch", json={"items": items})
    assert r.status_code == 200, r.text
    answers = r.json()["answers"]
    single = [served.client.post("/v1/answer", json=i).json() for i in items]
    assert [a["answer"] for a in answers] == [s["answer"] for s in single]
    assert [a["keyframes"] for a in answers] == [s["keyframes"] for s in single]
    bad = served.client.post(
        "/v1/answer:batch",
        json={
            "items": [items[0], {"gif": base64.b64encode(_png(gif)).decode(), "question": QUESTION}]
        },
    )
    assert bad.status_code == 422 and bad.json()["reason"] == "not_a_gif"
    assert bad.json()["detail"].startswith("item 1:")
    many = served.client.post("/v1/answer:batch", json={"items": [items[0]] * 17})
    assert many.status_code == 422 and many.json()["reason"] == "too_many_items"


def test_describe_reads_frames_spread_over_the_whole_gif(served, gif) -> None:
    from gifqa_model.index.indexing import cached_frame_indices

    for body in (
        {"files": {"file": ("x.gif", gif, "image/gif")}},
        {"json": {"gif": base64.b64encode(gif).decode()}},
    ):
        r = served.client.post("/v1/describe", **body)
        assert r.status_code == 200, r.text
        out = r.json()
        # an untrained model's 48 words: a probability that rounds to 0
        assert isinstance(out["description"], str) and 0 <= out["confidence"] <= 1
        # the model reads the cached frames' first, last and evenly between (in the GIF's own
        # frame numbers: 8 cached of 16 are the segment centres 1, 3, ..., 15)
        assert out["keyframes"] == described_frames(out["n_frames"], IndexParams())
        cached = cached_frame_indices(out["n_frames"], IndexParams().frames_per_gif)
        assert out["keyframes"][0] == cached[0] and out["keyframes"][-1] == cached[-1]
        assert out["model_version"] is None and out["latency_ms"] > 0
    bad = served.client.post("/v1/describe", files={"file": ("x.gif", _png(gif), "image/gif")})
    assert bad.status_code == 422 and bad.json()["reason"] == "not_a_gif"


def test_real_gif(served, shared_data) -> None:
    smallest = min((shared_data / "real_gifs").glob("*.gif"), key=lambda p: p.stat().st_size)
    r = _post(served.client, smallest.read_bytes(), "what is the man doing ?")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_frames"] > 1
    assert body["keyframes"] == sorted(set(body["keyframes"]))
    assert body["keyframes"][-1] < body["n_frames"]


def _truncated(gif: bytes) -> bytes:
    return gif[: len(gif) // 2]


def _zero_frames(_: bytes) -> bytes:
    # header + a 4x4 logical screen without colour table, then straight to the trailer
    return b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0, 0, 0) + b"\x3b"


def _huge_canvas(_: bytes) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", 4000, 4000, 0, 0, 0) + b"\x3b"


def _frame_bomb(_: bytes) -> bytes:
    # 1001 one-pixel frames: 25 KB on the wire, one frame over the limit
    return encode_gif([np.zeros((1, 1), np.uint8)] * 1001, [(0, 0, 0)])


def _corrupt_lzw(gif: bytes) -> bytes:
    """Valid container, garbage compressed pixels: only a real decode can tell."""
    buf = bytearray(gif)
    start, _ = _walk(gif, GifLimits())[2][0].data
    pos = start + 1  # past the LZW minimum code size
    while size := buf[pos]:
        buf[pos + 1 : pos + 1 + size] = b"\xff" * size
        pos += size + 1
    return bytes(buf)


def _png(_: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.mark.parametrize(
    ("make", "question", "status", "reason", "words"),
    [
        (None, QUESTION, 422, "missing_file", "`file`"),
        (lambda g: b"", QUESTION, 422, "empty_file", "empty"),
        (_png, QUESTION, 422, "not_a_gif", "GIF89a"),
        (_truncated, QUESTION, 422, "truncated", "ends"),
        (_zero_frames, QUESTION, 422, "zero_frames", "no image"),
        (_frame_bomb, QUESTION, 422, "too_many_frames", "1000 frames"),
        (_huge_canvas, QUESTION, 422, "too_many_pixels", "4000x4000"),
        (_corrupt_lzw, QUESTION, 422, "decode_error", "broken data stream"),
        (lambda g: g, None, 422, "empty_question", "`question`"),
        (lambda g: g, "   ", 422, "empty_question", "empty"),
        (lambda g: g, "why " * 76, 422, "question_too_long", "limit is 300"),
    ],
    ids=[
        "missing-file",
        "empty-file",
        "not-gif",
        "truncated",
        "zero-frames",
        "frame-bomb",
        "huge-canvas",
        "corrupt-lzw",
        "missing-question",
        "blank-question",
        "long-question",
    ],
)
def test_bad_inputs_are_refused_with_a_reason(
    served, gif, make, question, status, reason, words
) -> None:
    r = _post(served.client, make(gif) if make else None, question)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["reason"] == reason and words in body["detail"]


class FakePredictor:
    """Answers "v<version>"; records each call's batch size and how many calls overlapped.
    With `gate` set, every call waits for it: the test decides when the model is done."""

    def __init__(self, version: int = 7, gate: threading.Event | None = None) -> None:
        self.limits = GifLimits()
        self.version = version
        self.gate = gate
        self.batches: list[int] = []
        self.active = 0
        self.max_active = 0
        self.started = threading.Event()
        self._lock = threading.Lock()

    def answer_batch(self, requests) -> list[list[dict]]:
        with self._lock:
            self.batches.append(len(requests))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never released the model"
        with self._lock:
            self.active -= 1
        return [
            [
                {
                    "answer": f"v{self.version}",
                    "confidence": 0.5,
                    "keyframes": [0, 5],
                    "n_frames": 16,
                }
                for _ in qs
            ]
            for _, qs in requests
        ]


def _fake_app(predictor: FakePredictor, **settings) -> object:
    return create_app(
        ServeSettings(**{"poll_seconds": 0, **settings}),
        lambda s, v: LoadedModel(predictor, "models:/fake@champion", 7),
        lambda s: 7,
    )


def test_oversized_upload_is_413_before_the_model(gif) -> None:
    fake = FakePredictor()
    with TestClient(_fake_app(fake, max_upload_bytes=2000)) as client:
        assert fake.batches == [1]  # the warm-up before the first request
        # the GIF part alone is over the limit (the body is within the multipart slack)
        r = _post(client, gif)
        assert r.status_code == 413 and r.json()["reason"] == "too_large_bytes"
        # a declared Content-Length over limit + slack is refused before the body is read
        limit = ServeSettings(max_upload_bytes=2000).max_body_bytes
        r = _post(client, b"GIF89a" + b"\0" * limit)
        assert r.status_code == 413 and "request body" in r.json()["detail"]
        small = _post(client, _zero_frames(gif))
        assert small.status_code == 422  # under the limit: reaches the GIF checks
    assert fake.batches == [1]


def test_chunked_body_is_cut_off_at_the_limit() -> None:
    """No Content-Length and an endless body: reading stops one chunk past the limit."""
    app = _fake_app(FakePredictor(), max_upload_bytes=100_000)
    chunk = b"\0" * 65536
    read = 0
    boundary = "b0undary"

    async def receive() -> dict:
        nonlocal read
        if read == 0:
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="x.gif"\r\nContent-Type: image/gif\r\n\r\n'
            ).encode()
            read += len(head)
            return {"type": "http.request", "body": head, "more_body": True}
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/answer",
        "raw_path": b"/v1/answer",
        "query_string": b"",
        "root_path": "",
        "server": ("test", 80),
        "client": ("test", 1),
        "app": app,
        "headers": [
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"transfer-encoding", b"chunked"),
        ],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"too_large_bytes" in sent[1]["body"]
    assert read <= ServeSettings(max_upload_bytes=100_000).max_body_bytes + len(chunk)


@pytest.fixture
def no_warm(monkeypatch) -> None:
    """Skip the warm-up call, so a gated fake's first call is the test's first request."""
    monkeypatch.setattr("gifqa_model.serve.loading.warm", lambda model: None)


def test_waiting_requests_are_answered_in_one_model_call(gif, no_warm) -> None:
    """While the model answers one request, the others queue; the next call takes them all."""
    gate = threading.Event()
    fake = FakePredictor(gate=gate)
    with TestClient(_fake_app(fake)) as client:
        with Background(lambda: _post(client, gif)) as first:
            assert fake.started.wait(10)  # the model is busy with the first request
            with Background(lambda: _post(client, gif), 3) as rest:
                wait_until(
                    lambda: "gifqa_queue_depth 3.0" in client.get("/metrics").text,
                    "three requests waiting for the model",
                    threads=rest,
                )
                # the event loop still answers while the model works in a pool thread
                assert client.get("/healthz").status_code == 200 and not gate.is_set()
                gate.set()
    results, more = first.results, rest.results
    assert [r.status_code for r in results + more] == [200] * 4
    assert results[0].json()["model_version"] == 7
    assert fake.batches == [1, 3] and fake.max_active == 1


def test_a_model_call_takes_at_most_batch_max_requests(gif, no_warm) -> None:
    """Five waiting with `batch_max=2`: the calls after the first take 2, 2 and 1."""
    gate = threading.Event()
    fake = FakePredictor(gate=gate)
    with TestClient(_fake_app(fake, batch_max=2)) as client:
        with Background(lambda: _post(client, gif)) as first:
            assert fake.started.wait(10)
            with Background(lambda: _post(client, gif), 5) as rest:
                wait_until(
                    lambda: "gifqa_queue_depth 5.0" in client.get("/metrics").text,
                    "five requests waiting for the model",
                    threads=rest,
                )
                gate.set()
    assert [r.status_code for r in first.results + rest.results] == [200] * 6
    assert fake.batches == [1, 2, 2, 1] and fake.max_active == 1


def test_every_model_call_runs_on_one_thread_and_a_load_on_its_own(gif) -> None:
    """torch's thread teams throttle each other while two threads that called it live (see
    core/threads.py): the warm-up, answers, descriptions and searches share one thread, and a
    load runs on a thread that has ended by the time the model serves."""
    threads: dict[str, set[threading.Thread]] = {}

    def on(kind: str) -> None:
        threads.setdefault(kind, set()).add(threading.current_thread())

    class Recording(FakePredictor):
        def answer_batch(self, requests) -> list[list[dict]]:
            on("answer")
            return super().answer_batch(requests)

        def describe(self, gif: bytes) -> dict:
            on("describe")
            return {"description": "a circle", "confidence": 0.5, "keyframes": [0], "n_frames": 2}

    class Engine:
        def search(self, queries: list[str], k: int) -> list[list[dict]]:
            on("search")
            return [[{"gif_id": "g", "path": "g.gif", "score": 0.5}] for _ in queries]

    def load(settings: ServeSettings, version: int | None) -> LoadedModel:
        on("load")
        return LoadedModel(Recording(), "models:/fake@champion", 7)

    app = create_app(ServeSettings(poll_seconds=0), load, lambda s: 7)
    with TestClient(app) as client:
        app.state.search = Engine()
        for _ in range(3):
            assert _post(client, gif).status_code == 200
            assert client.post("/v1/describe", files={"file": ("x.gif", gif)}).status_code == 200
            assert client.get("/v1/search", params={"q": "a circle"}).status_code == 200
    (model_thread,) = threads["answer"]  # the warm-up's call and every request's
    assert model_thread.name.startswith("gifqa-model")
    assert threads["describe"] == threads["search"] == {model_thread}
    (loader,) = threads["load"]
    assert loader is not model_thread and loader.name == "gifqa-load_0"
    loader.join(timeout=5)
    assert not loader.is_alive()  # ended with the load: its OpenMP team went with it


def test_a_full_queue_refuses_with_429_and_retry_after(gif, no_warm) -> None:
    gate = threading.Event()
    fake = FakePredictor(gate=gate)
    with TestClient(_fake_app(fake, queue_max=1)) as client:
        with Background(lambda: _post(client, gif)) as first:
            assert fake.started.wait(10)
            with Background(lambda: _post(client, gif)) as queued:
                wait_until(
                    lambda: "gifqa_queue_depth 1.0" in client.get("/metrics").text,
                    "one request queued",
                    threads=queued,
                )
                refused = _post(client, gif)
                gate.set()
    results, more = first.results, queued.results
    assert refused.status_code == 429 and refused.json()["reason"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    assert [r.status_code for r in results + more] == [200, 200]


@pytest.mark.parametrize("limit", [1, 3])
def test_admission_takes_exactly_max_inflight_uploads_and_refuses_the_next_unread(
    limit: int,
) -> None:
    """`limit` requests with a body in progress: the next is refused with 429 before a byte
    of its body is read; once one finishes, one more is admitted; a GET is never counted."""
    from gifqa_model.serve.middleware import AdmissionMiddleware, Metrics

    async def scenario() -> None:
        release = asyncio.Event()
        entered = 0

        async def slow_app(scope, receive, send) -> None:
            nonlocal entered
            entered += 1
            await receive()
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        mw = AdmissionMiddleware(slow_app, limit, Metrics())

        def call(method: str = "POST"):
            reads, sent = [], []

            async def receive() -> dict:
                reads.append(1)
                return {"type": "http.request", "body": b"x", "more_body": False}

            async def send(message: dict) -> None:
                sent.append(message)

            scope = {"type": "http", "method": method, "path": "/v1/answer", "headers": []}
            return asyncio.create_task(mw(scope, receive, send)), reads, sent

        held = [call() for _ in range(limit)]
        await asyncio.sleep(0.01)
        assert entered == limit and mw.inflight == limit
        task, reads, sent = call()
        await task
        assert sent[0]["status"] == 429 and reads == [], "refused unread"
        assert dict(sent[0]["headers"])[b"retry-after"] == b"1"
        get_task, _, _ = call("GET")  # not an upload: passes through, uncounted
        await asyncio.sleep(0.01)
        assert entered == limit + 1 and mw.inflight == limit
        release.set()
        await asyncio.gather(*(t for t, _, _ in held), get_task)
        assert mw.inflight == 0
        task, _, sent = call()
        await task
        assert sent[0]["status"] == 200

    asyncio.run(scenario())


def test_without_lifespan_the_app_is_not_ready() -> None:
    calls: list = []
    app = create_app(ServeSettings(), lambda s, v: calls.append(s))
    client = TestClient(app)  # no `with`: startup never ran
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "not_ready" and not calls


def test_settings_from_env_and_pair_validation(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GIFQA_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("GIFQA_MODEL_URI", "models:/other@staging")
    monkeypatch.setenv("GIFQA_ADMIN_TOKEN", "s3cret")
    s = ServeSettings()
    assert s.max_upload_bytes == 1234 and s.gif_limits.max_bytes == 1234
    assert s.model_uri == "models:/other@staging" and s.source == "models:/other@staging"
    assert s.admin_token.get_secret_value() == "s3cret" and "s3cret" not in repr(s)
    with pytest.raises(ValidationError, match="together"):
        ServeSettings(model_dir=tmp_path)
    assert ServeSettings().vision_runtime == "onnx"
    monkeypatch.setenv("GIFQA_VISION_RUNTIME", "torch")
    assert ServeSettings().vision_runtime == "torch"
    monkeypatch.setenv("GIFQA_VISION_RUNTIME", "tensorrt")
    with pytest.raises(ValidationError, match="vision_runtime"):
        ServeSettings()


class Registry:
    """A fake alias: `champion` points at `current`; versions in `broken` fail to load."""

    def __init__(self) -> None:
        self.current = 1
        self.broken: set[int] = set()
        self.loads: list[int] = []

    def resolve(self, settings: ServeSettings) -> int:
        return self.current

    def load(self, settings: ServeSettings, version: int | None) -> LoadedModel:
        self.loads.append(version)
        if version in self.broken:
            raise OSError(f"version {version}: weights unreadable")
        return LoadedModel(
            FakePredictor(version),
            "models:/gifqa@champion",
            version,
            {"name": "gifqa", "alias": "champion"},
        )


def test_follows_the_alias_with_zero_errors_during_the_swap(gif, no_warm) -> None:
    reg = Registry()
    app = create_app(ServeSettings(poll_seconds=0.05), reg.load, reg.resolve)
    with TestClient(app) as client:
        seen: list[tuple[int, int | None, str]] = []
        stop = threading.Event()

        def steady() -> None:
            while not stop.is_set():
                r = _post(client, gif)
                body = r.json()
                seen.append((r.status_code, body.get("model_version"), body.get("answer")))

        with Background(steady, 3) as clients:
            wait_until(lambda: len(seen) >= 20, "20 answers from v1", threads=clients)
            reg.current = 2  # the registry moves champion; the server finds it by polling
            wait_until(
                lambda: client.get("/readyz").json()["model_version"] == 2,
                "the server to load v2",
                threads=clients,
            )
            n_at_swap = len(seen)
            wait_until(lambda: len(seen) >= n_at_swap + 20, "20 answers from v2", threads=clients)
            reg.current, reg.broken = 3, {3}  # a version that cannot load is never served
            wait_until(
                lambda: 'gifqa_model_reloads_total{result="failed"}' in client.get("/metrics").text,
                "a failed reload of v3 counted",
                threads=clients,
            )
            ready = client.get("/readyz")
            info = client.get("/v1/model").json()
            time.sleep(0.5)  # ten polls: the alias still names v3, which is not loaded again
            assert reg.loads == [1, 2, 3]
            reg.current, reg.broken = 4, set()  # the alias moves on: the next version loads
            wait_until(
                lambda: client.get("/readyz").json()["model_version"] == 4,
                "the server to load v4",
                threads=clients,
            )
            stop.set()
        metrics = client.get("/metrics").text
    assert {s for s, _, _ in seen} == {200}, "no request fails across the swaps"
    versions = [v for _, v, _ in seen]
    assert versions[0] == 1 and 2 in versions[: n_at_swap + 5] and 3 not in versions
    # a version is what answered: the answer comes from that version's model
    assert all(a == f"v{v}" for _, v, a in seen)
    assert ready.status_code == 200 and ready.json()["model_version"] == 2
    assert info["version"] == 2 and "weights unreadable" in info["last_error"]
    assert "gifqa_model_version 4.0" in metrics
    assert 'gifqa_model_reloads_total{result="swapped"} 3.0' in metrics
    assert 'gifqa_model_reloads_total{result="failed"} 1.0' in metrics
    assert reg.loads == [1, 2, 3, 4]


def test_a_first_load_that_fails_leaves_the_server_alive_not_ready(monkeypatch) -> None:
    reg = Registry()
    reg.broken = {1}
    with TestClient(create_app(ServeSettings(poll_seconds=0), reg.load, reg.resolve)) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and "weights unreadable" in r.json()["detail"]
        assert client.post("/v1/answer", json={"gif": "R0lG", "question": "q"}).status_code == 503


def test_admin_reload_needs_the_bearer_token(no_warm) -> None:
    reg = Registry()
    settings = ServeSettings(poll_seconds=0, admin_token="s3cret")
    with TestClient(create_app(settings, reg.load, reg.resolve)) as client:
        reg.current = 2
        assert client.post("/v1/admin/reload").status_code == 401
        wrong = client.post("/v1/admin/reload", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["reason"] == "unauthorized"
        assert client.get("/readyz").json()["model_version"] == 1  # no poll: still v1
        ok = client.post("/v1/admin/reload", headers={"authorization": "Bearer s3cret"})
        assert ok.json() == {"result": "swapped", "model_version": 2}
        again = client.post("/v1/admin/reload", headers={"authorization": "Bearer s3cret"})
        assert again.json() == {"result": "unchanged", "model_version": 2}
    with TestClient(create_app(ServeSettings(poll_seconds=0), reg.load, reg.resolve)) as client:
        assert client.post("/v1/admin/reload").status_code == 404


def _signed(notice: dict, secret: str, mlflow: bool = False) -> dict:
    from gifqa_model.core.notices import signed_headers

    body = json.dumps(notice).encode()
    headers = signed_headers(body, secret)
    if mlflow:  # the same scheme under MLflow's header names
        headers = {k.replace("X-Gifqa-", "X-MLflow-"): v for k, v in headers.items()}
    return {"content": body, "headers": headers}


def test_a_signed_alias_notice_reloads_at_once(no_warm) -> None:
    """No poll (poll_seconds=0): only a notice about the followed alias, signed with the
    shared secret, makes the server read the registry; the version comes from the registry."""
    reg = Registry()
    settings = ServeSettings(poll_seconds=0, webhook_secret="shared")
    ours = {"event": "alias_moved", "model": "gifqa", "alias": "champion", "version": 99}
    theirs = {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": "gifqa", "alias": "champion", "version": "3"},
    }
    with TestClient(create_app(settings, reg.load, reg.resolve)) as client:

        def version() -> int:
            return client.get("/readyz").json()["model_version"]

        reg.current = 2
        for refused, reason in [
            ({"content": json.dumps(ours)}, "not signed"),
            (_signed(ours, "wrong"), "does not match"),
        ]:
            r = client.post("/v1/notices", **refused)
            assert r.status_code == 401 and reason in r.json()["detail"]
        for other in [
            {**ours, "alias": "challenger"},
            {**ours, "model": "other"},
            {"event": "drift", "action": "hold"},
            {**theirs, "action": "deleted"},
        ]:
            assert (
                client.post("/v1/notices", **_signed(other, "shared")).json()["result"] == "ignored"
            )
        assert version() == 1 and reg.loads == [1]
        r = client.post("/v1/notices", **_signed(ours, "shared"))
        assert r.status_code == 202 and r.json() == {"result": "checking", "sender": "gifqa"}
        wait_until(lambda: version() == 2, "the notice to load v2 (the registry's, not 99)")
        reg.current = 3
        r = client.post("/v1/notices", **_signed(theirs, "shared", mlflow=True))
        assert r.json() == {"result": "checking", "sender": "mlflow"}
        wait_until(lambda: version() == 3, "MLflow's webhook to load v3")
        from gifqa_model.core.notices import signed_headers

        bad = client.post("/v1/notices", content=b"{no", headers=signed_headers(b"{no", "shared"))
        assert bad.status_code == 400 and bad.json()["reason"] == "bad_notice"
    assert reg.loads == [1, 2, 3]
    with TestClient(create_app(ServeSettings(poll_seconds=0), reg.load, reg.resolve)) as client:
        r = client.post("/v1/notices", **_signed(ours, "shared"))
        assert r.status_code == 404 and r.json()["reason"] == "notices_disabled"


def test_metrics_count_routes_rejects_and_question_kinds(gif) -> None:
    with TestClient(_fake_app(FakePredictor())) as client:
        assert _post(client, gif, "how many circles are there ?").status_code == 200
        assert _post(client, _png(gif)).status_code == 422
        text = client.get("/metrics").text
    assert 'gifqa_requests_total{route="/v1/answer",status="200"} 1.0' in text
    assert 'gifqa_requests_total{route="/v1/answer",status="422"} 1.0' in text
    assert 'gifqa_rejects_total{reason="not_a_gif"} 1.0' in text
    assert 'gifqa_questions_total{qtype="number"} 1.0' in text
    assert 'gifqa_request_seconds_count{route="/v1/answer"} 2.0' in text
    assert "gifqa_model_version 7.0" in text and "gifqa_ready 1.0" in text


class _FakeClient:
    def get_model_version_by_alias(self, name: str, alias: str):
        assert (name, alias) == ("gifqa", "champion")
        return SimpleNamespace(version="4")

    def search_model_versions(self, query: str):
        assert query == "name='gifqa'"
        return [SimpleNamespace(version=v) for v in ("2", "11", "3")]


@pytest.mark.parametrize(
    ("uri", "version"),
    [
        ("models:/gifqa@champion", 4),
        ("models:/gifqa/5", 5),
        ("models:/gifqa/latest", 11),
        ("runs:/abc/model", None),
        ("/some/local/dir", None),
    ],
)
def test_resolve_model_version(uri: str, version: int | None) -> None:
    assert resolve_model_version(uri, _FakeClient()) == version


@pytest.fixture(scope="module")
def registered(pair, gif, tmp_path_factory):
    """The pair logged with log_pyfunc (as code) and registered as gifqa-serve v1 @champion."""
    import mlflow

    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    example = tmp / "example.gif"
    example.write_bytes(gif)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("serve-test", artifact_location=(tmp / "art").as_uri())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp) as run:
            info = log_pyfunc(pair[0], pair[1], example, QUESTION)
        client.create_registered_model("gifqa-serve")
        mv = client.create_model_version(
            "gifqa-serve",
            info.model_uri,
            run_id=run.info.run_id,
            tags={"benchmark.accuracy": "0.5"},
            model_id=info.model_id,
        )
        client.set_registered_model_alias("gifqa-serve", "champion", mv.version)
    finally:
        mlflow.set_tracking_uri(previous)
    return SimpleNamespace(uri=uri, info=info, tmp=tmp)


@pytest.fixture
def tracking(registered, monkeypatch):
    """The registry's store as this test's tracking URI, the previous one back after."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.uri)
    mlflow.set_tracking_uri(registered.uri)
    yield registered
    mlflow.set_tracking_uri(previous)


def test_the_model_is_logged_as_code_with_typed_outputs(tracking, pair, gif) -> None:
    import json

    import mlflow
    import yaml

    from gifqa_model.core.digests import weights_digest
    from gifqa_model.inference.pyfunc import PIP_REQUIREMENTS

    path = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=tracking.info.model_uri, dst_path=str(tracking.tmp / "dl")
        )
    )
    meta = yaml.safe_load((path / "MLmodel").read_text())
    flavor = meta["flavors"]["python_function"]
    assert "model_code_path" in flavor and "python_model" not in flavor, "no pickled object"
    assert not list(path.rglob("*.pkl"))
    outputs = {c["name"]: c["type"] for c in json.loads(meta["signature"]["outputs"])}
    assert outputs == {
        "answer": "string",
        "confidence": "double",
        "keyframes": "array",
        "in_domain": "boolean",
        "model": "string",
    }
    assert "max_answer_tokens" in meta["signature"]["params"]
    # what loading needs: the weights as named artifacts, their digest, this package's code
    assert tracking.info.name == "model"
    assert {k: v["path"] for k, v in flavor["artifacts"].items()} == {
        "model_dir": f"artifacts/{pair[0].name}",
        "clip_dir": f"artifacts/{pair[1].name}",
    }
    assert flavor["config"] == {"model_digest": weights_digest(*pair)[:16]}
    assert (path / flavor["code"] / "gifqa_model" / "inference" / "pyfunc.py").is_file()
    assert (path / "requirements.txt").read_text().splitlines() == PIP_REQUIREMENTS
    example = json.loads((path / "input_example.json").read_text())
    assert example["columns"] == ["gif", "question"]
    assert [base64.b64decode(example["data"][0][0]), example["data"][0][1]] == [gif, QUESTION]


def test_serves_a_registered_mlflow_model(tracking, gif) -> None:
    """The production path: the pyfunc from a registry, the alias resolved to the version."""
    settings = ServeSettings(
        model_uri="models:/gifqa-serve@champion", max_frames=20, poll_seconds=0
    )
    with TestClient(create_app(settings)) as api:
        assert api.get("/readyz").json() == {"status": "ready", "model_version": 1}
        r = _post(api, gif)
        assert r.status_code == 200 and r.json()["model_version"] == 1
        # the server's GIF limits replace the pyfunc's defaults
        assert api.app.state.slot.model.predictor.limits.max_frames == 20
        bomb = _post(api, encode_gif([np.zeros((1, 1), np.uint8)] * 21, [(0, 0, 0)]))
        assert bomb.status_code == 422 and bomb.json()["reason"] == "too_many_frames"
        info = api.get("/v1/model").json()
        assert info["name"] == "gifqa-serve" and info["alias"] == "champion"
        assert info["scores"] == {"benchmark.accuracy": 0.5} and len(info["digest"]) == 16


def test_pyfunc_predicts_a_batch_and_reads_no_path(tracking, gif, monkeypatch) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    monkeypatch.delenv("GIFQA_GIF_ROOT", raising=False)
    model = mlflow.pyfunc.load_model("models:/gifqa-serve@champion")
    b64 = base64.b64encode(gif).decode()
    out = model.predict(
        pd.DataFrame(
            {"gif": [b64, b64, gif], "question": [QUESTION, "how many squares ?", QUESTION]}
        )
    )
    assert list(out.columns) == ["answer", "confidence", "keyframes", "in_domain", "model"]
    assert list(out.keyframes[0]) == list(out.keyframes[2]) and len(out.keyframes[0]) > 1
    assert out.answer[0] == out.answer[2] and (out.confidence > 0).all()
    for hostile in ("/etc/passwd", "/proc/self/environ", "../../etc/passwd"):
        with pytest.raises(MlflowException, match="base64") as err:
            model.predict(pd.DataFrame({"gif": [hostile], "question": [QUESTION]}))
        assert "root" not in str(err.value)
    with pytest.raises(MlflowException, match="over the limit of 64"):
        model.predict(pd.DataFrame({"gif": [b64] * 65, "question": [QUESTION] * 65}))
    with pytest.raises(MlflowException, match="300 characters"):
        model.predict(pd.DataFrame({"gif": [b64], "question": ["why " * 80]}))


def test_pyfunc_rows_about_one_gif_decode_and_embed_it_once(tracking, gif, monkeypatch) -> None:
    """Rows naming the same GIF (base64 or bytes) are one request to the predictor: one decode,
    one CLIP pass over its cached frames, even with the GIF cache off."""
    import mlflow

    import gifqa_model.inference.predict as predict

    model = mlflow.pyfunc.load_model("models:/gifqa-serve@champion")
    predictor = model.unwrap_python_model().predictor
    predictor.cache_gifs = 0
    decodes, passes = [], []
    decode, embed = predict.decode_frames, predictor.encoder.embed_frames
    monkeypatch.setattr(
        predict, "decode_frames", lambda *a, **k: decodes.append(1) or decode(*a, **k)
    )
    monkeypatch.setattr(
        predictor.encoder, "embed_frames", lambda f: passes.append(len(f)) or embed(f)
    )
    b64 = base64.b64encode(gif).decode()
    out = model.predict(pd.DataFrame({"gif": [b64, gif, b64], "question": [QUESTION] * 3}))
    assert len(out) == 3 and decodes == [1] and passes == [predictor.params.frames_per_gif]


def test_the_pyfunc_loads_on_a_thread_that_ends_and_predicts_on_its_own(
    tracking, gif, monkeypatch
) -> None:
    """A host loads on its main thread and predicts on a pool's (core/threads.py: two torch
    threads throttle each other): the weights load on a thread gone when the load returns, and
    every prediction runs on the pyfunc's one thread, whichever thread calls predict."""
    from concurrent.futures import ThreadPoolExecutor

    import mlflow

    import gifqa_model.inference.predict as predict

    loads, answers = [], set()
    init, answer = predict.GifQAPredictor.__init__, predict.GifQAPredictor.answer_batch

    def spy_init(self, *a, **k) -> None:
        loads.append(threading.current_thread())
        init(self, *a, **k)

    def spy_answer(self, *a, **k):
        answers.add(threading.current_thread())
        return answer(self, *a, **k)

    monkeypatch.setattr(predict.GifQAPredictor, "__init__", spy_init)
    monkeypatch.setattr(predict.GifQAPredictor, "answer_batch", spy_answer)
    model = mlflow.pyfunc.load_model("models:/gifqa-serve@champion")
    (loader,) = loads
    assert loader is not threading.current_thread() and not loader.is_alive()
    frame = pd.DataFrame({"gif": [base64.b64encode(gif).decode()], "question": [QUESTION]})
    first = model.predict(frame)
    with ThreadPoolExecutor(2) as pool:
        others = [pool.submit(model.predict, frame).result() for _ in range(3)]
    (thread,) = answers
    assert thread.name.startswith("gifqa-pyfunc") and thread is not threading.current_thread()
    assert all(o.answer[0] == first.answer[0] for o in others)


def _record_answer_batch(predictor) -> list[tuple]:
    """Each `answer_batch` call on `predictor` from now on: (requests, keyword arguments,
    answers); a call that raises is not recorded."""
    calls, answer_batch = [], predictor.answer_batch

    def record(requests, **kwargs):
        answers = answer_batch(requests, **kwargs)
        calls.append((requests, kwargs, answers))
        return answers

    predictor.answer_batch = record
    return calls


def test_pyfunc_rows_of_mixed_gifs_are_grouped_by_content_and_answered_in_their_order(
    tracking, gif
) -> None:
    """Rows [A, B, A]: the predictor gets A with its two questions and B with its one, in
    first-seen order, and each row gets its own GIF's answer back, with the weights' digest."""
    import mlflow

    model = mlflow.pyfunc.load_model("models:/gifqa-serve@champion")
    pyfunc = model.unwrap_python_model()
    other = generate_example(1, ShapesParams()).gif_bytes
    calls = _record_answer_batch(pyfunc.predictor)
    b64 = base64.b64encode(gif).decode()
    questions = [QUESTION, "how many squares are there ?", "what is the circle doing ?"]
    out = model.predict(pd.DataFrame({"gif": [b64, other, gif], "question": questions}))
    ((requests, kwargs, answers),) = calls
    assert requests == [(gif, [questions[0], questions[2]]), (other, [questions[1]])]
    assert kwargs == {"max_answer_tokens": 4}  # the signature's default
    for row, (g, i) in enumerate([(0, 0), (1, 0), (0, 1)]):
        expected = answers[g][i]
        assert out.answer[row] == expected["answer"]
        assert out.confidence[row] == expected["confidence"]
        assert list(out.keyframes[row]) == expected["keyframes"]
        assert out.in_domain[row] == expected["in_domain"]
    assert set(out.model) == {model.metadata.flavors["python_function"]["config"]["model_digest"]}


def test_pyfunc_refusals_name_their_rule_and_are_a_bad_request(tracking, gif) -> None:
    """Each limit just inside and just outside; a refusal is MLflow's INVALID_PARAMETER_VALUE
    (its scoring server answers 400) with the rule as its whole message."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tests.helpers import undecodable_gif

    model = mlflow.pyfunc.load_model("models:/gifqa-serve@champion")
    pyfunc = model.unwrap_python_model()
    calls = _record_answer_batch(pyfunc.predictor)
    b64 = base64.b64encode(gif).decode()

    def rows(n: int, value: str = b64) -> pd.DataFrame:
        return pd.DataFrame({"gif": [value] * n, "question": [QUESTION] * n})

    def refused(message: str, call) -> None:
        with pytest.raises(MlflowException) as err:
            call()
        assert err.value.message == message
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"

    assert len(model.predict(rows(64))) == 64
    empty = pyfunc.predict(None, rows(0))
    assert empty.empty and list(empty.columns) == list(
        model.metadata.get_output_schema().input_names()
    )
    refused("65 rows is over the limit of 64 per call", lambda: model.predict(rows(65)))
    for n in (1, 16):
        model.predict(rows(1), params={"max_answer_tokens": n})
    assert [kwargs for _, kwargs, _ in calls[1:]] == [
        {"max_answer_tokens": 1},
        {"max_answer_tokens": 16},
    ]
    for n in (0, 17):
        refused(
            "`max_answer_tokens` must be between 1 and 16",
            lambda n=n: model.predict(rows(1), params={"max_answer_tokens": n}),
        )
    # MLflow's schema check refuses a wrong table first; the pyfunc's own check stands behind it
    for bad in (pd.DataFrame({"gif": [b64]}), [b64, QUESTION]):
        refused(
            "input must be a table with columns `gif` and `question`",
            lambda bad=bad: pyfunc.predict(None, bad),
        )
    with pytest.raises(GifError) as gif_error:
        pyfunc.predictor.answer_batch([(undecodable_gif(), [QUESTION])])
    refused(  # the GIF error's message for people, without its machine tag
        f"not a usable GIF: {gif_error.value.message}",
        lambda: model.predict(rows(1, base64.b64encode(undecodable_gif()).decode())),
    )


def test_pyfunc_reads_paths_only_inside_the_root_its_host_names(
    tracking, gif, tmp_path, monkeypatch
) -> None:
    """GIFQA_GIF_ROOT set where the model is loaded: a path inside is read, one outside or
    missing is refused with the rule (never the path)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    root = tmp_path / "root"
    root.mkdir()
    (root / "a.gif").write_bytes(gif)
    (tmp_path / "secret.gif").write_bytes(gif)
    monkeypatch.setenv("GIFQA_GIF_ROOT", str(root))
    model = mlflow.pyfunc.load_model("models:/gifqa-serve@champion")
    out = model.predict(
        pd.DataFrame({"gif": ["a.gif", str(root / "a.gif")], "question": [QUESTION] * 2})
    )
    assert len(out) == 2 and out.answer[0] == out.answer[1]
    for value, message in (
        ("../secret.gif", "`gif` path is outside the configured GIF root"),
        ("missing.gif", "`gif` path is not a readable file under the GIF root"),
    ):
        with pytest.raises(MlflowException) as err:
            model.predict(pd.DataFrame({"gif": [value], "question": [QUESTION]}))
        assert err.value.message == message


def test_the_answer_and_describe_commands_use_the_registered_model(tracking, gif) -> None:
    """`gifqa answer` / `gifqa describe`: what the pyfunc answers, printed; no file, exit 2."""
    import mlflow
    from typer.testing import CliRunner

    from gifqa_model.cli import app

    uri = "models:/gifqa-serve@champion"
    path = tracking.tmp / "asked.gif"
    path.write_bytes(gif)
    model = mlflow.pyfunc.load_model(uri)
    expected = model.predict(
        pd.DataFrame({"gif": [base64.b64encode(gif).decode()], "question": [QUESTION]})
    )
    out = CliRunner().invoke(app, ["answer", str(path), QUESTION, "--model-uri", uri])
    assert out.exit_code == 0, out.output
    assert f"answer: {expected.answer[0]} " in out.output
    assert f"keyframes: {list(expected.keyframes[0])}" in out.output
    described = model.unwrap_python_model().predictor.describe(gif)
    out = CliRunner().invoke(app, ["describe", str(path), "--model-uri", uri])
    assert out.exit_code == 0, out.output
    words = " ".join(out.output.split())  # the terminal wraps a long description
    assert f"description: {described['description']} frames read:" in words
    missing = CliRunner().invoke(app, ["answer", str(path) + ".no", QUESTION, "--model-uri", uri])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_paths_only_inside_the_operator_root(tmp_path, gif) -> None:
    from gifqa_model.inference.pyfunc import InputError, gif_bytes

    root = tmp_path / "root"
    root.mkdir()
    (root / "a.gif").write_bytes(gif)
    (tmp_path / "secret.gif").write_bytes(gif)
    (root / "link.gif").symlink_to(tmp_path / "secret.gif")
    limits = GifLimits()
    assert gif_bytes("a.gif", limits, root) == gif
    assert gif_bytes(str(root / "a.gif"), limits, root) == gif
    for escape in ("../secret.gif", str(tmp_path / "secret.gif"), "link.gif", "/etc/passwd"):
        with pytest.raises(InputError) as err:
            gif_bytes(escape, limits, root)
        assert err.value.message == "`gif` path is outside the configured GIF root"
    with pytest.raises(InputError, match="base64"):
        gif_bytes("a.gif", limits, None)  # no root: no path is ever read


def test_a_pyfunc_logged_without_a_digest_names_none(pair, gif) -> None:
    """A version logged before the digest was in its config still loads; its rows say ""."""
    from gifqa_model.inference.pyfunc import GifQAPyfunc

    model = GifQAPyfunc()
    model.load_context(SimpleNamespace(artifacts={"model_dir": pair[0], "clip_dir": pair[1]}))
    calls = _record_answer_batch(model.predictor)
    frame = pd.DataFrame({"gif": [gif], "question": [QUESTION]})
    assert model.digest == "" and list(model.predict(None, frame).model) == [""]
    # called without MLflow's params: the default
    assert [kwargs for _, kwargs, _ in calls] == [{"max_answer_tokens": 4}]


def test_a_question_is_refused_past_its_limit_and_when_blank() -> None:
    from gifqa_model.inference.pyfunc import InputError, check_question

    assert check_question(" " + "a" * 300 + " ") == "a" * 300  # the limit, stripped
    for value, message, reason in (
        (
            "a" * 301,
            "the question has 301 characters; the limit is 300 characters",
            "question_too_long",
        ),
        ("  ", "`question` is missing or empty", "empty_question"),
        (None, "`question` is missing or empty", "empty_question"),
    ):
        with pytest.raises(InputError) as err:
            check_question(value)
        assert (err.value.message, err.value.reason) == (message, reason)


def test_a_gifs_limits_in_the_pyfunc_hold_at_their_edges(tmp_path) -> None:
    """Each refusal's message and tag (the HTTP service answers the tag), at the byte cap and
    one byte over it: raw bytes, base64 (refused before decoding past 4/3 of the cap + 4
    characters) and a file under the root."""
    from gifqa_model.inference.pyfunc import InputError, decode_base64_gif, gif_bytes

    def refused(call, message: str, reason: str = "bad_input") -> None:
        with pytest.raises(InputError) as err:
            call()
        assert (str(err.value.message), err.value.reason) == (message, reason)

    cap = 301  # 4/3 of it is 401.3: the base64 limit is 405 characters
    assert decode_base64_gif("A" * 404, cap) == bytes(303)  # not its size: gif_bytes checks
    refused(lambda: decode_base64_gif("A" * 405, cap), "`gif` is not valid base64", "bad_base64")
    refused(
        lambda: decode_base64_gif("A" * 406, cap),
        "the GIF is over the limit of 301 bytes",
        "too_large_bytes",
    )
    refused(lambda: decode_base64_gif("", cap), "the GIF is empty", "empty_file")
    limits = GifLimits(max_bytes=cap)
    assert gif_bytes(bytes(cap), limits, None) == bytes(cap)
    refused(lambda: gif_bytes(bytes(cap + 1), limits, None), "`gif` is over the limit of 301 bytes")
    refused(lambda: gif_bytes(b"", limits, None), "`gif` is empty")
    refused(lambda: gif_bytes(7, limits, None), "`gif` must be the GIF's bytes, base64-encoded")
    refused(
        lambda: gif_bytes("a.gif", limits, None),
        "`gif` must be the GIF's bytes, base64-encoded",
        "bad_base64",
    )
    (tmp_path / "cap.gif").write_bytes(bytes(cap))
    (tmp_path / "over.gif").write_bytes(bytes(cap + 1))
    assert gif_bytes("cap.gif", limits, tmp_path) == bytes(cap)
    refused(lambda: gif_bytes("over.gif", limits, tmp_path), "`gif` is over the limit of 301 bytes")


def test_many_questions_about_many_gifs_answer_as_one_at_a_time(pair, gif, shared_data) -> None:
    """Batches across GIFs (what the server sends) and across questions (the benchmark, the
    gate): same answers, same keyframes as one request each."""
    from gifqa_model.inference.predict import GifQAPredictor

    predictor = GifQAPredictor(*pair)
    real = min((shared_data / "real_gifs").glob("*.gif"), key=lambda p: p.stat().st_size)
    other = generate_example(1, ShapesParams()).gif_bytes
    questions = [QUESTION, "how many squares are there ?", "what is the circle doing ?"]
    batched = predictor.answer_batch(
        [(gif, questions), (real.read_bytes(), questions[:1]), (other, questions[1:])]
    )
    singles = [
        [predictor.answer(g, q) for q in qs]
        for g, qs in [(gif, questions), (real.read_bytes(), questions[:1]), (other, questions[1:])]
    ]

    def strip(rows: list[list[dict]]) -> list:
        return [[(a["answer"], a["keyframes"], a["n_frames"]) for a in r] for r in rows]

    assert strip(batched) == strip(singles)
    conf = [a["confidence"] for r in batched for a in r]
    assert conf == pytest.approx([a["confidence"] for r in singles for a in r], abs=1e-3)


@pytest.fixture(scope="module")
def with_domain(pair, shared_data, tmp_path_factory):
    """The tiny pair with a domain index fitted on 20 ShapesWorld GIFs → (predictor, the
    training GIFs' embeddings, embed(gifs), train GIFs, val GIFs, a real GIF)."""
    import shutil

    from gifqa_model.core.artifacts import DOMAIN_DIR
    from gifqa_model.index.domain import DomainIndex, gif_embeddings
    from gifqa_model.index.indexing import cached_frame_indices
    from gifqa_model.inference.predict import GifQAPredictor

    clip = tmp_path_factory.mktemp("domain") / "clip"
    shutil.copytree(pair[1], clip)
    predictor = GifQAPredictor(pair[0], clip)
    encoder = predictor.encoder

    def embed(gifs: list[bytes]) -> np.ndarray:
        tokens = []
        for g in gifs:
            n = len(decode_frames(g, size=8))
            cached = cached_frame_indices(n, predictor.params.frames_per_gif)
            frames = decode_frames(g, indices=cached, size=encoder.image_size)
            tokens.append(encoder.embed_frames(frames)[0])
        return gif_embeddings(np.concatenate(tokens), np.array([len(t) for t in tokens]))

    train = [generate_example(i, ShapesParams()).gif_bytes for i in range(20)]
    val = [generate_example(i, ShapesParams()).gif_bytes for i in range(20, 30)]
    train_emb = embed(train)
    DomainIndex.fit(train_emb, embed(val), 90).save(clip / DOMAIN_DIR)
    real = min((shared_data / "real_gifs").glob("*.gif"), key=lambda p: p.stat().st_size)
    predictor = GifQAPredictor(pair[0], clip)
    return predictor, train_emb, embed, train, val, real.read_bytes()


def _nearest(train_emb: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """One minus the cosine of the nearest training GIF, by brute force (not the index)."""
    unit = train_emb / np.linalg.norm(train_emb, axis=1, keepdims=True)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return 1.0 - (e @ unit.T).max(axis=1)


def test_answers_say_whether_the_gif_is_in_domain(with_domain) -> None:
    """The answer's distance is the GIF's distance to the nearest training GIF, and in_domain
    is that distance against the fitted threshold. (Whether the fitted CLIP tells real GIFs
    from ShapesWorld's is measured on a trained one: bench/domain_rates.py.)"""
    predictor, train_emb, embed, train, val, real = with_domain
    seen = predictor.answer(train[5], QUESTION)  # a training GIF: distance 0
    assert seen["in_domain"] is True and seen["domain_distance"] == pytest.approx(0, abs=1e-3)
    for gif in (real, val[0]):
        got = predictor.answer(gif, QUESTION)
        want = float(_nearest(train_emb, embed([gif]))[0])
        assert got["domain_distance"] == pytest.approx(want, abs=1e-3)
        assert got["in_domain"] is (want <= predictor.domain.threshold)


def test_in_domain_is_per_gif_in_a_mixed_batch(with_domain) -> None:
    """GIFs of a batch (what the server sends the model) each get their own verdict, for
    every one of their questions, as they would alone. The tiny CLIP is untrained and puts
    every GIF near every other, so the threshold is set between the GIFs' own distances."""
    import copy
    import dataclasses

    predictor, train_emb, embed, train, val, real = with_domain
    gifs = [real, train[3], val[1], real, train[7]]
    counts = [2, 1, 3, 1, 2]
    want = _nearest(train_emb, embed(gifs))
    assert abs(want[1]) < 1e-6 and abs(want[4]) < 1e-6 and want[0] > 1e-6
    cut = copy.copy(predictor)
    cut.domain = dataclasses.replace(predictor.domain, threshold=float(want[0]) / 2)
    out = cut.answer_batch([(g, [QUESTION] * k) for g, k in zip(gifs, counts, strict=True)])
    assert [len(answers) for answers in out] == counts
    verdicts = []
    for g, answers in enumerate(out):
        alone = cut.answer(gifs[g], QUESTION)["in_domain"]
        assert {a["in_domain"] for a in answers} == {alone} == {bool(want[g] <= want[0] / 2)}, g
        verdicts.append(alone)
    assert verdicts[:2] == [False, True] and verdicts[3:] == [False, True]


def test_a_gif_asked_about_again_skips_decode_and_clip(pair, gif, monkeypatch) -> None:
    from gifqa_model.inference.predict import GifQAPredictor

    predictor = GifQAPredictor(*pair, cache_gifs=2)
    first = predictor.answer(gif, QUESTION)
    calls: list[int] = []
    embed = predictor.encoder.embed_frames
    monkeypatch.setattr(
        predictor.encoder, "embed_frames", lambda frames: calls.append(len(frames)) or embed(frames)
    )
    assert predictor.answer(gif, QUESTION) == first and calls == []  # a hit: no CLIP pass
    others = [generate_example(i, ShapesParams()).gif_bytes for i in (1, 2)]
    predictor.answer_batch([(g, [QUESTION]) for g in others])
    f = predictor.params.frames_per_gif
    assert calls == [2 * f] and len(predictor.cache) == 2  # both misses in one pass; bounded
    assert predictor.answer(gif, QUESTION) == first and calls == [2 * f, f]  # evicted: again


def test_the_gif_cache_holds_gifs_given_as_bytes_and_only_as_many_as_asked(
    pair, gif, tmp_path
) -> None:
    """A path is answered like its bytes but not cached (its file may change); a cache of 0
    keeps nothing, of 1 the last GIF; the least recently asked goes first."""
    import hashlib

    from gifqa_model.inference.predict import GifQAPredictor

    path = tmp_path / "a.gif"
    path.write_bytes(gif)
    off = GifQAPredictor(*pair, cache_gifs=0)
    assert off.answer(path, QUESTION) == off.answer(gif, QUESTION) and len(off.cache) == 0
    key = {g: hashlib.sha256(g).hexdigest() for g in (gif, *_others(2))}
    a, b = _others(2)
    one = GifQAPredictor(*pair, cache_gifs=1)
    one.answer(path, QUESTION)
    assert len(one.cache) == 0  # a path: no entry
    one.answer_batch([(gif, [QUESTION]), (a, [QUESTION])])
    assert list(one.cache) == [key[a]]
    two = GifQAPredictor(*pair, cache_gifs=2)
    for g in (gif, a, gif, b):  # gif asked again after a: a is the oldest when b comes
        two.answer(g, QUESTION)
    assert list(two.cache) == [key[gif], key[b]]


def _others(n: int) -> list[bytes]:
    return [generate_example(i, ShapesParams()).gif_bytes for i in range(1, n + 1)]


def test_the_predictors_limits_refuse_before_decoding_and_allow_past_the_defaults(
    pair, monkeypatch
) -> None:
    """A GIF over the predictor's frame limit is refused by the probe, nothing decoded; limits
    above the defaults (an operator's) are the ones decoding applies too."""
    import gifqa_model.inference.predict as predict

    frames = [np.full((2, 2), i % 2, np.uint8) for i in range(1001)]  # one over the default
    many = encode_gif(frames, [(0, 0, 0), (255, 255, 255)], duration_ms=20)
    decodes = []
    decode = predict.decode_frames
    monkeypatch.setattr(
        predict, "decode_frames", lambda *a, **k: decodes.append(1) or decode(*a, **k)
    )
    strict = predict.GifQAPredictor(*pair, limits=GifLimits(max_frames=1000))
    with pytest.raises(GifError) as err:
        strict.answer(many, QUESTION)
    assert err.value.reason == "too_many_frames" and decodes == []
    loose = predict.GifQAPredictor(*pair, limits=GifLimits(max_frames=1001))
    assert loose.answer(many, QUESTION)["keyframes"] and decodes == [1]


def test_a_question_is_embedded_once_and_alone(pair, gif, monkeypatch) -> None:
    """Asked again, a question's CLIP embedding comes from the cache; a new one is embedded by
    itself, so its embedding (and the keyframes it picks) never depend on its batch-mates."""
    from gifqa_model.inference.predict import GifQAPredictor

    predictor = GifQAPredictor(*pair)
    predictor.cache_questions = 2
    embed = predictor.encoder.embed_texts
    asked: list[list[str]] = []
    monkeypatch.setattr(
        predictor.encoder, "embed_texts", lambda texts: asked.append(texts) or embed(texts)
    )
    other = "how many circles are there ?"
    alone = predictor.answer(gif, QUESTION)
    both = predictor.answer_many(gif, [other, QUESTION, other])
    assert asked == [[QUESTION], [other]] and both[1] == alone
    np.testing.assert_array_equal(predictor.question_cache[QUESTION], embed([QUESTION])[0])
    predictor.answer(gif, "where is the triangle ?")
    # bounded: the least recently asked left
    assert list(predictor.question_cache) == [other, "where is the triangle ?"]
    predictor.answer(gif, QUESTION)
    assert asked[-1] == [QUESTION]


def test_the_page_offers_search_only_with_a_search_index(served) -> None:
    from gifqa_model.serve.routes import page_html

    client = served.client
    page = client.get("/").text
    assert 'id="question"' in page and "searchform" not in page.split("<script>")[0]
    client.app.state.search, before = object(), client.app.state.search
    try:
        assert 'id="searchform"' in client.get("/").text
    finally:
        client.app.state.search = before
    assert 'id="searchform"' in page_html(True) and 'id="searchform"' not in page_html(False)


SEARCH_TEXTS = ["a red circle is moving left", "a blue square is growing", "two green stars spin"]


def _search_index(clip_dir: Path, root: Path) -> Path:
    """An index stage's search output over three GIFs, each embedded as its own description's
    text (so a description finds its GIF first, cosine 1); g2 is a train GIF."""
    import shutil

    from gifqa_model.core.artifacts import CLIP_DIR, SEARCH_DIR
    from gifqa_model.index.clip import ClipEncoder
    from gifqa_model.index.search import GifSearch

    index_dir = root / "index"
    shutil.copytree(clip_dir, index_dir / CLIP_DIR)
    emb = ClipEncoder.load(index_dir / CLIP_DIR).embed_texts(SEARCH_TEXTS)  # (3, E): 1 frame each
    ids = [f"g{i}" for i in range(len(SEARCH_TEXTS))]
    GifSearch.build(
        np.asarray(emb, np.float32),
        pd.DataFrame({"gif_id": ids, "n_cached": 1}),
        pd.DataFrame(
            {
                "gif_id": ids,
                "path": [f"gifs/{g}.gif" for g in ids],
                "split": ["test", "test", "train"],
            }
        ),
    ).save(index_dir / SEARCH_DIR)
    return index_dir


def test_search_dir_serves_the_gifs_a_text_describes_best_first(
    pair, tmp_path, monkeypatch
) -> None:
    """`GIFQA_SEARCH_DIR` (an index stage's output: search/ and clip/) enables GET /v1/search:
    results best first, `k` bounds them, an empty or oversized query is refused."""
    index_dir = _search_index(pair[1], tmp_path)
    monkeypatch.setenv("GIFQA_SEARCH_DIR", str(index_dir))
    settings = ServeSettings(model_dir=pair[0], clip_dir=pair[1], poll_seconds=0)
    assert settings.search_dir == index_dir
    with TestClient(create_app(settings)) as client:
        assert 'id="searchform"' in client.get("/").text
        for i, text in enumerate(SEARCH_TEXTS):
            r = client.get("/v1/search", params={"q": f"  {text} ", "k": 2})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["query"] == text and len(body["hits"]) == 2
            top, second = body["hits"]
            assert (top["gif_id"], top["path"]) == (f"g{i}", f"gifs/g{i}.gif")
            assert top["score"] == pytest.approx(1.0, abs=1e-4) and second["score"] < top["score"]
        assert client.get("/v1/search", params={"q": "   "}).json()["reason"] == "empty_query"
        assert client.get("/v1/search", params={"q": "x", "k": 101}).status_code == 422


def test_the_search_command_ranks_the_gifs_and_filters_by_split(pair, tmp_path) -> None:
    from typer.testing import CliRunner

    from gifqa_model.cli import app

    index_dir = _search_index(pair[1], tmp_path)
    run = CliRunner().invoke(app, ["search", SEARCH_TEXTS[2], "--index-dir", str(index_dir)])
    assert run.exit_code == 0, run.output
    ranks = [line.split() for line in run.output.splitlines() if line.strip()]
    assert [r[0] for r in ranks] == ["1", "2", "3"] and ranks[0][1:] == [
        "1.000",
        "g2",
        "gifs/g2.gif",
    ]
    test_only = CliRunner().invoke(
        app,
        ["search", SEARCH_TEXTS[2], "--index-dir", str(index_dir), "--split", "test", "--k", "5"],
    )
    assert test_only.exit_code == 0 and "g2" not in test_only.output
    assert len(test_only.output.strip().splitlines()) == 2
    missing = CliRunner().invoke(app, ["search", "x", "--index-dir", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no search index in" in missing.output


def test_frames_are_the_ones_the_index_caches_as_small_pngs(served, gif) -> None:
    """POST /v1/frames: the source frames the index stage caches of this GIF (its own frame
    sampling, at the model's `frames_per_gif`), in order, each a PNG of the strip's size that
    shows that frame; a corrupt GIF is a 422 with the reason."""
    import base64
    import io

    from PIL import Image

    from gifqa_model.data.gifs import probe_gif
    from gifqa_model.index.indexing import cached_frame_indices
    from gifqa_model.serve.routes import STRIP_SIZE

    r = served.client.post("/v1/frames", files={"file": ("a.gif", gif, "image/gif")})
    assert r.status_code == 200, r.text
    frames = r.json()["frames"]
    n = probe_gif(gif, GifLimits()).n_frames
    expected = [int(i) for i in cached_frame_indices(n, IndexParams().frames_per_gif)]
    assert [f["index"] for f in frames] == expected and len(expected) > 1
    decoded = decode_frames(gif, indices=expected, size=STRIP_SIZE)
    for f, source in zip(frames, decoded, strict=True):
        head, data = f["png"].split(",", 1)
        assert head == "data:image/png;base64"
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        assert np.array_equal(png, source)  # lossless: the frame itself
    bad = served.client.post("/v1/frames", files={"file": ("a.gif", gif[:40], "image/gif")})
    assert bad.status_code == 422 and bad.json()["reason"]
