"""The error table: every refusal is JSON {"error": {"code", "message"}} with the right status."""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image

from service.main import create_app
from service.pipeline import Pipeline
from service.settings import Settings

pytestmark = pytest.mark.anyio

LIMIT = 64 * 1024
Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


class Chunks:
    """An async body of ``count`` chunks of ``size`` bytes that counts how many were read."""

    def __init__(self, count: int, size: int = 8 * 1024) -> None:
        self.count, self.size, self.read = count, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.read += 1
            yield b"\x89" * self.size


@pytest.fixture
async def small(make_settings: Callable[..., Settings], serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    """A service that accepts at most 64 KiB bodies."""
    async with serve(create_app(make_settings(max_body_bytes=LIMIT))) as client:
        yield client


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "image/gif", None])
async def test_unsupported_content_type_is_415(client: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    assert_error(
        await client.post("/predict", content=b"abc", headers=headers), 415, "unsupported_media_type"
    )


async def test_multipart_part_of_the_wrong_type_is_415(client: httpx.AsyncClient, scene_png: bytes) -> None:
    response = await client.post("/predict", files={"image": ("a.txt", scene_png, "text/plain")})
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("cut", [0.5, 0.9])
async def test_truncated_image_is_400(client: httpx.AsyncClient, scene_png: bytes, cut: float) -> None:
    data = scene_png[: int(len(scene_png) * cut)]
    assert_error(
        await client.post("/predict", content=data, headers={"Content-Type": "image/png"}),
        400,
        "corrupt_image",
    )


@pytest.mark.parametrize("kind", ["GIF", "BMP", "TIFF"])
async def test_a_real_image_in_another_format_is_415(client: httpx.AsyncClient, kind: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 30, 30)).save(buffer, format=kind)
    response = await client.post("/predict", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
    assert_error(response, 415, "unsupported_media_type")
    assert kind in response.json()["error"]["message"]


async def test_bytes_that_are_no_image_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", content=b"hello" * 100, headers={"Content-Type": "image/jpeg"})
    assert_error(response, 400, "corrupt_image")


async def test_empty_body_is_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/predict", headers={"Content-Type": "image/png"}), 400, "empty_body")
    empty_file = await client.post("/predict", files={"image": ("a.png", b"", "image/png")})
    assert_error(empty_file, 400, "empty_body")


async def test_malformed_multipart_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict", content=b"garbage", headers={"Content-Type": "multipart/form-data; charset=utf-8"}
    )
    assert_error(response, 400, "malformed_body")


async def test_multipart_without_an_image_field_is_422(client: httpx.AsyncClient, scene_png: bytes) -> None:
    response = await client.post("/predict", files={"file": ("a.png", scene_png, "image/png")})
    assert "'image'" in assert_error(response, 422, "validation_error")["message"]


async def test_declared_oversize_body_is_413_before_reading_it(small: httpx.AsyncClient) -> None:
    body = Chunks(count=100)  # 800 KiB
    response = await small.post(
        "/predict",
        content=body,
        headers={"Content-Type": "image/png", "Content-Length": str(100 * 8 * 1024)},
    )
    assert_error(response, 413, "body_too_large")
    assert body.read == 0


@pytest.mark.parametrize("declared", ["100", None], ids=["lying-length", "chunked"])
async def test_oversize_body_is_413_while_streaming(small: httpx.AsyncClient, declared: str | None) -> None:
    body = Chunks(count=100)
    headers = {"Content-Type": "image/png"} | ({"Content-Length": declared} if declared else {})
    assert_error(await small.post("/predict", content=body, headers=headers), 413, "body_too_large")
    assert body.read <= LIMIT // body.size + 1, "the server read past the limit"


async def test_oversize_multipart_is_413(small: httpx.AsyncClient) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")  # ~120 KiB, incompressible
    response = await small.post("/predict", files={"image": ("big.png", buffer.getvalue(), "image/png")})
    assert_error(response, 413, "body_too_large")


@pytest.mark.parametrize("max_pixels", [5_999, 2_000], ids=["just-over", "over-twice"])
async def test_too_many_pixels_is_413(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes, max_pixels: int
) -> None:
    async with serve(create_app(make_settings(max_pixels=max_pixels))) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            response = await client.post("/predict", content=scene_png, headers={"Content-Type": "image/png"})
    assert_error(response, 413, "too_many_pixels")


@pytest.mark.parametrize(
    "params",
    [{"outputs": "semantic,colour"}, {"resolution": "huge"}, {"overlay_alpha": "2"}, {"overlay": "maybe"}],
)
async def test_bad_query_parameters_are_422(
    client: httpx.AsyncClient, scene_png: bytes, params: dict[str, str]
) -> None:
    response = await client.post(
        "/predict", params=params, content=scene_png, headers={"Content-Type": "image/png"}
    )
    assert_error(response, 422, "validation_error")


async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404, "not_found")
    assert_error(await client.get("/predict"), 405, "method_not_allowed")
    # Under /v2, the open inference protocol's error: the message alone.
    response = await client.get("/v2/models/other")
    assert response.status_code == 404 and response.json() == {"error": "no model named 'other' here"}
    assert (await client.get("/v2/models/tiny-test/infer")).json()["error"] == "Method Not Allowed"


async def test_a_bug_is_a_generic_500_in_the_same_shape(
    make_settings: Callable[..., Settings], scene_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> None:
        raise KeyError("/secret/path/to/internals")

    monkeypatch.setattr(Pipeline, "predict", broken)
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        # The server re-raises after answering (so it is logged); the client must not.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            while (await client.get("/readyz")).status_code != 200:
                await anyio.sleep(0.01)
            response = await client.post("/predict", content=scene_png, headers={"Content-Type": "image/png"})
    assert_error(response, 500, "internal_error")
    assert "secret" not in response.text
