"""POST /predict: one image in, semantic classes, instances and depth out (JSON or .npz)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from service import metrics
from service.api.deps import PipelineDep, require_token
from service.disconnect import cancel_on_disconnect
from service.limits import BodyPace, check_request
from service.prediction import PredictOptions
from service.responses import NPZ_MEDIA_TYPE
from service.schemas import ErrorResponse, PredictResponse, RequestedOutput, Resolution
from service.upload import IMAGE_FIELD, IMAGE_MEDIA_TYPES, MULTIPART, read_image_bytes

router = APIRouter(tags=["predict"], dependencies=[Depends(require_token)])

_OUTPUT_NAMES = "|".join(RequestedOutput)
_OUTPUTS_PATTERN = rf"^({_OUTPUT_NAMES})(,({_OUTPUT_NAMES}))*$"
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image as the raw body, or as the file field 'image' of a multipart form.",
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": [IMAGE_FIELD],
                    "properties": {IMAGE_FIELD: {"type": "string", "format": "binary"}},
                }
            },
            **{media_type: _BINARY for media_type in IMAGE_MEDIA_TYPES},
        },
    }
}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"JSON by default; the raw arrays as .npz with 'Accept: {NPZ_MEDIA_TYPE}'.",
        "content": {NPZ_MEDIA_TYPE: _BINARY},
    },
    400: _error("Empty body, corrupt or truncated image, or malformed multipart data."),
    401: _error("Missing or wrong bearer token (only when the server sets an API token)."),
    408: _error("The body arrived too slowly or not within the server's body timeout."),
    413: _error(
        "Body over the byte limit; image over the pixel, width or height limit; or maps over the "
        "output-pixel limit with resolution=original (ask for resolution=auto or model)."
    ),
    415: _error("Not PNG, JPEG or WebP (raw) and not multipart/form-data."),
    422: _error(
        "Bad query parameter, a multipart body without an 'image' file, or an image whose aspect ratio "
        "is over the limit."
    ),
    503: _error("Model not ready yet, or the queue is full (see Retry-After)."),
    504: _error("The request took longer than the server's request timeout."),
}


def wants_npz(accept: str | None) -> bool:
    """True when the Accept header names ``application/x-npz`` with a quality above 0."""
    for part in (accept or "").split(","):
        kind, *parameters = (piece.strip().lower() for piece in part.split(";"))
        if kind != NPZ_MEDIA_TYPE:
            continue
        quality = next((p.removeprefix("q=") for p in parameters if p.startswith("q=")), "1")
        try:
            return float(quality) > 0
        except ValueError:
            return True
    return False


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=_RESPONSES,
    openapi_extra=_REQUEST_BODY,
    summary="Segment an image and estimate its depth",
)
async def predict(
    request: Request,
    pipeline: PipelineDep,
    outputs: Annotated[
        str,
        Query(
            pattern=_OUTPUTS_PATTERN,
            description=f"Comma-separated subset of {', '.join(RequestedOutput)}.",
        ),
    ] = ",".join(RequestedOutput),
    resolution: Annotated[
        Resolution,
        Query(
            description="'auto': maps at the image's size when they fit the output budget, else the "
            "largest size with its aspect ratio that does; 'original': at the image's size, refused "
            "over the budget; 'model': at the model's input size."
        ),
    ] = Resolution.auto,
    overlay: Annotated[bool, Query(description="Also return a coloured overlay PNG.")] = False,
    overlay_alpha: Annotated[float, Query(ge=0.0, le=1.0, description="Overlay opacity.")] = 0.5,
) -> Any:
    """Run the model on one image.

    Send the image as the raw body (``Content-Type: image/png``, ``image/jpeg`` or
    ``image/webp``) or as the file field ``image`` of a ``multipart/form-data`` body.
    EXIF orientation is applied first; any colour mode is converted to RGB.
    """
    settings = pipeline.settings
    with metrics.IN_FLIGHT.track_inprogress():
        data = await read_image_bytes(request, settings.max_body_bytes, BodyPace(settings))
        options = PredictOptions(
            outputs=frozenset(RequestedOutput(name) for name in outputs.split(",")),
            resolution=resolution,
            overlay=overlay,
            overlay_alpha=overlay_alpha,
            npz=wants_npz(request.headers.get("accept")),
        )
        # From the header alone, so an image over a limit costs no decoding and no memory.
        check_request(data, settings, maps_at_image_size=resolution is Resolution.original)
        answer = await cancel_on_disconnect(request.receive, pipeline.predict(data, options))
        return Response(answer.body, media_type=answer.media_type, headers=answer.headers)
