"""What one request may cost: shape limits and the response budget, settled from the header
before anything is decoded, each refusal quoting the configured limit."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service import pipeline
from service.encoding import decode_png, from_base64
from service.limits import check_image, image_size, largest_fitting_size
from service.main import create_app
from service.settings import Settings

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
PNG = {"Content-Type": "image/png"}
NPZ = {"Accept": "application/x-npz"}


def blank(width: int, height: int, kind: str = "PNG") -> bytes:
    """A black greyscale image: a few hundred bytes however many pixels it has."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format=kind)
    return buffer.getvalue()


def assert_refused(response: httpx.Response, status: int, code: str, *quotes: str) -> str:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    message: str = error["message"]
    for quote in quotes:
        assert quote in message, message
    return message


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image is decoded: the limits must be settled from the header."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(pipeline, "decode_upload", refuse)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP"])
def test_the_header_gives_the_size(kind: str) -> None:
    assert image_size(blank(300, 20, kind)) == (300, 20)


def test_bytes_without_a_known_header_have_no_size() -> None:
    assert image_size(b"GIF89a...") is None
    assert image_size(blank(30, 20)[:20]) is None  # cut inside the header


async def test_a_long_thin_image_is_refused_by_width(client: httpx.AsyncClient, no_decoding: None) -> None:
    # 564 bytes that would come back as 76 MB of maps before the width limit existed.
    response = await client.post("/predict", content=blank(200_000, 20), headers=PNG | NPZ)
    assert_refused(response, 413, "image_too_wide", "200000", "8192", "SCENE_MAX_WIDTH")


async def test_height_and_aspect_ratio_have_their_own_messages(
    make_settings: Callable[..., Settings], serve: Serve, no_decoding: None
) -> None:
    settings = make_settings(max_height=500, max_aspect_ratio=4)
    async with serve(create_app(settings)) as client:
        tall = await client.post("/predict", content=blank(100, 501), headers=PNG)
        wide = await client.post("/predict", content=blank(410, 100), headers=PNG)
    assert_refused(tall, 413, "image_too_tall", "501", "500", "SCENE_MAX_HEIGHT")
    assert_refused(wide, 422, "aspect_ratio_too_large", "4.1:1", "4:1", "SCENE_MAX_ASPECT_RATIO")


async def test_the_pixel_limit_quotes_the_configured_cap(
    make_settings: Callable[..., Settings], serve: Serve, no_decoding: None
) -> None:
    # Over twice the cap, where Pillow's own bomb check used to answer with its threshold.
    async with serve(create_app(make_settings(max_pixels=2_000))) as client:
        response = await client.post("/predict", content=blank(100, 60), headers=PNG)
    message = assert_refused(response, 413, "too_many_pixels", "6,000", "2,000", "SCENE_MAX_PIXELS")
    assert "4000" not in message and "4,000" not in message


@pytest.mark.parametrize("accept", [{}, NPZ], ids=["json", "npz"])
async def test_maps_over_the_output_budget_are_refused_before_any_work(
    make_settings: Callable[..., Settings],
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
    accept: dict[str, str],
) -> None:
    decoded: list[int] = []
    real_decode = pipeline.decode_upload

    def counting_decode(data: bytes, max_pixels: int, at_least: Any = None) -> Any:
        decoded.append(len(data))
        return real_decode(data, max_pixels, at_least)

    monkeypatch.setattr(pipeline, "decode_upload", counting_decode)
    async with serve(create_app(make_settings(max_output_pixels=5_000))) as client:
        refused = await client.post(
            "/predict", params={"resolution": "original"}, content=blank(100, 60), headers=PNG | accept
        )
        assert not decoded, "the over-budget request was decoded"
        at_model_size = await client.post(
            "/predict", params={"resolution": "model"}, content=blank(100, 60), headers=PNG | accept
        )
        small = await client.post("/predict", content=blank(50, 40), headers=PNG | accept)
    assert_refused(
        refused, 413, "output_too_large", "100×60", "6,000", "5,000", "resolution=auto", "resolution=model"
    )
    assert at_model_size.status_code == 200 and small.status_code == 200
    if accept:
        arrays = np.load(io.BytesIO(at_model_size.content), allow_pickle=False)
        assert arrays["semantic"].shape == (32, 48)


async def test_the_default_budget_bounds_the_npz_of_a_4096_square_image(
    client: httpx.AsyncClient, no_decoding: None
) -> None:
    # A 58 KB upload that used to come back as a 318.8 MB npz.
    response = await client.post(
        "/predict", params={"resolution": "original"}, content=blank(4096, 4096), headers=PNG | NPZ
    )
    assert_refused(response, 413, "output_too_large", "16,777,216", "2,097,152")


def test_limits_are_checked_in_order_of_what_the_client_can_fix() -> None:
    settings = Settings(max_width=100, max_height=100, max_pixels=50, max_output_pixels=10)
    with pytest.raises(Exception, match="wide"):
        check_image(101, 1, settings, output_size=None)
    check_image(10, 5, settings, output_size=None)  # pixels 50: at the limit, and no maps at its size
    with pytest.raises(Exception, match="output pixels"):
        check_image(10, 5, settings, output_size=(10, 5))


