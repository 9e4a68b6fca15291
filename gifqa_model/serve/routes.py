"""The route handlers of API v1, the page and the probes, on one :data:`router`; each reads the
app's settings, metrics, model slot and batcher from ``request.app.state``."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile

from gifqa_model.core.config import MAX_QUESTION_CHARS, GifLimits, IndexParams
from gifqa_model.core.notices import NoticeError, verify
from gifqa_model.data.gifs import GifError, probe_gif
from gifqa_model.inference.pyfunc import InputError, check_question, decode_base64_gif
from gifqa_model.qa.normalize import guess_qtype
from gifqa_model.serve.loading import LoadedModel, ModelSlot, followed_alias
from gifqa_model.serve.middleware import Metrics
from gifqa_model.serve.schemas import (
    ANSWER_BODY,
    ERRORS,
    FRAMES_BODY,
    AnswerIn,
    AnswerOut,
    ApiError,
    BatchIn,
    BatchOut,
    DescribeOut,
    ErrorOut,
    FrameOut,
    FramesOut,
    GifIn,
    ModelOut,
    NoticeOut,
    ReloadOut,
    SamplesOut,
    SearchHit,
    SearchOut,
    StatusOut,
)
from gifqa_model.serve.settings import ServeSettings

_READ_CHUNK = 256 * 1024
PAGE = Path(__file__).with_name("page.html")
N_SAMPLES = 6
STRIP_SIZE = 96  # pixels of a strip frame's side

# create_app includes it; one router serves any number of apps (each keeps its own state)
router = APIRouter()


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_slot(request: Request) -> ModelSlot:
    slot = getattr(request.app.state, "slot", None)
    if slot is None or slot.model is None:  # without its lifespan, or no load succeeded yet
        raise ApiError(503, "not_ready", "no model is loaded")
    return slot


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SlotDep = Annotated[ModelSlot, Depends(get_slot)]


# --- reading and checking input ---------------------------------------------------------------


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


async def _read_json(
    request: Request, settings: ServeSettings, with_question: bool
) -> tuple[bytes, str | None]:
    try:
        body = (AnswerIn if with_question else GifIn).model_validate_json(await request.body())
    except ValueError:
        raise ApiError(
            422,
            "bad_json",
            "the body must be JSON with a string field "
            "`gif` (base64)" + (" and `question`" if with_question else ""),
        ) from None
    question = None
    if with_question:
        question = _check_question(body.question, settings.max_question_chars)
    return _decode_b64(body.gif, settings.max_upload_bytes), question


async def _read_form(
    request: Request, settings: ServeSettings, with_question: bool
) -> tuple[bytes, str | None]:
    try:
        form = await request.form(max_files=1, max_fields=2)
    except ApiError:
        raise
    except Exception:  # noqa: BLE001 - a malformed multipart body
        raise ApiError(422, "bad_form", "the multipart body cannot be parsed") from None
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise ApiError(422, "missing_file", "the form field `file` (the GIF) is missing")
    question = None
    if with_question:
        question = _check_question(form.get("question"), settings.max_question_chars)
    gif = await _read_upload(file, settings.max_upload_bytes)
    if not gif:
        raise ApiError(422, "empty_file", "the uploaded file is empty")
    return gif, question


async def _read_gif(request: Request, with_question: bool = False) -> Any:
    """The GIF (and the question) of a multipart or JSON body, limits applied."""
    settings: ServeSettings = request.app.state.settings
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        gif, question = await _read_json(request, settings, with_question)
    elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        gif, question = await _read_form(request, settings, with_question)
    else:
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data or application/json"
        )
    return (gif, question) if with_question else gif


# --- answering --------------------------------------------------------------------------------


async def _answer(
    request: Request, gif: bytes, questions: list[str], where: str = ""
) -> tuple[list[dict], LoadedModel]:
    state = request.app.state
    try:  # cheap structural checks first, so bad GIFs never queue
        await run_in_threadpool(probe_gif, gif, state.settings.gif_limits)
    except GifError as exc:
        raise ApiError(422, exc.reason, f"{where}not a usable GIF: {exc.message}") from exc
    out, model = await state.batcher.submit(gif, questions)
    for q in questions:
        state.metrics.questions.labels(guess_qtype(q)).inc()
    return out, model


def _answer_out(out: dict, model: LoadedModel, start: float, metrics: Metrics) -> AnswerOut:
    if out.get("in_domain") is not None:
        metrics.in_domain.labels(str(out["in_domain"]).lower()).inc()
    return AnswerOut(
        answer=out["answer"],
        confidence=out["confidence"],
        keyframes=out["keyframes"],
        n_frames=out["n_frames"],
        in_domain=out.get("in_domain"),
        domain_distance=out.get("domain_distance"),
        model_version=model.version,
        latency_ms=round((time.perf_counter() - start) * 1000, 2),
    )


@router.post("/v1/answer", response_model=AnswerOut, responses=ERRORS, openapi_extra=ANSWER_BODY)
async def answer_one(request: Request, metrics: MetricsDep) -> AnswerOut:
    """Answer one question about one GIF: a multipart form (`file`, `question`), or JSON
    (`gif` base64-encoded, `question`)."""
    start = time.perf_counter()
    gif, question = await _read_gif(request, with_question=True)
    # readiness after the body: a bad or oversized body is refused the same either way
    get_slot(request)
    out, model = await _answer(request, gif, [question])
    return _answer_out(out[0], model, start, metrics)


@router.post("/v1/answer:batch", response_model=BatchOut, responses=ERRORS)
async def answer_many(
    request: Request, body: BatchIn, slot: SlotDep, settings: SettingsDep, metrics: MetricsDep
) -> BatchOut:
    """Answer several questions at once, each about its own GIF (base64); items with the
    same GIF bytes share one decode. Any refused item refuses the request, naming it."""
    start = time.perf_counter()
    if not body.items:
        raise ApiError(422, "empty_batch", "`items` is empty")
    if len(body.items) > settings.max_batch_items:
        raise ApiError(
            422,
            "too_many_items",
            f"{len(body.items)} items; the limit is {settings.max_batch_items}",
        )
    groups: dict[bytes, list[int]] = {}
    questions = []
    for i, item in enumerate(body.items):
        where = f"item {i}: "
        questions.append(_check_question(item.question, settings.max_question_chars, where))
        groups.setdefault(_decode_b64(item.gif, settings.max_upload_bytes, where), []).append(i)
    # every GIF is checked before any queues: a bad item refuses the request up front
    for gif, rows in groups.items():
        try:
            await run_in_threadpool(probe_gif, gif, settings.gif_limits)
        except GifError as exc:
            raise ApiError(
                422, exc.reason, f"item {rows[0]}: not a usable GIF: {exc.message}"
            ) from exc
    results = await asyncio.gather(
        *(_answer(request, gif, [questions[r] for r in rows]) for gif, rows in groups.items())
    )
    answers: list[AnswerOut | None] = [None] * len(questions)
    for rows, (out, model) in zip(groups.values(), results, strict=True):
        for r, o in zip(rows, out, strict=True):
            answers[r] = _answer_out(o, model, start, metrics)
    return BatchOut(answers=answers)


@router.get("/v1/model", response_model=ModelOut, responses={503: {"model": ErrorOut}})
async def model_info(slot: SlotDep) -> ModelOut:
    """The version being served: its registry name, alias, run and benchmark scores."""
    m = slot.model
    return ModelOut(
        name=m.info.get("name"),
        version=m.version,
        alias=m.info.get("alias"),
        uri=m.uri,
        run_id=m.info.get("run_id"),
        digest=m.info.get("digest"),
        scores=m.info.get("scores", {}),
        vision_runtime=m.info.get("vision_runtime"),
        last_error=slot.last_error,
    )


@router.get(
    "/v1/search",
    response_model=SearchOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
async def search(
    request: Request,
    q: Annotated[
        str,
        Query(
            min_length=1, max_length=MAX_QUESTION_CHARS, examples=["a red circle is moving left"]
        ),
    ],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SearchOut:
    """The indexed corpus' GIFs a text describes, best first (CLIP text tower against
    GIF-level embeddings)."""
    engine = request.app.state.search
    if engine is None:
        raise ApiError(404, "search_disabled", "no search index is configured (GIFQA_SEARCH_DIR)")
    if not q.strip():
        raise ApiError(422, "empty_query", "`q` is empty")
    hits = await request.app.state.model_thread.run(engine.search, [q.strip()], k)
    return SearchOut(query=q.strip(), hits=[SearchHit(**h) for h in hits[0]])


# --- the page ---------------------------------------------------------------------------------


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
    for i, frame in zip(
        indices, decode_frames(gif, indices=indices, size=STRIP_SIZE, limits=limits), strict=True
    ):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        out.append((int(i), "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()))
    return out


def page_html(search: bool) -> str:
    """The page, its search box only when the server has a search index (GIFQA_SEARCH_DIR):
    the page offers only what works."""
    text = PAGE.read_text()
    if not search:
        start, end = text.index("<!-- search -->"), text.index("<!-- /search -->")
        text = text[:start] + text[end + len("<!-- /search -->") :]
    return text


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> HTMLResponse:
    """The page: pick or upload a GIF, ask, see the answer and the keyframes; search."""
    return HTMLResponse(page_html(request.app.state.search is not None))


@router.get("/v1/samples", response_model=SamplesOut)
async def samples() -> SamplesOut:
    """Sample GIFs (ShapesWorld scenes the model never trained on) to try the page with."""
    return SamplesOut(samples=[f"/v1/samples/{i}.gif" for i in range(N_SAMPLES)])


@router.get(
    "/v1/samples/{n}.gif",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}}, 404: {"model": ErrorOut}},
)
async def sample(n: int) -> Response:
    if not 0 <= n < N_SAMPLES:
        raise ApiError(404, "no_such_sample", f"samples are 0 to {N_SAMPLES - 1}")
    return Response(await run_in_threadpool(sample_gif, n), media_type="image/gif")


@router.post(
    "/v1/describe", response_model=DescribeOut, responses=ERRORS, openapi_extra=FRAMES_BODY
)
async def describe(request: Request) -> DescribeOut:
    """The model's description of the whole GIF: multipart `file`, or JSON `gif` (base64)."""
    start = time.perf_counter()
    gif = await _read_gif(request)
    loaded = get_slot(request).model
    try:
        await run_in_threadpool(probe_gif, gif, request.app.state.settings.gif_limits)
        out = await request.app.state.model_thread.run(loaded.predictor.describe, gif)
    except GifError as exc:
        raise ApiError(422, exc.reason, f"not a usable GIF: {exc.message}") from exc
    return DescribeOut(
        **out,
        model_version=loaded.version,
        latency_ms=round((time.perf_counter() - start) * 1000, 2),
    )


