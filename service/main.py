"""Builds the FastAPI app; nothing else happens here.

``create_app(settings)`` is the factory: tests pass their own `Settings`; uvicorn calls
it with none (``uvicorn service.main:create_app --factory``), and the settings then come
from ``SCENE_*`` environment variables through `get_settings`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from service.api.middleware import REQUEST_ID_HEADER, RequestIdMiddleware, RequestMetricsMiddleware
from service.api.routes import api_router
from service.api.routes.demo import STATIC_DIR
from service.errors import install_error_handlers
from service.settings import Settings, get_settings
from service.state import ServiceState

DESCRIPTION = """\
Per-pixel semantic classes, instances and inverse depth from one multi-task network,
served with ONNX Runtime. POST an image to **/predict**; try it in a browser at **/**.

Errors are always `{"error": {"code": ..., "message": ...}}`. When the server sets
`SCENE_API_TOKEN`, /predict, /metadata, /v2/models/{name}, /v2/models/{name}/ready and
/demo/sample.png need `Authorization: Bearer <token>`; health, readiness, /metrics and
these docs do not.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app serving the model named by ``settings`` (default: from the environment)."""
    settings = settings if settings is not None else get_settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(title="scene-mtl", description=DESCRIPTION, version="0.1.0", lifespan=lifespan)
    app.state.service = state
    install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept", REQUEST_ID_HEADER],
            expose_headers=["Retry-After", "Server-Timing", REQUEST_ID_HEADER],
        )
    app.include_router(api_router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    if settings.api_token is None:
        app.openapi = _openapi_without_auth(app)  # type: ignore[method-assign]
    # Outside Starlette's own outermost error middleware, so a 500 carries the id too.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: RequestIdMiddleware(build_stack())  # type: ignore[method-assign]
    return app


def _openapi_without_auth(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` for a server without a token: no bearer scheme and no 401s, which the
    guarded routes would otherwise declare although nothing asks for a token."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)  # builds and caches app.openapi_schema, edited in place here
        schema.get("components", {}).pop("securitySchemes", None)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
        return schema

    return openapi
