"""The demo page at ``/`` and the generated street scenes it can draw.

The page itself (``service/static``) is plain HTML and JavaScript that calls the same
public endpoints any client does: /metadata for the class table and σ, /predict with
``overlay=true`` for the pictures. ``/demo/sample.png`` renders a procedural scene from
the test split (never trained on) at the model's input size, so anyone can try the
service without an image of their own.
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from service.api.deps import RuntimeDep, require_token
from service.schemas import ErrorResponse
from training.data.procedural import ProceduralScenes

STATIC_DIR = resources.files("service") / "static"
MAX_SEED = 2**31 - 1

router = APIRouter(tags=["demo"])


@router.get("/", include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    """No icon: 204, so browsers stop asking and logs show no 404 for every page view."""
    return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})


@router.get(
    "/demo/sample.png",
    dependencies=[Depends(require_token)],
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "A PNG at the model's input size."},
        401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
        503: {"model": ErrorResponse, "description": "The model is still loading."},
    },
    summary="A generated street scene to try the model on",
)
def sample(
    runtime: RuntimeDep,
    seed: Annotated[int, Query(ge=0, le=MAX_SEED, description="Same seed, same scene.")] = 0,
) -> Response:
    """Scene ``seed`` of the procedural test split, rendered at the model's input size."""
    height, width = runtime.input_size
    scene = ProceduralScenes(split="test", seed=seed, count=1, height=height, width=width)[0]
    buffer = io.BytesIO()
    Image.fromarray(scene.image).save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=86400"})
