"""The request batcher: one bounded queue and one worker that answers every waiting request
(up to ``batch_max``) in one model call, so concurrent requests share the CLIP and LM passes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gifqa_model.core.threads import ModelThread
from gifqa_model.data.gifs import GifError
from gifqa_model.serve.loading import LoadedModel, ModelSlot
from gifqa_model.serve.middleware import Metrics
from gifqa_model.serve.schemas import ApiError
from gifqa_model.serve.settings import ServeSettings

log = logging.getLogger(__name__)


@dataclass
class Job:
    gif: bytes
    questions: list[str]
    future: asyncio.Future


class Batcher:
    """One queue, one worker: each model call answers every request waiting (≤ batch_max)."""

    def __init__(
        self, slot: ModelSlot, settings: ServeSettings, metrics: Metrics, model_thread: ModelThread
    ) -> None:
        self.slot, self.settings, self.metrics = slot, settings, metrics
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        # one thread runs every model call: torch spreads each call over the cores itself
        # (see .threads), and one thread's allocations stay in one malloc arena
        self.model_thread = model_thread

    async def submit(self, gif: bytes, questions: list[str]) -> tuple[list[dict], LoadedModel]:
        if self.queue.qsize() >= self.settings.queue_max:
            raise ApiError(
                429,
                "overloaded",
                f"{self.queue.qsize()} requests are waiting for the model; try again shortly",
                headers={"Retry-After": "1"},
            )
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
                results = await self.model_thread.run(answer_jobs, model, jobs)
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
