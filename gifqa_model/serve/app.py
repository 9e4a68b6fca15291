"""HTTP serving: a FastAPI app that answers questions about GIFs and follows the champion.

- **API v1**: ``POST /v1/answer`` (multipart, or JSON with the GIF base64-encoded),
  ``POST /v1/answer:batch``, ``GET /v1/model``; ``/healthz`` (alive), ``/readyz`` (a model is
  loaded), ``/metrics`` (Prometheus).
- **Untrusted input**: the body is bounded while it is received, every GIF is probed (no pixel
  decoding) before it may queue for the model, and the queue itself is bounded: a bad or
  excess request costs milliseconds and is refused with a ``reason``.
- **Batching**: requests wait in one queue; one worker takes every request waiting (up to
  ``batch_max``) and answers them in one model call, so concurrent requests share the CLIP and
  LM passes instead of queueing behind a lock one by one.
- **Following the champion**: the alias is polled every ``poll_seconds``; a new version loads
  and warms in the background and is swapped in as one reference assignment. A batch keeps the
  model it started with, so requests in flight finish on the old one; a version that fails to
  load is never swapped in. ``POST /v1/admin/reload`` (bearer token) checks at once.

Run it with ``gifqa serve`` or ``uvicorn --factory gifqa_model.serve.app:create_app``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gifqa_model.config import IndexParams
from gifqa_model.data.gifs import GifError, GifLimits, probe_gif
from gifqa_model.qa.normalize import guess_qtype
from gifqa_model.serve.pyfunc import InputError, check_question, decode_base64_gif

log = logging.getLogger(__name__)

# Multipart framing (boundaries, part headers) and the question field ride on top of the GIF
# bytes; the whole request body may exceed the upload limit by this much and no more.
BODY_OVERHEAD_BYTES = 64 * 1024
_READ_CHUNK = 256 * 1024


class ServeSettings(BaseSettings):
    """Serving configuration; every field can be set as an env var (``GIFQA_MODEL_URI``...)."""

    model_config = SettingsConfigDict(env_prefix="GIFQA_", extra="ignore")

    model_uri: str = "models:/gifqa@champion"
    # a local pair (GifQAModel.save_pretrained dir + CLIP dir); when set, model_uri is ignored
    model_dir: Path | None = None
    clip_dir: Path | None = None
    max_upload_bytes: int = 10_000_000
    max_question_chars: int = 300
    max_frames: int = 1000
    max_pixels: int = 1024 * 1024
    max_batch_items: int = 16  # items of one /v1/answer:batch request
    batch_max: int = 8  # requests answered in one model call
    queue_max: int = 32  # requests waiting for the model; one more is refused with 429
    # requests with a body in the server at once (read, checked, queued or answered); one more
    # is refused with 429 before its body is read: memory stays under ~this × max_upload_bytes
    max_inflight: int = 16
    poll_seconds: float = 30.0  # how often the alias is checked; 0 = never
    admin_token: SecretStr | None = None  # bearer token of /v1/admin/reload; unset = disabled
    search_dir: Path | None = None  # an index stage's outputs: enables GET /v1/search
    gif_cache: int = 256  # GIFs whose decoded, embedded frames are kept (by content hash)

    @model_validator(mode="after")
    def _pair_or_uri(self) -> ServeSettings:
        if (self.model_dir is None) != (self.clip_dir is None):
            raise ValueError("model_dir and clip_dir must be given together")
        limits = (self.max_upload_bytes, self.max_question_chars, self.max_frames,
                  self.max_pixels, self.max_batch_items, self.batch_max, self.queue_max)
        if min(limits) <= 0 or self.poll_seconds < 0:
            raise ValueError("limits must be positive")
        return self

    @property
    def gif_limits(self) -> GifLimits:
        return GifLimits(
            max_bytes=self.max_upload_bytes, max_frames=self.max_frames, max_pixels=self.max_pixels
        )

    @property
    def max_body_bytes(self) -> int:
        """A request body's limit: one GIF base64-encoded (4/3 of its bytes) plus framing."""
        return self.max_upload_bytes * 4 // 3 + BODY_OVERHEAD_BYTES

    @property
    def source(self) -> str:
        """Where the model comes from, as reported by /v1/model."""
        if self.model_dir is not None:
            return f"local:{self.model_dir}"
        return self.model_uri


