"""POST /predict through HTTP: request shapes, response contents, options, .npz."""

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
from service.api.routes.predict import wants_npz
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


async def test_multipart_upload_gives_the_same_answer(client: httpx.AsyncClient, scene_png: bytes) -> None:
    raw = await client.post("/predict", content=scene_png, headers={"Content-Type": "image/png"})
    form = await client.post("/predict", files={"image": ("scene.png", scene_png, "image/png")})
    generic = await client.post("/predict", files={"image": ("scene", scene_png, "application/octet-stream")})
    assert form.status_code == generic.status_code == 200
    assert form.json()["semantic"] == raw.json()["semantic"] == generic.json()["semantic"]


@pytest.mark.parametrize(("image_format", "media_type"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
async def test_jpeg_and_webp_bodies(
    client: httpx.AsyncClient, scene: npt.NDArray[np.uint8], image_format: str, media_type: str
) -> None:
    data = encode(scene, image_format, quality=95)
    response = await client.post("/predict", content=data, headers={"Content-Type": media_type})
    assert response.status_code == 200, response.text
    assert {c["name"] for c in response.json()["semantic"]["classes"]} >= {"sky", "road", "car"}


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


async def test_npz_response_has_raw_arrays(client: httpx.AsyncClient, scene_png: bytes) -> None:
    response = await client.post(
        "/predict",
        content=scene_png,
        headers={"Content-Type": "image/png", "Accept": "application/x-npz"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-npz"
    assert "inference;dur=" in response.headers["server-timing"]
    with np.load(io.BytesIO(response.content), allow_pickle=False) as arrays:
        assert arrays["semantic"].shape == (60, 100) and arrays["semantic"].dtype == np.uint8
        assert arrays["semantic_confidence"].dtype == np.float32
        assert arrays["instance_map"].shape == (60, 100) and arrays["instance_map"].dtype == np.uint16
        assert arrays["instance_offsets"].shape == (2, 60, 100)
        assert arrays["inverse_depth"].shape == (60, 100) and arrays["inverse_depth"].dtype == np.float32
        assert arrays["inverse_depth"][5, 50] == 0.0
        # Red car pixels: inverse depth = red / 255 = 1 per metre.
        assert arrays["inverse_depth"][30, 50] == pytest.approx(1.0)
        assert arrays["semantic"][30, 50] == CAR
        assert arrays["instance_bboxes"].shape == (len(arrays["instance_ids"]), 4)
        assert arrays["instance_class_ids"].tolist() == [CAR]


async def test_npz_honours_outputs(client: httpx.AsyncClient, scene_png: bytes) -> None:
    response = await client.post(
        "/predict",
        params={"outputs": "semantic"},
        content=scene_png,
        headers={"Content-Type": "image/png", "Accept": "application/x-npz"},
    )
    with np.load(io.BytesIO(response.content), allow_pickle=False) as arrays:
        assert set(arrays.files) == {"semantic", "semantic_confidence"}


async def test_optics_grouping_can_be_chosen(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes
) -> None:
    async with serve(create_app(make_settings(instance_method="optics"))) as client:
        response = await client.post("/predict", content=scene_png, headers={"Content-Type": "image/png"})
    [car] = response.json()["instances"]["items"]
    assert car["class"] == "car"


@pytest.mark.parametrize(
    ("accept", "npz"),
    [
        ("application/x-npz", True),
        ("application/json;q=0.5, application/x-npz", True),
        ("Application/X-NPZ; q=0.8", True),
        ("application/x-npz;q=0", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_accept_header_picks_npz_only_when_wanted(accept: str | None, npz: bool) -> None:
    assert wants_npz(accept) is npz
