"""Back-pressure and timeouts as a client sees them (readiness: test_state.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from service import metrics
from service.main import create_app
from service.pipeline import Pipeline
from service.runtime import ModelRuntime, Outputs
from service.settings import Settings

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
PNG = {"Content-Type": "image/png"}


class ModelGate:
    """Patches `ModelRuntime.run` so runs can be held inside the model until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hold = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail = False
        original = ModelRuntime.run

        def run(runtime: ModelRuntime, images: npt.NDArray[np.uint8]) -> Outputs:
            if self.hold.is_set():
                self.entered.set()
                self.release.wait(timeout=10)
            if self.fail:
                raise RuntimeError("the accelerator fell over")
            return original(runtime, images)

        monkeypatch.setattr(ModelRuntime, "run", run)

    async def wait_entered(self) -> None:
        async with asyncio.timeout(5):
            while not self.entered.is_set():
                await asyncio.sleep(0.001)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> ModelGate:
    return ModelGate(monkeypatch)


async def test_full_queue_is_503_with_retry_after(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes, gate: ModelGate
) -> None:
    # One run at a time: the held run plus one queued image fill the service.
    app = create_app(make_settings(queue_size=1, max_batch_size=1, inference_streams=1))
    async with serve(app) as client:
        gate.hold.set()
        try:
            running = asyncio.create_task(client.post("/predict", content=scene_png, headers=PNG))
            await gate.wait_entered()
            waiting = asyncio.create_task(client.post("/predict", content=scene_png, headers=PNG))
            batcher = app.state.service.batcher
            async with asyncio.timeout(5):
                while batcher.queued < 1:
                    await asyncio.sleep(0.001)
            refused = await client.post("/predict", content=scene_png, headers=PNG)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "queue_full"
            assert refused.headers["Retry-After"] == "1"
        finally:
            gate.release.set()
        assert [r.status_code for r in await asyncio.gather(running, waiting)] == [200, 200]


async def test_timeout_is_504_and_leaves_nothing_behind(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes, gate: ModelGate
) -> None:
    app = create_app(make_settings(request_timeout_s=0.2))
    in_flight = metrics.IN_FLIGHT._value.get()
    async with serve(app) as client:
        gate.hold.set()
        try:
            slow = await client.post("/predict", content=scene_png, headers=PNG)
        finally:
            gate.release.set()
            gate.hold.clear()
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
        assert (await client.post("/predict", content=scene_png, headers=PNG)).status_code == 200
        assert app.state.service.batcher.queued == 0
    assert metrics.IN_FLIGHT._value.get() == in_flight


async def test_the_timeout_covers_postprocessing_too(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    postprocess = Pipeline.postprocess

    def slow(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.6)  # grouping a crowded, full-resolution image, say
        return postprocess(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "postprocess", slow)
    async with serve(create_app(make_settings(request_timeout_s=0.3))) as client:
        response = await client.post("/predict", content=scene_png, headers=PNG)
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"


async def test_inference_failure_is_500_and_the_next_request_works(
    gate: ModelGate, client: httpx.AsyncClient, scene_png: bytes
) -> None:
    # ``gate`` comes first so the model is patched before the app builds its batcher.
    gate.fail = True
    failed = await client.post("/predict", content=scene_png, headers=PNG)
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "inference_failed"
    assert "accelerator" not in failed.text, "internal details must stay in the log"
    gate.fail = False
    assert (await client.post("/predict", content=scene_png, headers=PNG)).status_code == 200
