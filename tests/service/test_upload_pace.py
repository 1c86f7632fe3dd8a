"""A slow or stalled upload is answered 408 and freed; a client that leaves mid-upload is
its own outcome, not a server error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from prometheus_client import REGISTRY

from service import limits
from service.limits import BodyPace
from service.main import create_app
from service.settings import Settings

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
PNG = {"Content-Type": "image/png"}


def errors(reason: str) -> float:
    return REGISTRY.get_sample_value("scene_errors_total", {"reason": reason}) or 0.0


def requests(status_class: str) -> float:
    labels = {"route": "/predict", "status_class": status_class}
    return REGISTRY.get_sample_value("scene_requests_total", labels) or 0.0


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


async def test_a_client_that_leaves_mid_upload_is_not_a_server_error(
    make_settings: Callable[..., Settings],
    serve: Serve,
    scene_png: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(make_settings())
    async with serve(app):  # started and warm; the request below goes straight to the ASGI app
        messages = [
            {"type": "http.request", "body": scene_png[:64], "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"image/png"), (b"host", b"testserver")],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }
        before = {reason: errors(reason) for reason in ("client_disconnected", "internal_error")}
        five_xx = requests("5xx")
        with caplog.at_level(logging.INFO, logger="service"):
            await app(scope, receive, send)  # must not raise
    assert errors("client_disconnected") == before["client_disconnected"] + 1
    assert errors("internal_error") == before["internal_error"]
    assert requests("5xx") == five_xx
    records = [r for r in caplog.records if "disconnect" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is None
    assert all(r.levelno < logging.ERROR for r in caplog.records)
