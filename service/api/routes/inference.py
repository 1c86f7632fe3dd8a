"""The open inference protocol (KServe v2, Triton's HTTP API): server metadata and infer.

Health, readiness and model metadata are in `health` and `models`; the request and
response bodies are `service.open_inference`'s. Errors under /v2 are the protocol's
``{"error": "<message>"}`` (`service.errors`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from scene_contract.model import INPUT_NAME, OUTPUT_NAMES
from service import metrics
from service.api.deps import PipelineDep, require_token, served_model
from service.disconnect import cancel_on_disconnect
from service.errors import OutputTooLargeError
from service.limits import BodyPace, check_request
from service.open_inference import EXTENSIONS, HEADER_LENGTH, encode_response, parse_request
from service.schemas import V2Error, V2ServerMetadata
from service.settings import Settings
from service.upload import read_body

router = APIRouter(tags=["open inference protocol"])


def _error(description: str) -> dict[str, Any]:
    return {"model": V2Error, "description": description}


_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"JSON, or with binary outputs a JSON header of {HEADER_LENGTH} bytes and the "
        "outputs' raw bytes after it.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    400: _error(
        "Wrong input name, datatype or shape; an unknown output; a broken binary layout; or an "
        "encoded image that cannot be decoded."
    ),
    401: _error("Missing or wrong bearer token (only when the server sets an API token)."),
    404: _error("No model by that name (and version)."),
    408: _error("The body arrived too slowly or not within the server's body timeout."),
    413: _error(
        "Body over the byte limit, an image over a pixel limit, or outputs over the output-pixel limit."
    ),
    503: _error("Model not ready yet, or the queue is full (see Retry-After)."),
    504: _error("The request took longer than the server's request timeout."),
}
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request: JSON, or with the binary tensor data extension a JSON header "
        f"({HEADER_LENGTH} bytes) followed by the inputs' raw bytes.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.get(
    "/v2", response_model=V2ServerMetadata, summary="Open inference protocol (KServe v2): server metadata"
)
def server_metadata(request: Request) -> V2ServerMetadata:
    """The server's name and version, and the protocol extensions it serves."""
    return V2ServerMetadata(name=request.app.title, version=request.app.version, extensions=list(EXTENSIONS))


@router.post(
    "/v2/models/{name}/infer",
    dependencies=[Depends(require_token)],
    response_class=Response,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
    summary="Open inference protocol (KServe v2): infer",
)
async def infer(name: str, request: Request, pipeline: PipelineDep) -> Response:
    """Run the model on an image tensor (UINT8 [N, H, W, 3] at the model's input size) or on
    encoded images (BYTES [N]); returns the model's outputs by name (see /v2/models/{name})."""
    return await _infer(request, pipeline, name, None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    dependencies=[Depends(require_token)],
    response_class=Response,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
    summary="Open inference protocol (KServe v2): infer on a model version",
)
async def infer_version(name: str, version: str, request: Request, pipeline: PipelineDep) -> Response:
    return await _infer(request, pipeline, name, version)


async def _infer(request: Request, pipeline: PipelineDep, name: str, version: str | None) -> Response:
    runtime = served_model(pipeline.runtime, name, version)
    settings = pipeline.settings
    # Counted with /predict: the autoscalers read this gauge, whichever API the load uses.
    with metrics.IN_FLIGHT.track_inprogress():
        body = await read_body(request, settings.max_body_bytes, BodyPace(settings))
        parsed = parse_request(
            body,
            request.headers.get(HEADER_LENGTH),
            input_name=INPUT_NAME,
            input_size=runtime.input_size,
            output_names=OUTPUT_NAMES,
        )
        _check_batch(parsed.encoded, parsed.batch_size, runtime.input_size, settings)
        images = parsed.encoded if parsed.encoded is not None else parsed.images
        assert images is not None
        outputs = await cancel_on_disconnect(request.receive, pipeline.infer(images))
        datatypes = {spec.name: spec.datatype for spec in runtime.outputs}
        content, media_type, headers = encode_response(
            runtime.name, runtime.card.version, parsed.id, outputs, parsed.outputs, datatypes
        )
        return Response(content, media_type=media_type, headers=headers)


def _check_batch(
    encoded: list[bytes] | None, batch_size: int, input_size: tuple[int, int], settings: Settings
) -> None:
    """Refuse, before any work, outputs over the response budget and encoded images over a limit."""
    height, width = input_size
    if batch_size * height * width > settings.max_output_pixels:
        raise OutputTooLargeError(
            f"{batch_size} images of {width}×{height} make {batch_size * height * width:,} output "
            f"pixels; the limit is {settings.max_output_pixels:,} (SCENE_MAX_OUTPUT_PIXELS); send "
            "fewer images per request"
        )
    for data in encoded or ():
        check_request(data, settings, maps_at_image_size=False)
