"""CPU milliseconds each /predict stage costs per request, in-process, without HTTP.

    python -m bench.stages [--model models/default/model.onnx] [--runs 30] [--smoke]

Runs the service's own stage functions (`service.pipeline`) on a 128x256 PNG and a
2048x1024 JPEG (the `bench.peer` images) for the default request (all outputs, maps at
the image's size, JSON): decode + resize to the model's input, the model (batch 1, one
ORT thread), postprocess (instance grouping, maps back to the image's size), encode
(PNGs, base64, the response model) and the JSON text. Times are the calling
thread's CPU time (``time.thread_time``), medians of ``runs``, so they hold on a
machine shared with other work, where wall-clock times do not. Run it on two
checkouts (``PYTHONPATH``) for a before/after of a change. "FastAPI JSON" is what
FastAPI spends turning the response model into bytes when a route returns the model
itself, for comparison with pydantic's own ``model_dump_json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.encoders import jsonable_encoder

from bench import peer
from bench.load import Payload
from service.batching import MicroBatcher
from service.imaging import decode_upload, preprocess
from service.limits import choose_map_size
from service.pipeline import Pipeline
from service.prediction import PredictOptions, StageClock
from service.runtime import ModelRuntime
from service.settings import Settings


def cpu_ms(work: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median thread CPU milliseconds of ``work()`` over ``runs`` calls, and its last result."""
    times, result = [], None
    for _ in range(runs):
        started = time.thread_time()
        result = work()
        times.append((time.thread_time() - started) * 1000)
    return statistics.median(times), result


def measure(pipeline: Pipeline, settings: Settings, payload: Payload, runs: int) -> dict[str, float]:
    runtime, options = pipeline.runtime, PredictOptions()
    stages: dict[str, float] = {}
    decode_ms, (image, size) = cpu_ms(
        lambda: decode_upload(payload.data, settings.max_pixels, runtime.input_size), runs
    )
    resize_ms, model_input = cpu_ms(lambda: preprocess(image, runtime.input_size), runs)
    stages["decode + resize"] = decode_ms + resize_ms
    stages["model (1 thread)"], outputs = cpu_ms(lambda: runtime.run(model_input[None]), runs)
    single = {name: values[0] for name, values in outputs.items()}
    size, map_size = choose_map_size(size, options.resolution, runtime.input_size, settings.max_output_pixels)
    stages["postprocess"], prediction = cpu_ms(
        lambda: pipeline.postprocess(single, size, None, options, 1, StageClock(), map_size), runs
    )
    stages["encode"], response = cpu_ms(
        lambda: pipeline.responses.json(prediction, options, time.perf_counter()), runs
    )
    stages["JSON text"], _ = cpu_ms(lambda: response.model_dump_json(by_alias=True), runs)
    stages["(FastAPI JSON)"], _ = cpu_ms(lambda: json.dumps(jsonable_encoder(response)).encode(), runs)
    return stages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=peer.REPO / "models/default/model.onnx")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="small JPEG, 2 runs")
    args = parser.parse_args(argv)
    runs = 2 if args.smoke else args.runs
    settings = Settings(
        model_path=args.model, providers=["CPUExecutionProvider"], intra_op_threads=1, inference_streams=1
    )
    runtime = ModelRuntime.load(settings)
    pipeline = Pipeline(
        runtime, MicroBatcher(runtime.run, window_s=0, max_batch_size=1, queue_size=1), settings
    )
    for payload in peer.payloads(args.smoke, 1, 1, runtime.input_size):
        stages = measure(pipeline, settings, payload, runs)
        fastapi_ms = stages.pop("(FastAPI JSON)")
        service = sum(ms for name, ms in stages.items() if not name.startswith("model"))
        print(f"{payload.name} ({len(payload.data) / 1024:.0f} KiB), CPU ms per request, median of {runs}:")
        for name, ms in stages.items():
            print(f"  {name:18} {ms:8.2f}")
        print(f"  {'(FastAPI JSON)':18} {fastapi_ms:8.2f}")
        print(
            f"  {'service stages':18} {service:8.2f}  ({service / stages['model (1 thread)']:.2f}x the model)"
        )


if __name__ == "__main__":
    main()