class Predictor(Protocol):
    """What the app needs from a model: :class:`gifqa_model.serve.predict.GifQAPredictor`'s API."""

    limits: GifLimits

    def answer_batch(self, requests: Sequence[tuple[bytes, list[str]]]) -> list[list[dict]]: ...


@dataclass
class LoadedModel:
    predictor: Predictor
    uri: str
    version: int | None  # the registered version number; None for a local pair or run URI
    info: dict[str, Any] = field(default_factory=dict)  # run, scores: what /v1/model shows


# (settings, the version to load or None) → the loaded model
PredictorFactory = Callable[[ServeSettings, int | None], LoadedModel]
# settings → the version the alias points at now (None: nothing to follow)
VersionResolver = Callable[[ServeSettings], int | None]


# --- loading ----------------------------------------------------------------------------------

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


def resolve_model_version(uri: str, client: Any = None) -> int | None:
    """The registered version a ``models:/`` URI points at now; None for other URIs."""
    m = _REGISTERED.match(uri)
    if m is None:
        return None
    if m["version"] is not None and m["version"].isdigit():
        return int(m["version"])
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient()
    if m["alias"] is not None:
        return int(client.get_model_version_by_alias(m["name"], m["alias"]).version)
    if m["version"] == "latest":
        versions = client.search_model_versions(f"name='{m['name']}'")
        return max((int(v.version) for v in versions), default=None)
    return None  # a legacy stage name ("models:/gifqa/Production"): mlflow resolves it


def current_version(settings: ServeSettings) -> int | None:
    """The default resolver: what the settings' URI points at now (None for a local pair)."""
    if settings.model_dir is not None:
        return None
    return resolve_model_version(settings.model_uri)


def load_model(settings: ServeSettings, version: int | None = None) -> LoadedModel:
    """The default factory: a local directory pair, or the pyfunc of one registered version
    (the version resolved before, not the alias: the alias may move meanwhile)."""
    if settings.model_dir is not None and settings.clip_dir is not None:
        from gifqa_model.serve.predict import GifQAPredictor

        predictor = GifQAPredictor(settings.model_dir, settings.clip_dir, settings.gif_limits,
                                   cache_gifs=settings.gif_cache)
        return LoadedModel(predictor, settings.source, None)

    import mlflow

    uri = settings.model_uri
    registered = _REGISTERED.match(uri)
    if version is None:
        version = resolve_model_version(uri)
    load_uri = f"models:/{registered['name']}/{version}" if version is not None else uri
    pyfunc = mlflow.pyfunc.load_model(load_uri)
    wrapped = pyfunc.unwrap_python_model()
    predictor = wrapped.predictor
    # the pyfunc builds its predictor with default GIF limits; the server's limits apply
    predictor.limits, predictor.cache_gifs = settings.gif_limits, settings.gif_cache
    info: dict[str, Any] = {"digest": getattr(wrapped, "digest", "")}
    if version is not None:
        mv = mlflow.MlflowClient().get_model_version(registered["name"], str(version))
        info.update(name=registered["name"], alias=registered["alias"], run_id=mv.run_id,
                    scores={k: float(v) for k, v in mv.tags.items()
                            if k.endswith(".accuracy") and _is_float(v)})
    return LoadedModel(predictor, uri, version, info)


def _is_float(value: str) -> bool:
    with suppress(ValueError):
        float(value)
        return True
    return False


def warm(model: LoadedModel) -> None:
    """One real answer before the model takes traffic: the first call pays for lazy setup."""
    from gifqa_model.data.shapesworld import ShapesParams, generate_example

    gif = generate_example(0, ShapesParams()).gif_bytes
    model.predictor.answer_batch([(gif, ["what is the color of the square ?"])])


# --- errors and metrics -----------------------------------------------------------------------


