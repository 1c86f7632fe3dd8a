"""What a running app holds and its start (service/state.py): alive at once, ready only once
warm, and a warm-up that fails makes liveness fail."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from service.main import create_app
from service.runtime import ModelRuntime
from service.settings import Settings

pytestmark = pytest.mark.anyio
Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
PNG = {"Content-Type": "image/png"}


async def test_not_ready_until_warm_up_is_done(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm = threading.Event()
    original = ModelRuntime.warm_up

    def slow_warm_up(runtime: ModelRuntime, batch_sizes: tuple[int, ...] = (1,)) -> None:
        warm.wait(timeout=10)
        original(runtime, batch_sizes)

    monkeypatch.setattr(ModelRuntime, "warm_up", slow_warm_up)
    try:
        async with serve(create_app(make_settings()), ready=False) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/v2/health/live")).json() == {"live": True}
            response = await client.get("/readyz")
            assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
            for path in ("/v2/health/ready", "/v2/models/tiny-test/ready"):
                response = await client.get(path)
                assert response.status_code == 503 and "warming up" in response.json()["error"]
            refused = await client.post("/predict", content=scene_png, headers=PNG)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
            assert (await client.get("/metadata")).status_code == 200  # the card is known already

            warm.set()
            async with asyncio.timeout(5):
                while (await client.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.01)
            assert (await client.get("/v2/health/ready")).json() == {"ready": True}
            assert (await client.post("/predict", content=scene_png, headers=PNG)).status_code == 200
    finally:
        warm.set()


async def test_failed_warm_up_fails_liveness(
    make_settings: Callable[..., Settings], serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_warm_up(runtime: ModelRuntime, batch_sizes: tuple[int, ...] = (1,)) -> None:
        raise RuntimeError("out of device memory")

    monkeypatch.setattr(ModelRuntime, "warm_up", broken_warm_up)
    async with serve(create_app(make_settings()), ready=False) as client:
        async with asyncio.timeout(5):
            while (await client.get("/healthz")).status_code == 200:
                await asyncio.sleep(0.01)
        live = await client.get("/healthz")
        assert live.status_code == 503 and "out of device memory" in live.json()["error"]["message"]
        assert (await client.get("/readyz")).status_code == 503
