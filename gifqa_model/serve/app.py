"""HTTP serving: a FastAPI app that answers questions about uploaded GIFs.

The model is loaded once, in the lifespan handler, from an MLflow model URI (the registered
``champion`` by default) or from a local model/CLIP directory pair. Uploads are untrusted:
their size is bounded while the body is still being received, and every GIF is probed (no
pixel decoding) before it may queue for the model, so a bad upload costs milliseconds.

Run it with ``gifqa serve`` or ``uvicorn --factory gifqa_model.serve.app:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gifqa_model.data.gifs import GifError, GifLimits, probe_gif

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

    @model_validator(mode="after")
    def _pair_or_uri(self) -> ServeSettings:
        if (self.model_dir is None) != (self.clip_dir is None):
            raise ValueError("model_dir and clip_dir must be given together")
        if (
            min(self.max_upload_bytes, self.max_question_chars, self.max_frames, self.max_pixels)
            <= 0
        ):
            raise ValueError("limits must be positive")
        return self

    @property
    def gif_limits(self) -> GifLimits:
        return GifLimits(
            max_bytes=self.max_upload_bytes, max_frames=self.max_frames, max_pixels=self.max_pixels
        )

    @property
    def source(self) -> str:
        """Where the model comes from, as reported by /info."""
        if self.model_dir is not None:
            return f"local:{self.model_dir}"
        return self.model_uri


class Predictor(Protocol):
    """What the app needs from a model: :class:`gifqa_model.serve.predict.GifQAPredictor`'s API."""

    limits: GifLimits

    def answer(self, gif: bytes, question: str) -> dict: ...


@dataclass
class LoadedModel:
    predictor: Predictor
    uri: str
    version: int | None  # the registered version number; None for a local pair or run URI


PredictorFactory = Callable[[ServeSettings], LoadedModel]


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


def load_model(settings: ServeSettings) -> LoadedModel:
    """The default factory: a local directory pair, or the pyfunc behind an MLflow URI."""
    if settings.model_dir is not None and settings.clip_dir is not None:
        from gifqa_model.serve.predict import GifQAPredictor

        predictor = GifQAPredictor(settings.model_dir, settings.clip_dir, settings.gif_limits)
        return LoadedModel(predictor, settings.source, None)

    import mlflow

    uri = settings.model_uri
    version = resolve_model_version(uri)
    registered = _REGISTERED.match(uri)
    # Load the resolved version, not the alias: the alias may move between the two calls and
    # the version we report must be the one we serve.
    load_uri = f"models:/{registered['name']}/{version}" if version is not None else uri
    pyfunc = mlflow.pyfunc.load_model(load_uri)
    predictor = pyfunc.unwrap_python_model().predictor
    # the pyfunc builds its predictor with default GIF limits; the server's limits apply
    predictor.limits = settings.gif_limits
    return LoadedModel(predictor, uri, version)


# --- errors ----------------------------------------------------------------------------------


class ApiError(HTTPException):
    """A refused request: status, a machine-readable ``reason`` and a message for humans."""

    def __init__(self, status_code: int, reason: str, message: str) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.reason = reason


# --- request body limit -----------------------------------------------------------------------


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` while they are received, not after.

    Starlette's multipart parser spools a whole file part to a temporary file before the
    endpoint runs, so a check inside the endpoint would come too late for a huge upload. A
    declared Content-Length is refused before any body byte is read; a chunked body is
    counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
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


# --- API --------------------------------------------------------------------------------------


class AnswerOut(BaseModel):
    answer: str
    keyframes: list[int]  # source frame indices, time order
    n_frames: int
    model_version: int | None
    latency_ms: float


class HealthOut(BaseModel):
    status: str
    model_version: int | None


class InfoOut(BaseModel):
    model_uri: str
    model_version: int | None
    max_upload_bytes: int
    max_question_chars: int
    max_frames: int
    max_pixels: int


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def get_model(request: Request) -> LoadedModel:
    model = getattr(request.app.state, "model", None)
    if model is None:  # only when the app runs without its lifespan
        raise ApiError(503, "not_loaded", "the model is not loaded")
    return model


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ModelDep = Annotated[LoadedModel, Depends(get_model)]


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


def _check_question(question: str | None, max_chars: int) -> str:
    if question is None or not question.strip():
        raise ApiError(422, "empty_question", "the form field `question` is missing or empty")
    question = question.strip()
    if len(question) > max_chars:
        raise ApiError(
            422,
            "question_too_long",
            f"the question has {len(question)} characters; the limit is {max_chars}",
        )
    return question


def create_app(
    settings: ServeSettings | None = None, predictor_factory: PredictorFactory | None = None
) -> FastAPI:
    """The app; ``predictor_factory`` (default :func:`load_model`) runs once, at startup."""
    settings = settings or ServeSettings()
    factory = predictor_factory or load_model

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start = time.perf_counter()
        # loading reads weights and builds torch modules: keep the loop free meanwhile
        model = await run_in_threadpool(factory, settings)
        log.info(
            "loaded %s (version %s) in %.1f s",
            model.uri,
            model.version,
            time.perf_counter() - start,
        )
        app.state.model = model
        # One request at a time in the model: torch already spreads one forward pass over
        # the cores, and waiting here (not in a pool thread) keeps the pool free for others.
        app.state.model_lock = asyncio.Lock()
        yield
        app.state.model = None

    app = FastAPI(title="gifqa", summary="Answer questions about GIFs", lifespan=lifespan)
    app.state.settings = settings
    app.state.model = None
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes + BODY_OVERHEAD_BYTES
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, "reason": exc.reason}, status_code=exc.status_code
        )

    @app.post("/answer", response_model=AnswerOut)
    async def answer(
        request: Request,
        settings: SettingsDep,
        model: ModelDep,
        # optional in the signature so a missing part gets our message, not a generic one
        file: Annotated[UploadFile | None, File(description="the GIF")] = None,
        question: Annotated[str | None, Form()] = None,
    ) -> AnswerOut:
        if file is None:
            raise ApiError(422, "missing_file", "the form field `file` (the GIF) is missing")
        question = _check_question(question, settings.max_question_chars)
        data = await _read_upload(file, settings.max_upload_bytes)
        if not data:
            raise ApiError(422, "empty_file", "the uploaded file is empty")
        start = time.perf_counter()
        try:
            # cheap structural checks first, outside the lock, so bad GIFs never queue
            await run_in_threadpool(probe_gif, data, settings.gif_limits)
            async with request.app.state.model_lock:
                out = await run_in_threadpool(model.predictor.answer, data, question)
        except GifError as exc:
            raise ApiError(422, exc.reason, f"not a usable GIF: {exc.message}") from exc
        latency_ms = (time.perf_counter() - start) * 1000
        return AnswerOut(
            answer=out["answer"],
            keyframes=out["keyframes"],
            n_frames=out["n_frames"],
            model_version=model.version,
            latency_ms=round(latency_ms, 2),
        )

    @app.get("/health", response_model=HealthOut)
    async def health(model: ModelDep) -> HealthOut:
        return HealthOut(status="ok", model_version=model.version)

    @app.get("/info", response_model=InfoOut)
    async def info(settings: SettingsDep, model: ModelDep) -> InfoOut:
        return InfoOut(
            model_uri=model.uri,
            model_version=model.version,
            max_upload_bytes=settings.max_upload_bytes,
            max_question_chars=settings.max_question_chars,
            max_frames=settings.max_frames,
            max_pixels=settings.max_pixels,
        )

    return app