@pytest.mark.parametrize(
    ("height", "width", "budget"),
    [
        (3024, 4032, 2_097_152),
        (4032, 3024, 2_097_152),
        (1080, 1920, 1_000_000),
        (7, 1000, 500),
        (99, 101, 97),
    ],
)
def test_the_largest_fitting_size_keeps_the_aspect_ratio(height: int, width: int, budget: int) -> None:
    fitted_height, fitted_width = largest_fitting_size(height, width, budget)
    assert fitted_height * fitted_width <= budget
    # The short side is the long side's, rounded: within half a pixel of the image's ratio.
    if width >= height:
        assert abs(fitted_height - fitted_width * height / width) <= 0.5
        bigger = (round((fitted_width + 1) * height / width), fitted_width + 1)
    else:
        assert abs(fitted_width - fitted_height * width / height) <= 0.5
        bigger = (fitted_height + 1, round((fitted_height + 1) * width / height))
    assert bigger[0] * bigger[1] > budget, "a larger size with the same ratio would have fitted"


def test_an_image_within_the_budget_keeps_its_size() -> None:
    assert largest_fitting_size(60, 100, 6_000) == (60, 100)
    assert largest_fitting_size(60, 100, 6_001) == (60, 100)


async def map_size(client: httpx.AsyncClient, image: bytes, **params: str) -> dict[str, Any]:
    response = await client.post("/predict", params=params, content=image, headers=PNG)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    semantic = decode_png(from_base64(body["semantic"]["png"]))
    assert semantic.shape == (body["height"], body["width"])
    return body


async def test_auto_is_the_default_and_scales_only_images_over_the_budget(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    async with serve(create_app(make_settings(max_output_pixels=6_000))) as client:
        under = await map_size(client, blank(80, 50))
        at = await map_size(client, blank(100, 60))
        over = await map_size(client, blank(200, 120))
        tall = await map_size(client, blank(120, 200), resolution="auto")
        model = await map_size(client, blank(200, 120), resolution="model")
    assert (under["width"], under["height"]) == (80, 50)
    assert (at["width"], at["height"]) == (100, 60)
    for body in (under, at):
        assert body["resolution"]["requested"] == "auto" and body["resolution"]["returned"] == "original"
    # 200x120 has four times the budget's pixels: half of each side, the ratio kept.
    assert (over["width"], over["height"]) == (100, 60)
    assert (tall["width"], tall["height"]) == (60, 100)
    assert over["resolution"] == {
        "requested": "auto",
        "returned": "scaled",
        "image_width": 200,
        "image_height": 120,
        "reason": over["resolution"]["reason"],
    }
    for quote in ("200×120", "24,000", "6,000", "SCENE_MAX_OUTPUT_PIXELS", "100×60"):
        assert quote in over["resolution"]["reason"]
    assert (model["width"], model["height"]) == (48, 32)
    assert model["resolution"]["returned"] == "model" and model["resolution"]["image_width"] == 200


async def test_a_scaled_npz_answer_says_so_in_a_header(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    async with serve(create_app(make_settings(max_output_pixels=6_000))) as client:
        response = await client.post("/predict", content=blank(200, 120), headers=PNG | NPZ)
    assert response.status_code == 200
    assert response.headers["scene-map-size"] == "scaled; maps=100x60; image=200x120"
    assert np.load(io.BytesIO(response.content), allow_pickle=False)["semantic"].shape == (60, 100)


def phone_photo(scene: np.ndarray, exif_orientation: int = 1) -> bytes:
    """``scene`` scaled up to 4032x3024 (12 MP, a phone camera's size) as a JPEG."""
    exif = Image.Exif()
    exif[0x0112] = exif_orientation
    buffer = io.BytesIO()
    big = Image.fromarray(scene).resize((4032, 3024), Image.Resampling.NEAREST)
    big.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


async def test_a_12_megapixel_photo_is_answered_with_the_default_settings(
    make_settings: Callable[..., Settings], serve: Serve, scene: np.ndarray
) -> None:
    settings = make_settings()
    assert settings.max_output_pixels == Settings.model_fields["max_output_pixels"].default
    async with serve(create_app(settings)) as client:
        upright = await client.post(
            "/predict", content=phone_photo(scene), headers={"Content-Type": "image/jpeg"}
        )
        turned = await client.post(
            "/predict",
            params={"overlay": "true"},
            files={"image": ("photo.jpg", phone_photo(scene, exif_orientation=6), "image/jpeg")},
        )
    assert upright.status_code == 200 and turned.status_code == 200, upright.text + turned.text
    body = upright.json()
    # 2,097,152 output pixels: 1672x1254 (2,096,688) is the largest 4:3 size within them.
    assert (body["width"], body["height"]) == (1672, 1254)
    assert (body["resolution"]["image_width"], body["resolution"]["image_height"]) == (4032, 3024)
    semantic = decode_png(from_base64(body["semantic"]["png"]))
    assert semantic[10, 836] == 10 and semantic[1240, 836] == 0 and semantic[627, 836] == 13  # sky, road, car
    turned_body = turned.json()
    assert (turned_body["width"], turned_body["height"]) == (1254, 1672)
    overlay = decode_png(from_base64(turned_body["overlay"]["png"]))
    assert overlay.shape == (1672, 1254, 3)
    # After the quarter turn the sky is on the right; the overlay tints it with sky's colour.
    assert overlay[836, 1240, 2] > overlay[836, 1240, 1]