@router.post("/v1/frames", response_model=FramesOut, responses=ERRORS, openapi_extra=FRAMES_BODY)
async def frames(request: Request, settings: SettingsDep) -> FramesOut:
    """The frames the model can look at (the ones the index caches), as small PNGs with
    their source frame index: the page's strip. Multipart `file`, or JSON `gif`."""
    gif = await _read_gif(request)
    try:
        slot = request.app.state.slot
        model = slot.model if slot is not None else None
        # the model's own frame count; a fake without index params gets the default
        params = getattr(getattr(model, "predictor", None), "params", None) or IndexParams()
        strip = await run_in_threadpool(
            frame_strip, gif, settings.gif_limits, params.frames_per_gif
        )
    except GifError as exc:
        raise ApiError(422, exc.reason, f"not a usable GIF: {exc.message}") from exc
    return FramesOut(frames=[FrameOut(index=i, png=png) for i, png in strip])


# --- probes and operations --------------------------------------------------------------------


@router.get("/healthz", response_model=StatusOut)
async def healthz() -> StatusOut:
    """Alive: the process answers (a model may still be loading)."""
    return StatusOut(status="alive")


@router.get("/readyz", response_model=StatusOut, responses={503: {"model": ErrorOut}})
async def readyz(request: Request) -> StatusOut:
    """Ready: a model is loaded and takes requests."""
    slot = getattr(request.app.state, "slot", None)
    if slot is None or slot.model is None:
        error = slot.last_error if slot is not None else None
        raise ApiError(
            503,
            "not_ready",
            "no model is loaded" + (f" (last load failed: {error})" if error else ""),
        )
    return StatusOut(status="ready", model_version=slot.model.version)


