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
from service.limits import check_image, image_size
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
        refused = await client.post("/predict", content=blank(100, 60), headers=PNG | accept)
        assert not decoded, "the over-budget request was decoded"
        at_model_size = await client.post(
            "/predict", params={"resolution": "model"}, content=blank(100, 60), headers=PNG | accept
        )
        small = await client.post("/predict", content=blank(50, 40), headers=PNG | accept)
    assert_refused(refused, 413, "output_too_large", "100×60", "6,000", "5,000", "resolution=model")
    assert at_model_size.status_code == 200 and small.status_code == 200
    if accept:
        arrays = np.load(io.BytesIO(at_model_size.content), allow_pickle=False)
        assert arrays["semantic"].shape == (32, 48)


async def test_the_default_budget_bounds_the_npz_of_a_4096_square_image(
    client: httpx.AsyncClient, no_decoding: None
) -> None:
    # A 58 KB upload that used to come back as a 318.8 MB npz.
    response = await client.post("/predict", content=blank(4096, 4096), headers=PNG | NPZ)
    assert_refused(response, 413, "output_too_large", "16,777,216", "2,097,152")


def test_limits_are_checked_in_order_of_what_the_client_can_fix() -> None:
    settings = Settings(max_width=100, max_height=100, max_pixels=50, max_output_pixels=10)
    with pytest.raises(Exception, match="wide"):
        check_image(101, 1, settings, output_size=None)
    check_image(10, 5, settings, output_size=None)  # pixels 50: at the limit, and no maps at its size
    with pytest.raises(Exception, match="output pixels"):
        check_image(10, 5, settings, output_size=(10, 5))
