"""The model card and KServe v2 model metadata."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.api.deps import RuntimeDep, require_token
from service.errors import NotFoundError
from service.schemas import ErrorResponse, V2ModelMetadata

router = APIRouter(tags=["model"], dependencies=[Depends(require_token)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    503: {"model": ErrorResponse, "description": "The model is still loading."},
}


@router.get("/metadata", responses=_ERRORS, summary="Model card")
def metadata(runtime: RuntimeDep) -> dict[str, Any]:
    """The model card exactly as the exporter wrote it into the ONNX metadata."""
    return runtime.card.raw


@router.get(
    "/v2/models/{name}",
    response_model=V2ModelMetadata,
    responses={**_ERRORS, 404: {"model": ErrorResponse, "description": "No model by that name."}},
    summary="KServe v2 model metadata",
)
def v2_model_metadata(name: str, runtime: RuntimeDep) -> V2ModelMetadata:
    if name != runtime.card.name:
        raise NotFoundError(f"no model named {name!r} here")
    return V2ModelMetadata.model_validate(runtime.v2_metadata())
