"""Liveness and readiness, in this service's style and in KServe's v2 protocol.

The server-wide probes need no API token: orchestrators probe them without secrets.
``/v2/models/{name}/ready`` is about a named model, so it is guarded like the other
model endpoints, and its 404 does not say which model is served.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.api.deps import RuntimeDep, StateDep, require_token, served_model
from service.errors import NotReadyError, UnhealthyError
from service.schemas import ErrorResponse, Status, V2Error, V2Live, V2ModelReady, V2Ready

router = APIRouter(tags=["health"])

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Not ready yet, or warm-up failed."}
}
_V2_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": V2Error, "description": "Not ready yet, or warm-up failed."}
}


def _check_alive(state: StateDep) -> None:
    # A failed warm-up will not fix itself; failing liveness lets the orchestrator restart us.
    if state.warm_up_error is not None:
        raise UnhealthyError(state.warm_up_error)


def _check_ready(state: StateDep) -> None:
    _check_alive(state)
    if not state.ready:
        raise NotReadyError("the model is still loading or warming up")


@router.get("/healthz", response_model=Status, responses=_UNAVAILABLE, summary="Liveness")
def healthz(state: StateDep) -> Status:
    """200 while the process can serve; 503 only if warm-up failed."""
    _check_alive(state)
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses=_UNAVAILABLE, summary="Readiness")
def readyz(state: StateDep) -> Status:
    """200 once the model is loaded and warm; 503 before."""
    _check_ready(state)
    return Status(status="ready")


@router.get("/v2/health/live", response_model=V2Live, responses=_V2_UNAVAILABLE, summary="KServe v2 liveness")
def v2_live(state: StateDep) -> V2Live:
    _check_alive(state)
    return V2Live(live=True)


@router.get(
    "/v2/health/ready", response_model=V2Ready, responses=_V2_UNAVAILABLE, summary="KServe v2 readiness"
)
def v2_ready(state: StateDep) -> V2Ready:
    _check_ready(state)
    return V2Ready(ready=True)


_MODEL_READY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_V2_UNAVAILABLE,
    401: {"model": V2Error, "description": "Missing or wrong bearer token."},
    404: {"model": V2Error, "description": "No model by that name (and version)."},
}


@router.get(
    "/v2/models/{name}/ready",
    response_model=V2ModelReady,
    dependencies=[Depends(require_token)],
    responses=_MODEL_READY_ERRORS,
    summary="Open inference protocol (KServe v2): model readiness",
)
def v2_model_ready(name: str, state: StateDep, runtime: RuntimeDep) -> V2ModelReady:
    served_model(runtime, name)
    _check_ready(state)
    return V2ModelReady(name=runtime.name, ready=True)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    response_model=V2ModelReady,
    dependencies=[Depends(require_token)],
    responses=_MODEL_READY_ERRORS,
    summary="Open inference protocol (KServe v2): readiness of a model version",
)
def v2_model_version_ready(name: str, version: str, state: StateDep, runtime: RuntimeDep) -> V2ModelReady:
    served_model(runtime, name, version)
    _check_ready(state)
    return V2ModelReady(name=runtime.name, ready=True)
