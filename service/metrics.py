"""Every Prometheus metric the service exports, declared in one place.

Durations are in seconds; labels take only a handful of values each (route templates,
``2xx``/``4xx``/``5xx``, the six stages, error codes), so the series count stays small.

Several uvicorn workers
-----------------------
Each worker is its own process with its own counters. prometheus_client's multiprocess
mode makes them add up: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable directory
*before* the workers start (``scene-serve --workers N`` does this for you), and every
worker writes its samples there; `render_metrics` then reads all of them through a
fresh ``CollectorRegistry`` with a ``MultiProcessCollector``. In that mode gauges are
combined as their ``multiprocess_mode`` says (in-flight requests are summed over live
workers; model info and task σ take the most recent value), Info/Enum metrics do not
work (hence `MODEL_INFO` is a gauge), and process/GC metrics are not reported. Empty
the directory between runs of the server, or old samples come back.
"""

from __future__ import annotations

import os
from enum import StrEnum

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from scene_contract import vocabulary

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Stage(StrEnum):
    """The stages of a /predict request, in order: each is timed under its name, the
    ``stage`` label of `STAGE_LATENCY` and an entry of ``Server-Timing``."""

    DECODE = vocabulary.DECODE_STAGE
    PREPROCESS = vocabulary.PREPROCESS_STAGE
    QUEUE_WAIT = vocabulary.QUEUE_WAIT_STAGE
    INFERENCE = vocabulary.INFERENCE_STAGE
    POSTPROCESS = vocabulary.POSTPROCESS_STAGE
    ENCODE = vocabulary.ENCODE_STAGE


STAGES: tuple[str, ...] = tuple(stage.value for stage in Stage)

# From a warm tiny-model request (~1 ms) up to a request stuck behind a full queue.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_LATENCY = Histogram(
    "scene_request_duration_seconds",
    "Time from receiving a request to sending its response.",
    ["route", "status_class"],
    buckets=_LATENCY_BUCKETS,
)
REQUESTS = Counter(
    "scene_requests_total",
    "HTTP requests answered, by route template and status class.",
    ["route", "status_class"],
)
ERRORS = Counter(
    "scene_errors_total",
    "Requests answered with an error, by the error code in the JSON body.",
    ["reason"],
)
STAGE_LATENCY = Histogram(
    "scene_stage_duration_seconds",
    "Time one /predict request spent in each stage; inference is its batch's ONNX Runtime run.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "scene_batch_size",
    "Images in each ONNX Runtime run made by the micro-batcher.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
IN_FLIGHT = Gauge(
    "scene_predict_in_flight",
    "/predict and /v2/models/{name}/infer requests being handled right now.",
    multiprocess_mode="livesum",
)
MODEL_INFO = Gauge(
    "scene_model_info",
    "The model being served (always 1), with the execution provider in use.",
    ["name", "version", "provider"],
    multiprocess_mode="mostrecent",
)
TASK_SIGMA = Gauge(
    "scene_task_sigma",
    "Homoscedastic uncertainty σ of each task, from the model card (learned, or restating a fixed weight).",
    ["task"],
    multiprocess_mode="mostrecent",
)


def status_class(status_code: int) -> str:
    """``"2xx"``, ``"4xx"``, ... — the label value for a status code."""
    return f"{status_code // 100}xx"


def render_metrics() -> tuple[bytes, str]:
    """The exposition text and its content type, for this process or all workers.

    In multiprocess mode the registry is built per scrape, as prometheus_client requires:
    the collector reads the sample files of every worker, live or dead.
    """
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
