"""Which model to serve: resolving ``models:/`` URIs, loading and warming one version, and the
:class:`ModelSlot` that follows the alias and swaps a new version in whole."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fastapi.concurrency import run_in_threadpool

from gifqa_model.core.config import GifLimits
from gifqa_model.core.threads import ModelThread, in_own_thread
from gifqa_model.serve.settings import ServeSettings
from gifqa_model.serve.vision_runtime import use_runtime

if TYPE_CHECKING:
    from gifqa_model.serve.middleware import Metrics

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """What the app needs from a model: the API of
    :class:`gifqa_model.inference.predict.GifQAPredictor`."""

    limits: GifLimits

    def answer_batch(self, requests: Sequence[tuple[bytes, list[str]]]) -> list[list[dict]]: ...

    def describe(self, gif: bytes) -> dict: ...


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

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


def followed_alias(uri: str) -> tuple[str, str] | None:
    """(registered model, alias) of a ``models:/name@alias`` URI; None for any other URI."""
    m = _REGISTERED.match(uri)
    return (m["name"], m["alias"]) if m is not None and m["alias"] is not None else None


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
        from gifqa_model.inference.predict import GifQAPredictor

        predictor = GifQAPredictor(
            settings.model_dir,
            settings.clip_dir,
            settings.gif_limits,
            cache_gifs=settings.gif_cache,
        )
        runtime = use_runtime(predictor.encoder, settings.vision_runtime)
        return LoadedModel(predictor, settings.source, None, {"vision_runtime": runtime})

    import mlflow

    from gifqa_model.inference.pyfunc import load_pyfunc

    uri = settings.model_uri
    registered = _REGISTERED.match(uri)
    if version is None:
        version = resolve_model_version(uri)
    load_uri = f"models:/{registered['name']}/{version}" if version is not None else uri
    pyfunc = load_pyfunc(load_uri)
    wrapped = pyfunc.unwrap_python_model()
    predictor = wrapped.predictor
    # the pyfunc builds its predictor with default GIF limits; the server's limits apply
    predictor.limits, predictor.cache_gifs = settings.gif_limits, settings.gif_cache
    info: dict[str, Any] = {
        "digest": getattr(wrapped, "digest", ""),
        "vision_runtime": use_runtime(predictor.encoder, settings.vision_runtime),
    }
    if version is not None:
        mv = mlflow.MlflowClient().get_model_version(registered["name"], str(version))
        info.update(
            name=registered["name"],
            alias=registered["alias"],
            run_id=mv.run_id,
            scores={
                k: float(v) for k, v in mv.tags.items() if k.endswith(".accuracy") and _is_float(v)
            },
        )
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


class ModelSlot:
    """The model being served, swapped whole when the alias moves.

    Readers take ``slot.model`` once per batch; a swap replaces the reference, so a batch that
    started on the old model finishes on it. Loads run one at a time, off the event loop.
    """

    def __init__(
        self,
        settings: ServeSettings,
        factory: PredictorFactory,
        resolver: VersionResolver,
        metrics: Metrics,
        model_thread: ModelThread,
    ) -> None:
        self.settings, self.factory, self.resolver = settings, factory, resolver
        self.metrics, self.model_thread = metrics, model_thread
        self.model: LoadedModel | None = None
        self.last_error: str | None = None  # of the last failed load, until one succeeds
        # a version that failed to load while another is served: not downloaded again at every
        # poll, only once the alias has moved (or on an admin reload)
        self.failed_version: int | None = None
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task] = set()

    async def refresh(self, force: bool = False) -> str:
        """Load what the URI points at if it changed (or `force`): → "unchanged", "swapped" or
        "failed" (the old model stays)."""
        async with self._lock:
            version = None
            try:
                version = await run_in_threadpool(self.resolver, self.settings)
                if not force and self.model is not None and version == self.model.version:
                    return "unchanged"
                if not force and self.model is not None and version == self.failed_version:
                    return "unchanged"  # it failed before and the alias has not moved since
                # loaded on a thread of its own, warmed where it will answer (see .threads)
                model = await in_own_thread(self.factory, self.settings, version)
                await self.model_thread.run(warm, model)
            except Exception as exc:  # noqa: BLE001 - any load fault keeps the old model
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                self.failed_version = version
                self.metrics.reloads.labels("failed").inc()
                log.error(
                    "loading the model failed; still serving version %s: %s",
                    self.model.version if self.model else None,
                    self.last_error,
                )
                return "failed"
            old = self.model
            self.model, self.last_error = model, None  # the swap: one reference assignment
            self.failed_version = None
            self.metrics.reloads.labels("swapped").inc()
            self.metrics.version.set(model.version if model.version is not None else -1)
            self.metrics.ready.set(1)
            log.info(
                "serving %s version %s (was %s)",
                model.uri,
                model.version,
                old.version if old else None,
            )
            return "swapped"

    def refresh_soon(self) -> None:
        """Check the alias now, in the background (a notice said it moved); refreshes queue on
        the slot's lock, so a burst of notices loads a new version once."""
        task = asyncio.create_task(self.refresh())
        self._pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)

    async def follow(self) -> None:
        """Poll the alias for ever (a background task)."""
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            await self.refresh()
