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

This module assembles the app from its parts: :mod:`.settings`, :mod:`.loading` (the model
slot), :mod:`.batching`, :mod:`.middleware`, :mod:`.schemas` and :mod:`.routes`.
Run it with ``gifqa serve`` or ``uvicorn --factory gifqa_model.serve.app:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from gifqa_model.core.threads import ModelThread, in_own_thread
from gifqa_model.serve.batching import Batcher
from gifqa_model.serve.loading import (
    ModelSlot,
    PredictorFactory,
    VersionResolver,
    current_version,
    load_model,
)
from gifqa_model.serve.middleware import (
    AdmissionMiddleware,
    BodySizeLimitMiddleware,
    Metrics,
    api_error_handler,
    request_counter,
)
from gifqa_model.serve.routes import router
from gifqa_model.serve.schemas import ApiError
from gifqa_model.serve.settings import ServeSettings

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _lifespan(
    settings: ServeSettings, metrics: Metrics, factory: PredictorFactory, resolver: VersionResolver
) -> Lifespan:
    """Startup loads the first model before traffic; then the batcher and the alias poller
    run as tasks until shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model_thread = ModelThread()
        slot = ModelSlot(settings, factory, resolver, metrics, model_thread)
        start = time.perf_counter()
        await slot.refresh(force=True)
        log.info("first load in %.1f s", time.perf_counter() - start)
        batcher = Batcher(slot, settings, metrics, model_thread)
        app.state.slot, app.state.batcher = slot, batcher
        app.state.model_thread = model_thread
        if settings.search_dir is not None:
            from gifqa_model.index.search import GifSearch

            app.state.search = await in_own_thread(GifSearch.open, settings.search_dir)
        tasks = [asyncio.create_task(batcher.run())]
        if settings.poll_seconds > 0:
            tasks.append(asyncio.create_task(slot.follow()))
        yield
        for task in tasks:
            task.cancel()
        model_thread.shutdown()
        app.state.slot = None

    return lifespan


def create_app(
    settings: ServeSettings | None = None,
    predictor_factory: PredictorFactory | None = None,
    version_resolver: VersionResolver | None = None,
) -> FastAPI:
    """The app; ``predictor_factory`` (default :func:`load_model`) loads a version,
    ``version_resolver`` (default :func:`current_version`) says which one is current."""
    settings = settings or ServeSettings()
    metrics = Metrics()
    lifespan = _lifespan(
        settings, metrics, predictor_factory or load_model, version_resolver or current_version
    )
    app = FastAPI(
        title="gifqa",
        version="1",
        summary="Answer questions about GIFs with the registry's champion",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.slot = None
    app.state.search = None
    app.state.metrics = metrics
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    # added last, so it runs first: a refused request never reaches the body's reader
    app.add_middleware(AdmissionMiddleware, max_inflight=settings.max_inflight, metrics=metrics)
    # an http middleware added after both: it wraps them, so their refusals are counted too
    app.middleware("http")(request_counter(metrics))
    app.add_exception_handler(ApiError, api_error_handler(metrics))
    app.include_router(router)
    return app
