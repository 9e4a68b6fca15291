"""The FastAPI app against a real tiny (untrained) model pair, plus fakes for timing tests.

Answers from the untrained model are gibberish; the tests check the API around it: keyframes,
refusals with the right status and reason, the lifespan, the threadpool and the upload limits.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gifqa_model.data.gifs import GifLimits, _walk, encode_gif
from gifqa_model.data.shapesworld import ShapesParams, generate_example
from gifqa_model.index.clip import ClipParams, build_clip
from gifqa_model.index.clipcut import IndexParams
from gifqa_model.index.indexing import INDEX_PARAMS_FILE
from gifqa_model.model.modeling import GifQAConfig, GifQAModel
from gifqa_model.model.text import train_word_tokenizer
from gifqa_model.serve.app import (
    BODY_OVERHEAD_BYTES,
    LoadedModel,
    ServeSettings,
    create_app,
    load_model,
    resolve_model_version,
)
from gifqa_model.serve.pyfunc import GifQAPyfunc

QUESTION = "what is the color of the square ?"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """An untrained tiny model dir + CLIP dir, built in about a second."""
    root = tmp_path_factory.mktemp("pair")
    tok = train_word_tokenizer([QUESTION, "red green blue two three"])
    torch.manual_seed(0)
    # vision_width matches the tiny CLIP's token width; the rest is as small as it goes
    cfg = GifQAConfig(
        vision_width=128,
        n_query=2,
        qformer_hidden=32,
        qformer_layers=1,
        qformer_intermediate=64,
        lm_hidden=32,
        lm_layers=1,
        vocab_size=len(tok),
        dropout=0.0,
    )
    GifQAModel(cfg).save_pretrained(root / "model", tok)
    build_clip(ClipParams()).save(root / "clip")
    (root / "clip" / INDEX_PARAMS_FILE).write_text(IndexParams().model_dump_json())
    return root / "model", root / "clip"


@pytest.fixture(scope="module")
def gif() -> bytes:
    return generate_example(0, ShapesParams()).gif_bytes


@pytest.fixture(scope="module")
def served(pair):
    """One app for the module; the factory counts how often it is asked to load."""
    calls: list[ServeSettings] = []

    def factory(settings: ServeSettings) -> LoadedModel:
        calls.append(settings)
        return load_model(settings)

    settings = ServeSettings(model_dir=pair[0], clip_dir=pair[1])
    with TestClient(create_app(settings, factory)) as client:
        assert len(calls) == 1  # loaded at startup, before any request
        yield SimpleNamespace(client=client, calls=calls)


def _post(client: TestClient, gif: bytes | None, question: str | None = QUESTION):
    files = {"file": ("x.gif", gif, "image/gif")} if gif is not None else None
    data = {"question": question} if question is not None else None
    return client.post("/answer", files=files, data=data)


def test_good_gif_answers_with_time_ordered_keyframes(served, gif) -> None:
    r = _post(served.client, gif)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"answer", "keyframes", "n_frames", "model_version", "latency_ms"}
    assert isinstance(body["answer"], str)
    assert body["n_frames"] == 16 and body["model_version"] is None and body["latency_ms"] > 0
    keys = body["keyframes"]
    assert len(keys) == IndexParams().top_k * IndexParams().group_size
    assert keys == sorted(set(keys)) and 0 <= keys[0] and keys[-1] < 16


def test_lifespan_loads_once_and_health_info_report_it(served, gif, pair) -> None:
    for _ in range(2):
        assert _post(served.client, gif).status_code == 200
    assert len(served.calls) == 1
    assert served.client.get("/health").json() == {"status": "ok", "model_version": None}
    info = served.client.get("/info").json()
    assert info["model_uri"] == f"local:{pair[0]}" and info["model_version"] is None
    assert info["max_upload_bytes"] == 10_000_000 and info["max_question_chars"] == 300
    assert info["max_frames"] == 1000


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
        (_png, QUESTION, 422, "not_a_gif", "magic"),
        (_truncated, QUESTION, 422, "truncated", "ends"),
        (_zero_frames, QUESTION, 422, "zero_frames", "no image"),
        (_frame_bomb, QUESTION, 422, "too_many_frames", "1000 frames"),
        (_huge_canvas, QUESTION, 422, "too_many_pixels", "4000x4000"),
        (_corrupt_lzw, QUESTION, 422, "decode_error", "frame 0"),
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
    """Answers after `delay` seconds and records how many calls overlapped."""

    def __init__(self, delay: float = 0.0) -> None:
        self.limits = GifLimits()
        self.delay = delay
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def answer(self, gif: bytes, question: str) -> dict:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay)
        with self._lock:
            self.active -= 1
        return {"answer": "red", "keyframes": [0, 5], "n_frames": 16}


def _fake_app(predictor: FakePredictor, **settings) -> object:
    return create_app(
        ServeSettings(**settings), lambda s: LoadedModel(predictor, "models:/fake@champion", 7)
    )


def test_oversized_upload_is_413_before_the_model(gif) -> None:
    fake = FakePredictor()
    with TestClient(_fake_app(fake, max_upload_bytes=2000)) as client:
        # the GIF part alone is over the limit (the body is within the multipart slack)
        r = _post(client, gif)
        assert r.status_code == 413 and r.json()["reason"] == "too_large_bytes"
        # a declared Content-Length over limit + slack is refused before the body is read
        r = _post(client, b"GIF89a" + b"\0" * (2000 + BODY_OVERHEAD_BYTES))
        assert r.status_code == 413 and "request body" in r.json()["detail"]
        small = _post(client, _zero_frames(gif))
        assert small.status_code == 422  # under the limit: reaches the GIF checks
    assert fake.calls == 0


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
        "path": "/answer",
        "raw_path": b"/answer",
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
    assert read <= 100_000 + BODY_OVERHEAD_BYTES + len(chunk)


def test_model_runs_off_the_event_loop_one_call_at_a_time(gif) -> None:
    fake = FakePredictor(delay=0.4)
    with TestClient(_fake_app(fake)) as client:
        results: list = []
        threads = [
            threading.Thread(target=lambda: results.append(_post(client, gif))) for _ in range(2)
        ]
        for t in threads:
            t.start()
        time.sleep(0.1)
        start = time.perf_counter()
        health = client.get("/health")
        # the loop answers while a model call sleeps in a pool thread
        assert health.status_code == 200 and time.perf_counter() - start < 0.3
        for t in threads:
            t.join()
    assert [r.status_code for r in results] == [200, 200]
    assert results[0].json()["model_version"] == 7
    assert fake.calls == 2 and fake.max_active == 1  # the lock serialises the model


def test_without_lifespan_the_app_is_not_ready() -> None:
    calls: list = []
    app = create_app(ServeSettings(), lambda s: calls.append(s))
    r = TestClient(app).get("/health")  # no `with`: startup never ran
    assert r.status_code == 503 and r.json()["reason"] == "not_loaded" and not calls


def test_settings_from_env_and_pair_validation(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GIFQA_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("GIFQA_MODEL_URI", "models:/other@staging")
    s = ServeSettings()
    assert s.max_upload_bytes == 1234 and s.gif_limits.max_bytes == 1234
    assert s.model_uri == "models:/other@staging" and s.source == "models:/other@staging"
    with pytest.raises(ValidationError, match="together"):
        ServeSettings(model_dir=tmp_path)


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


def test_serves_a_registered_mlflow_model(pair, gif, tmp_path, monkeypatch) -> None:
    """The production path: pyfunc in a registry, alias resolved to the version served."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("serve-test", artifact_location=(tmp_path / "art").as_uri())
    mlflow.set_experiment("serve-test")
    # Logged by hand, not with pyfunc.log_pyfunc: that one pickles the instance it ran its
    # signature prediction on, and transformers' forward hooks (ContextVars) do not pickle.
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=GifQAPyfunc(),
            pip_requirements=["mlflow"],
            artifacts={"model_dir": str(pair[0]), "clip_dir": str(pair[1])},
        )
    client = mlflow.MlflowClient(uri)
    client.create_registered_model("gifqa-serve")
    mv = client.create_model_version("gifqa-serve", info.model_uri, run_id=info.run_id)
    client.set_registered_model_alias("gifqa-serve", "champion", mv.version)

    settings = ServeSettings(model_uri="models:/gifqa-serve@champion", max_frames=20)
    with TestClient(create_app(settings)) as api:
        assert api.get("/health").json() == {"status": "ok", "model_version": 1}
        r = _post(api, gif)
        assert r.status_code == 200 and r.json()["model_version"] == 1
        # the server's GIF limits replace the pyfunc's defaults
        assert api.app.state.model.predictor.limits.max_frames == 20
        bomb = _post(api, encode_gif([np.zeros((1, 1), np.uint8)] * 21, [(0, 0, 0)]))
        assert bomb.status_code == 422 and bomb.json()["reason"] == "too_many_frames"
        assert api.get("/info").json()["model_uri"] == "models:/gifqa-serve@champion"


def test_many_questions_in_one_batch_answer_as_one_at_a_time(pair, gif) -> None:
    """The benchmark and the gate ask a GIF's questions in one batch: same answers, same
    keyframes as one request each."""
    from gifqa_model.serve.predict import GifQAPredictor

    predictor = GifQAPredictor(*pair)
    questions = [QUESTION, "how many squares are there ?", "what is the circle doing ?"]
    batched = predictor.answer_many(gif, questions)
    assert batched == [predictor.answer(gif, q) for q in questions]
