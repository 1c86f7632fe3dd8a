"""/metrics: Prometheus text that counts what happened, and proof that requests are batched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.main import create_app
from service.metrics import STAGES
from service.settings import Settings

pytestmark = pytest.mark.anyio

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
PNG = {"Content-Type": "image/png"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    """Every sample on /metrics, keyed by (sample name, labels)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, /, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_prediction_is_counted_in_every_stage(client: httpx.AsyncClient, scene_png: bytes) -> None:
    before = await scrape(client)
    response = await client.post("/predict", content=scene_png, headers=PNG)
    assert response.status_code == 200
    after = await scrape(client)
    # Server-Timing names the stages as the metrics label them, in the order they ran.
    timed = [entry.split(";")[0] for entry in response.headers["server-timing"].split(", ")]
    assert timed == [*STAGES, "total"]

    def grew(name: str, /, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for stage in STAGES:
        assert grew("scene_stage_duration_seconds_count", stage=stage) == 1, stage
        assert grew("scene_stage_duration_seconds_sum", stage=stage) >= 0
    assert grew("scene_request_duration_seconds_count", route="/predict", status_class="2xx") == 1
    assert grew("scene_requests_total", route="/predict", status_class="2xx") == 1
    assert grew("scene_batch_size_count") == 1
    assert value(after, "scene_predict_in_flight") == 0
    assert (
        value(after, "scene_model_info", name="tiny-test", version="0.0.1", provider="CPUExecutionProvider")
        == 1
    )
    assert value(after, "scene_task_sigma", task="semantic") == 0.5
    assert value(after, "scene_task_sigma", task="instance") == 2.0


async def test_errors_are_counted_by_reason_and_status_class(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    await client.post("/predict", content=b"abc", headers={"Content-Type": "text/plain"})
    await client.get("/no/such/path")
    after = await scrape(client)
    assert (
        value(after, "scene_errors_total", reason="unsupported_media_type")
        - value(before, "scene_errors_total", reason="unsupported_media_type")
        == 1
    )
    assert (
        value(after, "scene_requests_total", route="/predict", status_class="4xx")
        - value(before, "scene_requests_total", route="/predict", status_class="4xx")
        == 1
    )
    # Unknown paths share one label value, so scanners cannot create series.
    assert value(after, "scene_requests_total", route="unmatched", status_class="4xx") >= 1
    assert not any(dict(labels).get("route") == "/no/such/path" for _, labels in after)


async def test_concurrent_requests_are_batched(
    make_settings: Callable[..., Settings], serve: Serve, scene_png: bytes
) -> None:
    app = create_app(make_settings(batch_window_ms=50, max_batch_size=8, inference_streams=1))
    async with serve(app) as client:
        before = await scrape(client)
        responses = await asyncio.gather(
            *(client.post("/predict", content=scene_png, headers=PNG) for _ in range(8))
        )
        after = await scrape(client)
    assert [r.status_code for r in responses] == [200] * 8
    assert max(r.json()["batch_size"] for r in responses) > 1
    runs = value(after, "scene_batch_size_count") - value(before, "scene_batch_size_count")
    images = value(after, "scene_batch_size_sum") - value(before, "scene_batch_size_sum")
    singles = value(after, "scene_batch_size_bucket", le="1.0") - value(
        before, "scene_batch_size_bucket", le="1.0"
    )
    assert images == 8
    assert runs < 8 and singles < runs, "no run held more than one image"
