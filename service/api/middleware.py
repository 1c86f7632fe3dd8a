"""Per-request middleware: latency and count metrics, and the request id.

Pure ASGI middlewares (not ``BaseHTTPMiddleware``) so request bodies stream through
untouched and the body-size limit still sees them chunk by chunk.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.logs import REQUEST_ID

UNMATCHED_ROUTE = "unmatched"


class RequestMetricsMiddleware:
    """Observe ``scene_request_duration_seconds`` and ``scene_requests_total``.

    The route label is the matched route's template (``/v2/models/{name}``), never the
    raw path, so unknown paths cannot blow up the number of series.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            # The router fills in scope["route"] on a match.
            label = getattr(route, "path", UNMATCHED_ROUTE)
            status = metrics.status_class(status_code)
            metrics.REQUEST_LATENCY.labels(route=label, status_class=status).observe(
                time.perf_counter() - started
            )
            metrics.REQUESTS.labels(route=label, status_class=status).inc()


REQUEST_ID_HEADER = "X-Request-ID"
# What a client's id may be: it is copied into log lines and a response header, so no
# spaces, quotes or control characters, and not unbounded.
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


class RequestIdMiddleware:
    """Give every request an id: the client's ``X-Request-ID`` when it is a sane token, else a
    new UUID. It is in `service.logs.REQUEST_ID` while the request runs (so in every log
    line of it) and in the response's ``X-Request-ID``, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = given if _ACCEPTED_ID.fullmatch(given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
