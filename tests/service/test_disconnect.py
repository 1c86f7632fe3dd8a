"""A client that leaves, mid-upload or while its request waits, is counted as
``client_disconnected`` (never a server error) and its queued work is not run
(service/disconnect.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import REGISTRY

from service.main import create_app
from service.runtime import ModelRuntime, Outputs
from service.settings import Settings

pytestmark = pytest.mark.anyio
Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
PNG = {"Content-Type": "image/png"}
Message = dict[str, object]


def predict_scope() -> dict[str, object]:
    """The ASGI scope of ``POST /predict`` with a PNG body, for driving the app by hand."""
    return {
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


async def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def errors(reason: str) -> float:
    return REGISTRY.get_sample_value("scene_errors_total", {"reason": reason}) or 0.0


def requests(status_class: str) -> float:
    labels = {"route": "/predict", "status_class": status_class}
    return REGISTRY.get_sample_value("scene_requests_total", labels) or 0.0


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

        async def receive() -> Message:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(_: Message) -> None:
            pass

        before = {reason: errors(reason) for reason in ("client_disconnected", "internal_error")}
        five_xx = requests("5xx")
        with caplog.at_level(logging.INFO, logger="service"):
            await app(predict_scope(), receive, send)  # must not raise
    assert errors("client_disconnected") == before["client_disconnected"] + 1
    assert errors("internal_error") == before["internal_error"]
    assert requests("5xx") == five_xx
    records = [r for r in caplog.records if "disconnect" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is None
    assert all(r.levelno < logging.ERROR for r in caplog.records)


async def test_a_request_whose_client_left_while_queued_is_never_run(
    make_settings: Callable[..., Settings],
    serve: Serve,
    scene_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = threading.Event()
    runs: list[int] = []  # images per ORT run once armed
    armed = False
    real_run = ModelRuntime.run

    def gated_run(self: ModelRuntime, images: npt.NDArray[np.uint8]) -> Outputs:
        if armed:
            runs.append(len(images))
            gate.wait(10)
        return real_run(self, images)

    monkeypatch.setattr(ModelRuntime, "run", gated_run)
    # One inference run at a time, so the second request has to wait in the queue.
    app = create_app(make_settings(max_batch_size=1, inference_streams=1))
    async with serve(app) as client:
        batcher = app.state.service.batcher
        armed = True
        try:
            first = asyncio.create_task(client.post("/predict", content=scene_png, headers=PNG))
            await wait_for(lambda: runs == [1])  # the first request holds the model
            gone = asyncio.Event()
            body_sent = False

            async def receive() -> Message:
                nonlocal body_sent
                if not body_sent:
                    body_sent = True
                    return {"type": "http.request", "body": scene_png, "more_body": False}
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(_: Message) -> None:
                pass

            before = errors("client_disconnected")
            second = asyncio.create_task(app(predict_scope(), receive, send))
            await wait_for(lambda: batcher.queued == 1)
            gone.set()
            await asyncio.wait_for(second, 5)  # answered at once, not after the first run
            assert errors("client_disconnected") == before + 1
        finally:
            gate.set()
        assert (await first).status_code == 200
        assert (await client.post("/predict", content=scene_png, headers=PNG)).status_code == 200
    # FIFO: had the abandoned image run, it would have come between these two.
    assert runs == [1, 1]
