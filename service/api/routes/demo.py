"""The demo page at ``/`` and the sample images it can try the model on.

The page itself (``service/static``) is plain HTML and JavaScript that calls the same
public endpoints any client does: /metadata for the class table and σ, /predict with
``overlay=true`` for the pictures. ``/demo/sample.png`` serves one of the images that
scene-export wrote next to the model (``samples/``, scenes never trained on, at the
model's input size), so anyone can try the service without an image of their own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response

from scene_contract.model import SAMPLES_DIR
from service.api.deps import RuntimeDep, SettingsDep, require_token
from service.errors import NotFoundError
from service.schemas import ErrorResponse

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


def sample_paths(model_path: Path) -> list[Path]:
    """The sample PNGs next to the model, in name order; empty if it has none."""
    return sorted((model_path.parent / SAMPLES_DIR).glob("*.png"))


@router.get(
    "/demo/sample.png",
    dependencies=[Depends(require_token)],
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "A PNG at the model's input size."},
        401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
        404: {"model": ErrorResponse, "description": "The model came without sample images."},
        503: {"model": ErrorResponse, "description": "The model is still loading."},
    },
    summary="A street scene to try the model on",
)
def sample(
    runtime: RuntimeDep,
    settings: SettingsDep,
    seed: Annotated[int, Query(ge=0, le=MAX_SEED, description="Same seed, same scene.")] = 0,
) -> Response:
    """Sample ``seed`` (modulo the number of samples) from the model's ``samples/`` folder."""
    paths = sample_paths(settings.model_path)
    if not paths:
        raise NotFoundError(
            f"no sample images next to the model ({settings.model_path.parent / SAMPLES_DIR}); "
            "scene-export writes them"
        )
    data = paths[seed % len(paths)].read_bytes()
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=86400"})