@router.get(
    "/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}}
)
async def prometheus(metrics: MetricsDep) -> Response:
    """Prometheus text format: requests by route and status, latency, model version,
    reloads, rejects by reason, batch sizes, queue depth, questions by kind."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/v1/admin/reload",
    response_model=ReloadOut,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
async def reload(request: Request, settings: SettingsDep) -> ReloadOut:
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


def moved_alias(notice: Any) -> tuple[str, str] | None:
    """(model, alias) of an alias move: gifqa's own notice or MLflow's registry webhook."""
    if not isinstance(notice, dict):
        return None
    if notice.get("event") == "alias_moved":
        return str(notice.get("model")), str(notice.get("alias"))
    data = notice.get("data")
    if (notice.get("entity"), notice.get("action")) == ("model_version_alias", "created") and (
        isinstance(data, dict)
    ):
        return str(data.get("name")), str(data.get("alias"))
    return None


@router.post(
    "/v1/notices",
    status_code=202,
    response_model=NoticeOut,
    responses={400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
async def notice(request: Request, settings: SettingsDep) -> NoticeOut:
    """An alias moved (a gifqa notice or an MLflow registry webhook, signed with
    `GIFQA_WEBHOOK_SECRET`): when it is the alias this server follows, the registry is read
    now instead of at the next poll. The notice is only a hint: the version comes from the
    registry, never from the body."""
    if settings.webhook_secret is None:
        raise ApiError(404, "notices_disabled", "no webhook secret is configured")
    body = await request.body()
    try:
        sender = verify(request.headers, body, settings.webhook_secret.get_secret_value())
    except NoticeError as err:
        raise ApiError(401, "unauthorized", str(err)) from None
    try:
        moved = moved_alias(json.loads(body))
    except ValueError:
        raise ApiError(400, "bad_notice", "the notice is not JSON") from None
    if moved is None or moved != followed_alias(settings.model_uri) or settings.model_dir:
        return NoticeOut(result="ignored", sender=sender)
    request.app.state.slot.refresh_soon()
    return NoticeOut(result="checking", sender=sender)
