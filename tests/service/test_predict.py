"""POST /predict through HTTP: response contents, image formats, options.

The request shapes are tests/service/test_upload.py's, the .npz body test_responses.py's."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from scene_contract.card import ModelCard
from service.encoding import DepthEncoding, decode_depth_png, decode_png, from_base64
from service.main import create_app
from service.settings import Settings
from training.data.classes import train_id

pytestmark = pytest.mark.anyio

CAR, ROAD, SKY = train_id("car"), train_id("road"), train_id("sky")
Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def png_array(b64: str) -> npt.NDArray[Any]:
    """A base64 PNG from a response as an array (uint16 for 16-bit PNGs)."""
    return decode_png(from_base64(b64))


def encode(rgb: npt.NDArray[np.uint8], image_format: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=image_format, **params)
    return buffer.getvalue()


async def test_raw_png_gives_classes_instances_and_depth_at_original_size(
    client: httpx.AsyncClient, scene_png: bytes, card: ModelCard
) -> None:
    response = await client.post("/predict", content=scene_png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (100, 60)
    assert body["model"] == {
        "name": card.name,
        "version": card.version,
        "execution_provider": "CPUExecutionProvider",
    }
    assert body["task_uncertainty"] == card.to_dict()["task_uncertainty"]
    sigma = {task: uncertainty["sigma"] for task, uncertainty in body["task_uncertainty"].items()}
    assert sigma == pytest.approx({"semantic": 0.5, "instance": 2.0, "depth": 1.0})

    semantic = png_array(body["semantic"]["png"])
    assert semantic.shape == (60, 100) and semantic.dtype == np.uint8
    assert semantic[5, 50] == SKY and semantic[55, 50] == ROAD and semantic[30, 50] == CAR
    classes = {c["name"]: c for c in body["semantic"]["classes"]}
    assert set(classes) == {"sky", "road", "car"}
    assert sum(c["pixel_fraction"] for c in classes.values()) == pytest.approx(1.0)
    assert classes["car"]["train_id"] == CAR

    instances = body["instances"]
    instance_map = png_array(instances["png"])
    assert instance_map.shape == (60, 100) and instance_map.dtype == np.uint16
    [car] = instances["items"]
    assert car["class"] == "car" and car["class_id"] == CAR
    assert car["pixel_count"] == int((instance_map == car["id"]).sum()) > 0
    x0, y0, x1, y1 = car["bbox"]
    assert 30 <= x0 < x1 <= 70 and 15 <= y0 < y1 <= 45
    assert car["centroid"] == pytest.approx([50, 30], abs=2)

    depth = body["depth"]
    assert png_array(depth["png"]).dtype == np.uint16
    metres = decode_depth_png(
        from_base64(depth["png"]),
        DepthEncoding(depth["scale_to_metres"], depth["min_m"], depth["max_m"], depth["sky_value"]),
    )
    assert metres.shape == (60, 100)
    assert metres[5, 50] == np.inf  # sky: infinitely far
    assert metres[30, 50] == pytest.approx(1.0, abs=0.02)  # red car: inverse depth 255 / 255 per metre
    assert depth["min_m"] == pytest.approx(1.0, abs=0.02)

    assert body["overlay"] is None
    timings = body["timings_ms"]
    assert set(timings) == {"decode", "preprocess", "queue", "inference", "postprocess", "encode", "total"}
    assert all(value >= 0 for value in timings.values())
    assert timings["total"] >= timings["inference"]


async def test_exif_rotation_swaps_width_and_height(
    client: httpx.AsyncClient, scene: npt.NDArray[np.uint8]
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    data = encode(scene, "JPEG", quality=95, exif=exif.tobytes())
    body = (await client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})).json()
    assert (body["width"], body["height"]) == (60, 100)
    # Sky was on top; after the rotation it is on the right.
    semantic = png_array(body["semantic"]["png"])
    assert semantic[50, 55] == SKY and semantic[50, 5] == ROAD


async def test_resolution_model_returns_maps_at_the_model_size(
    client: httpx.AsyncClient, scene_png: bytes, card: ModelCard
) -> None:
    response = await client.post(
        "/predict", params={"resolution": "model"}, content=scene_png, headers={"Content-Type": "image/png"}
    )
    body = response.json()
    size = (card.input.width, card.input.height)
    assert (body["width"], body["height"]) == size
    assert png_array(body["semantic"]["png"]).shape == size[::-1]
    assert png_array(body["instances"]["png"]).shape == size[::-1]


async def test_outputs_selects_what_is_computed_and_returned(
    client: httpx.AsyncClient, scene_png: bytes
) -> None:
    response = await client.post(
        "/predict", params={"outputs": "depth"}, content=scene_png, headers={"Content-Type": "image/png"}
    )
    body = response.json()
    assert body["depth"] is not None
    assert body["semantic"] is None and body["instances"] is None


async def test_overlay_is_an_rgb_png_at_the_map_size(client: httpx.AsyncClient, scene_png: bytes) -> None:
    response = await client.post(
        "/predict",
        params={"overlay": "true", "overlay_alpha": "0.3"},
        content=scene_png,
        headers={"Content-Type": "image/png"},
    )
    overlay = response.json()["overlay"]
    combined, instances, depth = (png_array(overlay[key]) for key in ("png", "instances_png", "depth_png"))
    assert combined.shape == instances.shape == depth.shape == (60, 100, 3)
    # The car (the one instance) is tinted; sky and road outside it keep the image's pixels.
    assert (instances[30, 50] != (255, 0, 0)).any() and (instances[5, 50] == (0, 0, 255)).all()
    # Depth colours: the near car is brighter than the far-off sky.
    assert int(depth[30, 50].sum()) > int(depth[5, 50].sum())


async def test_overlay_pictures_follow_the_outputs_asked_for(
    client: httpx.AsyncClient, scene_png: bytes
) -> None:
    response = await client.post(
        "/predict",
        params={"overlay": "true", "outputs": "semantic"},
        content=scene_png,
        headers={"Content-Type": "image/png"},
    )
    overlay = response.json()["overlay"]
    assert overlay["png"] and overlay["instances_png"] is None and overlay["depth_png"] is None


async def test_optics_grouping_can_be_chosen(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes
) -> None:
    async with serve(create_app(make_settings(instance_method="optics"))) as client:
        response = await client.post("/predict", content=scene_png, headers={"Content-Type": "image/png"})
    [car] = response.json()["instances"]["items"]
    assert car["class"] == "car"
