"""Request latency and count metrics for every HTTP request, as a pure ASGI middleware.

A pure ASGI middleware (not ``BaseHTTPMiddleware``) so request bodies stream through
untouched and the body-size limit still sees them chunk by chunk.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics

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
