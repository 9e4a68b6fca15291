"""What wraps every request: the app's Prometheus series, the ASGI admission and body-size
limits, the request counter and the handler that turns an :class:`ApiError` into its body."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gifqa_model.serve.schemas import ApiError


class Metrics:
    """The Prometheus series of one app (its own registry, so apps in one process don't mix)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "gifqa_requests", "requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "gifqa_request_seconds",
            "request latency",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.rejects = Counter(
            "gifqa_rejects", "refused requests by reason", ["reason"], registry=r
        )
        self.version = Gauge(
            "gifqa_model_version",
            "registered version being served (-1: a local or unregistered model)",
            registry=r,
        )
        self.ready = Gauge("gifqa_ready", "1 when a model is loaded", registry=r)
        self.reloads = Counter(
            "gifqa_model_reloads", "reload attempts by result", ["result"], registry=r
        )
        self.batch = Histogram(
            "gifqa_batch_requests",
            "requests answered per model call",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.queue = Gauge("gifqa_queue_depth", "requests waiting for the model", registry=r)
        self.in_domain = Counter(
            "gifqa_answers_in_domain",
            "answers by whether their GIF was in domain",
            ["in_domain"],
            registry=r,
        )
        self.questions = Counter(
            "gifqa_questions",
            "questions asked, by the qtype of their form: the mix a drift monitor reads",
            ["qtype"],
            registry=r,
        )


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
            await JSONResponse(
                {
                    "detail": f"{self.inflight} requests are in progress; retry",
                    "reason": "overloaded",
                },
                status_code=429,
                headers={"Retry-After": "1"},
            )(scope, receive, send)
            return
        self.inflight += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


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


CallNext = Callable[[Request], Awaitable[Response]]


def request_counter(metrics: Metrics) -> Callable[[Request, CallNext], Awaitable[Response]]:
    """An ``http`` middleware counting requests by route and status, and timing them."""

    async def _count(request: Request, call_next: CallNext) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        return response

    return _count


def api_error_handler(metrics: Metrics) -> Callable[[Request, ApiError], Awaitable[JSONResponse]]:
    """The exception handler of :class:`ApiError`: its body is ``{detail, reason}``; every
    refusal is counted by its reason."""

    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        metrics.rejects.labels(exc.reason).inc()
        return JSONResponse(
            {"detail": exc.detail, "reason": exc.reason},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    return _api_error
