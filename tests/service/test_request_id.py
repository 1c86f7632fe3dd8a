"""X-Request-ID: taken from the request or made, returned with every answer, in every log line."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import anyio
import httpx
import pytest

from service.logs import REQUEST_ID, JsonFormatter, RequestIdFilter
from service.main import create_app
from service.pipeline import Pipeline
from service.settings import Settings


@pytest.mark.anyio
async def test_the_id_is_echoed_or_made_on_every_answer(client: httpx.AsyncClient, scene_png: bytes) -> None:
    png = {"Content-Type": "image/png"}
    given = await client.post("/predict", content=scene_png, headers=png | {"X-Request-ID": "lb-4f2a:7"})
    assert given.status_code == 200 and given.headers["X-Request-ID"] == "lb-4f2a:7"
    made = [(await client.get("/healthz")).headers["X-Request-ID"] for _ in range(2)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in made) and made[0] != made[1]
    # Errors carry it too, and an id that could break a log line or a header is replaced.
    refused = await client.post("/predict", content=b"junk", headers=png | {"X-Request-ID": "a b\tc"})
    assert refused.status_code == 400 and re.fullmatch(r"[0-9a-f]{32}", refused.headers["X-Request-ID"])
    too_long = await client.get("/v2/models/other", headers={"X-Request-ID": "x" * 129})
    assert too_long.headers["X-Request-ID"] != "x" * 129


@pytest.mark.anyio
async def test_a_500_carries_the_id_in_its_answer_and_its_log_line(
    make_settings: Callable[..., Settings],
    scene_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*_: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(Pipeline, "predict", broken)
    caplog.handler.addFilter(RequestIdFilter())
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        # The server re-raises after answering (so it is logged); the client must not.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            while (await client.get("/readyz")).status_code != 200:
                await anyio.sleep(0.01)
            with caplog.at_level(logging.ERROR, logger="service"):
                headers = {"Content-Type": "image/png", "X-Request-ID": "req-500"}
                response = await client.post("/predict", content=scene_png, headers=headers)
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "req-500"
    [record] = [record for record in caplog.records if record.name == "service.errors"]
    assert record.request_id == "req-500"  # type: ignore[attr-defined]
    assert REQUEST_ID.get() == "-"  # gone once the request is over


def test_json_log_lines_are_objects_with_the_id() -> None:
    record = logging.LogRecord("service.x", logging.WARNING, __file__, 1, "queue at %d", (7,), None)
    RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "queue at 7" and line["level"] == "warning" and line["request_id"] == "-"


def test_every_line_of_a_request_names_it_in_a_real_server(
    model_path: Path, tmp_path: Path, running_server: Callable[..., AbstractContextManager[str]]
) -> None:
    log = tmp_path / "server.log"
    with running_server(model_path, log, env={"SCENE_LOG_FORMAT": "json"}) as base:
        for request_id in ("trace-1", "trace-2"):
            response = httpx.post(
                f"{base}/predict",
                content=b"junk",
                headers={"Content-Type": "image/png", "X-Request-ID": request_id},
            )
            assert response.headers["X-Request-ID"] == request_id
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access" and "/predict" in line["message"]]
    assert [line["request_id"] for line in access] == ["trace-1", "trace-2"]
    assert all(line["request_id"] == "-" for line in lines if "loaded" in line["message"])
