"""The model card and the open inference protocol's (KServe v2) model metadata."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.api.deps import RuntimeDep, require_token, served_model
from service.schemas import ErrorResponse, V2Error, V2ModelMetadata

router = APIRouter(tags=["model"], dependencies=[Depends(require_token)])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    503: {"model": ErrorResponse, "description": "The model is still loading."},
}
_V2_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": V2Error, "description": "Missing or wrong bearer token."},
    503: {"model": V2Error, "description": "The model is still loading."},
}


@router.get("/metadata", responses=_ERRORS, summary="Model card")
def metadata(runtime: RuntimeDep) -> dict[str, Any]:
    """The model card in the ONNX metadata, as the exporter writes it.

    Fields a card from an older exporter lacks come back with the values they stood
    for (`scene_contract.card`).
    """
    return runtime.card.to_dict()


@router.get(
    "/v2/models/{name}",
    response_model=V2ModelMetadata,
    responses={**_V2_ERRORS, 404: {"model": V2Error, "description": "No model by that name."}},
    summary="Open inference protocol (KServe v2): model metadata",
)
def v2_model_metadata(name: str, runtime: RuntimeDep) -> V2ModelMetadata:
    """The served name, the card's version and the tensors /v2/models/{name}/infer takes and gives."""
    return V2ModelMetadata.model_validate(served_model(runtime, name).v2_metadata())


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_model=V2ModelMetadata,
    responses={**_V2_ERRORS, 404: {"model": V2Error, "description": "No model by that name and version."}},
    summary="Open inference protocol (KServe v2): model metadata of a version",
)
def v2_model_version_metadata(name: str, version: str, runtime: RuntimeDep) -> V2ModelMetadata:
    return V2ModelMetadata.model_validate(served_model(runtime, name, version).v2_metadata())
