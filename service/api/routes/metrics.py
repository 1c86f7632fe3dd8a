"""GET /metrics: Prometheus exposition text (all workers' in multiprocess mode; see `service.metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.metrics import render_metrics

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
    summary="Prometheus metrics",
)
def prometheus_metrics() -> Response:
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
