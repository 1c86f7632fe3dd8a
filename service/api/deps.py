"""Request dependencies as ``Annotated`` aliases: the app's state, settings, model, auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import NotFoundError, NotReadyError, UnauthorizedError
from service.pipeline import Pipeline
from service.runtime import ModelRuntime
from service.settings import Settings
from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    """The `ServiceState` that `service.main.create_app` attached to the app."""
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_app_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_runtime(state: StateDep) -> ModelRuntime:
    """The loaded model, warm or not (its card and metadata are known once it is loaded)."""
    if state.runtime is None:
        raise NotReadyError("the model is still loading")
    return state.runtime


RuntimeDep = Annotated[ModelRuntime, Depends(get_runtime)]


def get_ready_pipeline(state: StateDep) -> Pipeline:
    """The prediction pipeline, only once warm-up is done."""
    if state.pipeline is None or not state.ready:
        raise NotReadyError(state.warm_up_error or "the model is still warming up; retry shortly")
    return state.pipeline


PipelineDep = Annotated[Pipeline, Depends(get_ready_pipeline)]


def served_model(runtime: ModelRuntime, name: str, version: str | None = None) -> ModelRuntime:
    """``runtime`` when ``name`` (and ``version``, if given) is what it is served as; else 404,
    without saying which model is served."""
    if name != runtime.name or (version is not None and version != runtime.card.version):
        described = f"{name!r}" if version is None else f"{name!r} version {version!r}"
        raise NotFoundError(f"no model named {described} here")
    return runtime


_bearer = HTTPBearer(auto_error=False, description="Needed only when the server sets SCENE_API_TOKEN.")


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Check ``Authorization: Bearer <token>`` when ``api_token`` is set; otherwise allow all."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    # Constant-time comparison, so response timing does not leak the token.
    if credentials is None or not hmac.compare_digest(given, expected):
        raise UnauthorizedError(
            "a valid 'Authorization: Bearer <token>' header is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