class AdmissionMiddleware:
    """At most `max_inflight` requests with a body at once; the next is refused with 429 and
    Retry-After before a byte of its body is read (a burst of uploads cannot fill memory)."""

    def __init__(self, app: ASGIApp, max_inflight: int, metrics: Metrics) -> None:
        self.app, self.max_inflight, self.metrics = app, max_inflight, metrics
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            self.metrics.rejects.labels("overloaded").inc()
            await JSONResponse({"detail": f"{self.inflight} requests are in progress; retry",
                                "reason": "overloaded"}, status_code=429,
                               headers={"Retry-After": "1"})(scope, receive, send)
            return
        self.inflight += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


class ApiError(HTTPException):
    """A refused request: status, a machine-readable ``reason`` and a message for humans."""

    def __init__(self, status_code: int, reason: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.reason = reason


class Metrics:
    """The Prometheus series of one app (its own registry, so apps in one process don't mix)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("gifqa_requests", "requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("gifqa_request_seconds", "request latency", ["route"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                                 registry=r)
        self.rejects = Counter("gifqa_rejects", "refused requests by reason", ["reason"],
                               registry=r)
        self.version = Gauge("gifqa_model_version", "registered version being served "
                             "(-1: a local or unregistered model)", registry=r)
        self.ready = Gauge("gifqa_ready", "1 when a model is loaded", registry=r)
        self.reloads = Counter("gifqa_model_reloads", "reload attempts by result", ["result"],
                               registry=r)
        self.batch = Histogram("gifqa_batch_requests", "requests answered per model call",
                               buckets=(1, 2, 4, 8, 16, 32), registry=r)
        self.queue = Gauge("gifqa_queue_depth", "requests waiting for the model", registry=r)
        self.in_domain = Counter("gifqa_answers_in_domain", "answers by whether their GIF "
                                 "was in domain", ["in_domain"], registry=r)
        self.questions = Counter("gifqa_questions", "questions asked, by the qtype of their "
                                 "form: the mix a drift monitor reads", ["qtype"], registry=r)


# --- request body limit -----------------------------------------------------------------------


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` while they are received, not after.

    Starlette's multipart parser spools a whole file part to a temporary file before the
    endpoint runs, so a check inside the endpoint would come too late for a huge upload. A
    declared Content-Length is refused before any body byte is read; a chunked body is
    counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self.metrics.rejects.labels("too_large_bytes").inc()
            response = JSONResponse(
                {
                    "detail": f"request body of {int(declared)} bytes is over the limit of "
                    f"{self.max_bytes} bytes",
                    "reason": "too_large_bytes",
                },
                status_code=413,
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises an HTTPException raised while it parses the body
                    raise ApiError(
                        413,
                        "too_large_bytes",
                        f"request body is over the limit of {self.max_bytes} bytes",
                    )
            return message

        await self.app(scope, limited_receive, send)


# --- the model slot: hot swap -----------------------------------------------------------------


class ModelSlot:
    """The model being served, swapped whole when the alias moves.

    Readers take ``slot.model`` once per batch; a swap replaces the reference, so a batch that
    started on the old model finishes on it. Loads run one at a time, off the event loop.
    """

    def __init__(self, settings: ServeSettings, factory: PredictorFactory,
                 resolver: VersionResolver, metrics: Metrics) -> None:
        self.settings, self.factory, self.resolver = settings, factory, resolver
        self.metrics = metrics
        self.model: LoadedModel | None = None
        self.last_error: str | None = None  # of the last failed load, until one succeeds
        self._lock = asyncio.Lock()

    async def refresh(self, force: bool = False) -> str:
        """Load what the URI points at if it changed (or `force`): → "unchanged", "swapped" or
        "failed" (the old model stays)."""
        async with self._lock:
            try:
                version = await run_in_threadpool(self.resolver, self.settings)
                if (not force and self.model is not None and version == self.model.version):
                    return "unchanged"
                model = await run_in_threadpool(self.factory, self.settings, version)
                await run_in_threadpool(warm, model)
            except Exception as exc:  # noqa: BLE001 - any load fault keeps the old model
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                self.metrics.reloads.labels("failed").inc()
                log.error("loading the model failed; still serving version %s: %s",
                          self.model.version if self.model else None, self.last_error)
                return "failed"
            old = self.model
            self.model, self.last_error = model, None  # the swap: one reference assignment
            self.metrics.reloads.labels("swapped").inc()
            self.metrics.version.set(model.version if model.version is not None else -1)
            self.metrics.ready.set(1)
            log.info("serving %s version %s (was %s)", model.uri, model.version,
                     old.version if old else None)
            return "swapped"

    async def follow(self) -> None:
        """Poll the alias for ever (a background task)."""
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            await self.refresh()


# --- batching ---------------------------------------------------------------------------------


@dataclass
class Job:
    gif: bytes
    questions: list[str]
    future: asyncio.Future


class Batcher:
    """One queue, one worker: each model call answers every request waiting (≤ batch_max)."""

    def __init__(self, slot: ModelSlot, settings: ServeSettings, metrics: Metrics) -> None:
        self.slot, self.settings, self.metrics = slot, settings, metrics
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        # one thread runs every model call: torch spreads each call over the cores itself,
        # and one thread's allocations stay in one malloc arena (a pool's many threads each
        # grow their own, and RSS with them)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="gifqa-model")

    async def submit(self, gif: bytes, questions: list[str]) -> tuple[list[dict], LoadedModel]:
        if self.queue.qsize() >= self.settings.queue_max:
            raise ApiError(429, "overloaded", f"{self.queue.qsize()} requests are waiting for "
                           "the model; try again shortly", headers={"Retry-After": "1"})
        job = Job(gif, questions, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        self.metrics.queue.set(self.queue.qsize())
        return await job.future

    async def run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            while len(jobs) < self.settings.batch_max and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            self.metrics.queue.set(self.queue.qsize())
            jobs = [j for j in jobs if not j.future.done()]  # the client went away
            model = self.slot.model  # this batch's model, whatever a swap does meanwhile
            if not jobs:
                continue
            self.metrics.batch.observe(len(jobs))
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self.executor, answer_jobs, model, jobs)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
                log.error("a batch failed outside the model", exc_info=exc)
                results = [ApiError(500, "model_error", "the batch failed") for _ in jobs]
            for job, result in zip(jobs, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result((result, model))


def answer_jobs(model: LoadedModel | None, jobs: list[Job]) -> list[list[dict] | Exception]:
    """One model call for all jobs; if it fails, each job alone, so a GIF that only a full
    decode finds corrupt fails its own request and no other."""
    if model is None:
        return [ApiError(503, "not_ready", "no model is loaded") for _ in jobs]
    try:
        return list(model.predictor.answer_batch([(j.gif, j.questions) for j in jobs]))
    except Exception as exc:  # noqa: BLE001 - retried one by one below
        if len(jobs) == 1:
            return [_as_error(exc)]
    return [_one(model, j) for j in jobs]


def _one(model: LoadedModel, job: Job) -> list[dict] | Exception:
    try:
        return model.predictor.answer_batch([(job.gif, job.questions)])[0]
    except Exception as exc:  # noqa: BLE001 - becomes this request's error
        return _as_error(exc)


def _as_error(exc: Exception) -> ApiError:
    if isinstance(exc, GifError):
        return ApiError(422, exc.reason, f"not a usable GIF: {exc.message}")
    log.error("the model failed on a request", exc_info=exc)
    return ApiError(500, "model_error", f"the model failed: {type(exc).__name__}")


# --- API --------------------------------------------------------------------------------------


class AnswerIn(BaseModel):
    """One question about one GIF, the GIF base64-encoded (JSON bodies)."""

    gif: str = Field(description="the GIF's bytes, base64-encoded",
                     examples=["R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw=="])
    question: str = Field(examples=["what is the color of the square ?"])


class GifIn(BaseModel):
    gif: str = Field(description="the GIF's bytes, base64-encoded",
                     examples=["R0lGODlhAQABAIAAAAAAAP///ywAAAAAAQABAAACAUwAOw=="])


class BatchIn(BaseModel):
    items: list[AnswerIn] = Field(description="questions, each about its own GIF; items that "
                                  "share a GIF's bytes decode it once")


class AnswerOut(BaseModel):
    answer: str = Field(examples=["red"])
    confidence: float = Field(description="the answer's probability under the model",
                              examples=[0.93])
    keyframes: list[int] = Field(description="source frame indices CLIP-Cut chose, time order",
                                 examples=[[0, 1, 8, 9]])
    n_frames: int = Field(examples=[16])
    in_domain: bool | None = Field(description="the GIF lies near the training GIFs in CLIP "
                                   "space (None: the model has no domain index)",
                                   examples=[True])
    domain_distance: float | None = Field(description="one minus the cosine of the nearest "
                                          "training GIF", examples=[0.012])
    model_version: int | None = Field(description="the registered version that answered",
                                      examples=[3])
    latency_ms: float = Field(examples=[24.5])


class BatchOut(BaseModel):
    answers: list[AnswerOut]


class ModelOut(BaseModel):
    name: str | None = Field(examples=["gifqa"])
    version: int | None = Field(examples=[3])
    alias: str | None = Field(examples=["champion"])
    uri: str = Field(examples=["models:/gifqa@champion"])
    run_id: str | None = None
    digest: str | None = Field(None, description="of the weights")
    scores: dict[str, float] = Field(default_factory=dict,
                                     examples=[{"benchmark.accuracy": 0.85}])
    last_error: str | None = Field(None, description="the last failed load, if the newest "
                                   "version could not be loaded (the served one stays)")


class SearchHit(BaseModel):
    gif_id: str = Field(examples=["sw_000123"])
    path: str = Field(examples=["data/shapesworld/gifs/sw_000123.gif"])
    score: float = Field(description="cosine of text and GIF embeddings", examples=[0.41])


class SearchOut(BaseModel):
    query: str
    hits: list[SearchHit]


class SamplesOut(BaseModel):
    samples: list[str] = Field(examples=[["/v1/samples/0.gif"]])


class FrameOut(BaseModel):
    index: int = Field(description="the source frame index", examples=[0])
    png: str = Field(description="a data: URL of the frame as PNG")


class FramesOut(BaseModel):
    frames: list[FrameOut]


class StatusOut(BaseModel):
    status: str
    model_version: int | None = None


class ReloadOut(BaseModel):
    result: str = Field(description="unchanged, swapped or failed", examples=["swapped"])
    model_version: int | None


class ErrorOut(BaseModel):
    detail: str
    reason: str


ERRORS = {status: {"model": ErrorOut} for status in (413, 415, 422, 429, 503)}


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def get_slot(request: Request) -> ModelSlot:
    slot = getattr(request.app.state, "slot", None)
    if slot is None or slot.model is None:  # without its lifespan, or no load succeeded yet
        raise ApiError(503, "not_ready", "no model is loaded")
    return slot


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
SlotDep = Annotated[ModelSlot, Depends(get_slot)]


async def _read_upload(file: UploadFile, max_bytes: int) -> bytes:
    """Read in chunks and stop one chunk past the limit, whatever the part claims its size is."""
    chunks, total = [], 0
    while chunk := await file.read(_READ_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise ApiError(
                413, "too_large_bytes", f"the GIF is over the upload limit of {max_bytes} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _check_question(question: Any, max_chars: int, where: str = "") -> str:
    try:
        return check_question(question, max_chars)
    except InputError as exc:
        raise ApiError(422, exc.reason, where + exc.message) from None


def _decode_b64(value: str, max_bytes: int, where: str = "") -> bytes:
    try:
        return decode_base64_gif(value, max_bytes)
    except InputError as exc:
        status = 413 if exc.reason == "too_large_bytes" else 422
        raise ApiError(status, exc.reason, where + exc.message) from None


ANSWER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "question"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "the GIF"},
                        "question": {"type": "string", "maxLength": 300,
                                     "example": "what is the color of the square ?"},
                    },
                }
            },
            "application/json": {"schema": AnswerIn.model_json_schema()},
        },
    }
}


FRAMES_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the GIF"}}}},
    "application/json": {"schema": GifIn.model_json_schema()}}}}
PAGE = Path(__file__).with_name("page.html")
N_SAMPLES = 6
STRIP_SIZE = 96  # pixels of a strip frame's side


def sample_gif(n: int) -> bytes:
    """A ShapesWorld scene from a seed no corpus or benchmark uses."""
    from gifqa_model.data.shapesworld import ShapesParams, generate_example

    return generate_example(900_000 + n, ShapesParams()).gif_bytes


def frame_strip(gif: bytes, limits: GifLimits, frames_per_gif: int) -> list[tuple[int, str]]:
    """The frames the index caches of this GIF → (source index, PNG data URL)."""
    import io

    from PIL import Image

    from gifqa_model.data.gifs import decode_frames
    from gifqa_model.index.indexing import cached_frame_indices

    info = probe_gif(gif, limits)
    indices = cached_frame_indices(info.n_frames, frames_per_gif)
    out = []
    for i, frame in zip(indices, decode_frames(gif, indices=indices, size=STRIP_SIZE,
                                               limits=limits), strict=True):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        out.append((int(i), "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()))
    return out


def create_app(
    settings: ServeSettings | None = None,
    predictor_factory: PredictorFactory | None = None,
    version_resolver: VersionResolver | None = None,
) -> FastAPI:
    """The app; ``predictor_factory`` (default :func:`load_model`) loads a version,
    ``version_resolver`` (default :func:`current_version`) says which one is current."""
    settings = settings or ServeSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        slot = ModelSlot(settings, predictor_factory or load_model,
                         version_resolver or current_version, metrics)
        start = time.perf_counter()
        await slot.refresh(force=True)
        log.info("first load in %.1f s", time.perf_counter() - start)
        batcher = Batcher(slot, settings, metrics)
        app.state.slot, app.state.batcher = slot, batcher
        if settings.search_dir is not None:
            from gifqa_model.index.search import GifSearch

            app.state.search = await run_in_threadpool(GifSearch.open, settings.search_dir)
        tasks = [asyncio.create_task(batcher.run())]
        if settings.poll_seconds > 0:
            tasks.append(asyncio.create_task(slot.follow()))
        yield
        for task in tasks:
            task.cancel()
        batcher.executor.shutdown(wait=False, cancel_futures=True)
        app.state.slot = None

    app = FastAPI(title="gifqa", version="1",
                  summary="Answer questions about GIFs with the registry's champion",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.slot = None
    app.state.search = None
    app.state.metrics = metrics
    app.add_middleware(BodySizeLimitMiddleware,
                       max_bytes=settings.max_body_bytes,
                       metrics=metrics)
    # added last, so it runs first: a refused request never reaches the body's reader
    app.add_middleware(AdmissionMiddleware, max_inflight=settings.max_inflight,
                       metrics=metrics)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        metrics.rejects.labels(exc.reason).inc()
        return JSONResponse(
            {"detail": exc.detail, "reason": exc.reason}, status_code=exc.status_code,
            headers=exc.headers,
        )

    async def _read_gif(request: Request, with_question: bool = False) -> Any:
        """The GIF (and the question) of a multipart or JSON body, limits applied."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        question = None
        if kind == "application/json":
            try:
                body = (AnswerIn if with_question else GifIn).model_validate_json(
                    await request.body())
            except ValueError:
                raise ApiError(422, "bad_json", "the body must be JSON with a string field "
                               "`gif` (base64)" + (" and `question`" if with_question else "")
                               ) from None
            if with_question:
                question = _check_question(body.question, settings.max_question_chars)
            gif = _decode_b64(body.gif, settings.max_upload_bytes)
        elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            try:
                form = await request.form(max_files=1, max_fields=2)
            except ApiError:
                raise
            except Exception:  # noqa: BLE001 - a malformed multipart body
                raise ApiError(422, "bad_form", "the multipart body cannot be parsed") from None
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise ApiError(422, "missing_file", "the form field `file` (the GIF) is missing")
            if with_question:
                question = _check_question(form.get("question"), settings.max_question_chars)
            gif = await _read_upload(file, settings.max_upload_bytes)
            if not gif:
                raise ApiError(422, "empty_file", "the uploaded file is empty")
        else:
            raise ApiError(415, "unsupported_media_type",
                           "send multipart/form-data or application/json")
        return (gif, question) if with_question else gif

    async def answer(slot: ModelSlot, gif: bytes, questions: list[str],
                     where: str = "") -> tuple[list[dict], LoadedModel]:
        try:  # cheap structural checks first, so bad GIFs never queue
            await run_in_threadpool(probe_gif, gif, settings.gif_limits)
        except GifError as exc:
            raise ApiError(422, exc.reason, f"{where}not a usable GIF: {exc.message}") from exc
        out, model = await app.state.batcher.submit(gif, questions)
        for q in questions:
            metrics.questions.labels(guess_qtype(q)).inc()
        return out, model

    def answer_out(out: dict, model: LoadedModel, start: float) -> AnswerOut:
        if out.get("in_domain") is not None:
            metrics.in_domain.labels(str(out["in_domain"]).lower()).inc()
        return AnswerOut(answer=out["answer"], confidence=out["confidence"],
                         keyframes=out["keyframes"], n_frames=out["n_frames"],
                         in_domain=out.get("in_domain"),
                         domain_distance=out.get("domain_distance"),
                         model_version=model.version,
                         latency_ms=round((time.perf_counter() - start) * 1000, 2))

    @app.post("/v1/answer", response_model=AnswerOut, responses=ERRORS,
              openapi_extra=ANSWER_BODY)
    async def answer_one(request: Request) -> AnswerOut:
        """Answer one question about one GIF: a multipart form (`file`, `question`), or JSON
        (`gif` base64-encoded, `question`)."""
        start = time.perf_counter()
        gif, question = await _read_gif(request, with_question=True)
        # readiness after the body: a bad or oversized body is refused the same either way
        out, model = await answer(get_slot(request), gif, [question])
        return answer_out(out[0], model, start)

    @app.post("/v1/answer:batch", response_model=BatchOut, responses=ERRORS)
    async def answer_many(body: BatchIn, slot: SlotDep) -> BatchOut:
        """Answer several questions at once, each about its own GIF (base64); items with the
        same GIF bytes share one decode. Any refused item refuses the request, naming it."""
        start = time.perf_counter()
        if not body.items:
            raise ApiError(422, "empty_batch", "`items` is empty")
        if len(body.items) > settings.max_batch_items:
            raise ApiError(422, "too_many_items", f"{len(body.items)} items; the limit is "
                           f"{settings.max_batch_items}")
        groups: dict[bytes, list[int]] = {}
        questions = []
        for i, item in enumerate(body.items):
            where = f"item {i}: "
            questions.append(_check_question(item.question, settings.max_question_chars, where))
            groups.setdefault(_decode_b64(item.gif, settings.max_upload_bytes, where),
                              []).append(i)
        # every GIF is checked before any queues: a bad item refuses the request up front
        for gif, rows in groups.items():
            try:
                await run_in_threadpool(probe_gif, gif, settings.gif_limits)
            except GifError as exc:
                raise ApiError(422, exc.reason,
                               f"item {rows[0]}: not a usable GIF: {exc.message}") from exc
        results = await asyncio.gather(*(answer(slot, gif, [questions[r] for r in rows])
                                         for gif, rows in groups.items()))
        answers: list[AnswerOut | None] = [None] * len(questions)
        for rows, (out, model) in zip(groups.values(), results, strict=True):
            for r, o in zip(rows, out, strict=True):
                answers[r] = answer_out(o, model, start)
        return BatchOut(answers=answers)

    @app.get("/v1/model", response_model=ModelOut, responses={503: {"model": ErrorOut}})
    async def model_info(slot: SlotDep) -> ModelOut:
        """The version being served: its registry name, alias, run and benchmark scores."""
        m = slot.model
        return ModelOut(name=m.info.get("name"), version=m.version, alias=m.info.get("alias"),
                        uri=m.uri, run_id=m.info.get("run_id"), digest=m.info.get("digest"),
                        scores=m.info.get("scores", {}), last_error=slot.last_error)

    @app.get("/v1/search", response_model=SearchOut, responses={404: {"model": ErrorOut},
                                                                 422: {"model": ErrorOut}})
    async def search(request: Request,
                     q: Annotated[str, Query(min_length=1, max_length=300,
                                             examples=["a red circle is moving left"])],
                     k: Annotated[int, Query(ge=1, le=100)] = 10) -> SearchOut:
        """The indexed corpus' GIFs a text describes, best first (CLIP text tower against
        GIF-level embeddings)."""
        engine = request.app.state.search
        if engine is None:
            raise ApiError(404, "search_disabled", "no search index is configured "
                           "(GIFQA_SEARCH_DIR)")
        if not q.strip():
            raise ApiError(422, "empty_query", "`q` is empty")
        hits = await run_in_threadpool(engine.search, [q.strip()], k)
        return SearchOut(query=q.strip(), hits=[SearchHit(**h) for h in hits[0]])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """The page: pick or upload a GIF, ask, see the answer and the keyframes; search."""
        return HTMLResponse(PAGE.read_text())

    @app.get("/v1/samples", response_model=SamplesOut)
    async def samples() -> SamplesOut:
        """Sample GIFs (ShapesWorld scenes the model never trained on) to try the page with."""
        return SamplesOut(samples=[f"/v1/samples/{i}.gif" for i in range(N_SAMPLES)])

    @app.get("/v1/samples/{n}.gif", response_class=Response,
             responses={200: {"content": {"image/gif": {}}}, 404: {"model": ErrorOut}})
    async def sample(n: int) -> Response:
        if not 0 <= n < N_SAMPLES:
            raise ApiError(404, "no_such_sample", f"samples are 0 to {N_SAMPLES - 1}")
        return Response(await run_in_threadpool(sample_gif, n), media_type="image/gif")

    @app.post("/v1/frames", response_model=FramesOut, responses=ERRORS,
              openapi_extra=FRAMES_BODY)
    async def frames(request: Request) -> FramesOut:
        """The frames the model can look at (the ones the index caches), as small PNGs with
        their source frame index: the page's strip. Multipart `file`, or JSON `gif`."""
        gif = await _read_gif(request)
        try:
            slot = request.app.state.slot
            model = slot.model if slot is not None else None
            # the model's own frame count; a fake without index params gets the default
            params = getattr(getattr(model, "predictor", None), "params", None) or IndexParams()
            strip = await run_in_threadpool(frame_strip, gif, settings.gif_limits,
                                            params.frames_per_gif)
        except GifError as exc:
            raise ApiError(422, exc.reason, f"not a usable GIF: {exc.message}") from exc
        return FramesOut(frames=[FrameOut(index=i, png=png) for i, png in strip])

    @app.get("/healthz", response_model=StatusOut)
    async def healthz() -> StatusOut:
        """Alive: the process answers (a model may still be loading)."""
        return StatusOut(status="alive")

    @app.get("/readyz", response_model=StatusOut, responses={503: {"model": ErrorOut}})
    async def readyz(request: Request) -> StatusOut:
        """Ready: a model is loaded and takes requests."""
        slot = getattr(request.app.state, "slot", None)
        if slot is None or slot.model is None:
            error = slot.last_error if slot is not None else None
            raise ApiError(503, "not_ready", "no model is loaded"
                           + (f" (last load failed: {error})" if error else ""))
        return StatusOut(status="ready", model_version=slot.model.version)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        """Prometheus text format: requests by route and status, latency, model version,
        reloads, rejects by reason, batch sizes, queue depth, questions by kind."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/admin/reload", response_model=ReloadOut,
              responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})
    async def reload(request: Request) -> ReloadOut:
        """Check the alias now and swap if it moved (`Authorization: Bearer <admin_token>`)."""
        if settings.admin_token is None:
            raise ApiError(404, "admin_disabled", "no admin token is configured")
        auth = request.headers.get("authorization", "")
        token = settings.admin_token.get_secret_value()
        if not hmac.compare_digest(auth.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
        slot: ModelSlot = request.app.state.slot
        result = await slot.refresh()
        return ReloadOut(result=result, model_version=slot.model.version if slot.model else None)

    return app

