"""Reading a request's image (service/upload.py): a raw body or a multipart field gives the
same answer, and a slow or stalled upload is answered 408 and freed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from service import limits
from service.limits import BodyPace
from service.main import create_app
from service.settings import Settings

pytestmark = pytest.mark.anyio
Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
PNG = {"Content-Type": "image/png"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_pace_allows_the_grace_then_the_minimum_rate() -> None:
    clock = Clock()
    pace = BodyPace(Settings(body_timeout_s=30, body_min_rate=1000), clock)
    assert pace.wait_s() == limits.BODY_RATE_GRACE_S
    pace.add(10_000)  # ten more seconds at the minimum rate, but the timeout caps the total
    assert pace.wait_s() == 15
    pace.add(1_000_000)
    clock.now += 29
    assert pace.wait_s() == 1
    clock.now += 2
    assert pace.wait_s() == 0
    assert "30 s" in pace.error().message and "SCENE_BODY_TIMEOUT_S" in pace.error().message


def test_a_trickle_is_told_the_minimum_rate() -> None:
    clock = Clock()
    pace = BodyPace(Settings(body_timeout_s=30, body_min_rate=1000), clock)
    pace.add(100)
    clock.now += 6
    assert pace.wait_s() == 0
    error = pace.error()
    assert error.status_code == 408 and "1000 bytes/s" in error.message
    assert error.headers["Connection"] == "close"


async def stalled(first: bytes, then_wait_s: float) -> AsyncIterator[bytes]:
    yield first
    await asyncio.sleep(then_wait_s)
    yield b"never read"


async def trickle(chunk: bytes, every_s: float, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield chunk
        await asyncio.sleep(every_s)


async def test_a_stalled_upload_gets_408_when_the_body_timeout_passes(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes
) -> None:
    async with serve(create_app(make_settings(body_timeout_s=0.3))) as client:
        response = await asyncio.wait_for(
            client.post("/predict", content=stalled(scene_png[:100], 5), headers=PNG), 3
        )
    assert response.status_code == 408, response.text
    assert response.json()["error"]["code"] == "body_timeout"
    assert "0.3 s" in response.json()["error"]["message"]
    assert response.headers["connection"] == "close"


async def test_a_trickling_upload_gets_408_for_its_rate(
    make_settings: Callable[..., Settings],
    serve: Serve,
    scene_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "BODY_RATE_GRACE_S", 0.2)
    async with serve(create_app(make_settings(body_min_rate=1000))) as client:
        response = await asyncio.wait_for(
            client.post("/predict", content=trickle(b"\x89", 0.05, 200), headers=PNG), 5
        )
    assert response.status_code == 408, response.text
    assert "1000 bytes/s" in response.json()["error"]["message"]


def encode(rgb: npt.NDArray[np.uint8], image_format: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=image_format, **params)
    return buffer.getvalue()


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
