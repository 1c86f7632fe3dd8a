"""End-to-end /predict latency and throughput of scene-serve, against the bare model.

    python -m bench.service_latency --model model.onnx [--clients 1 4 16] [--requests 120]
                                    [--repeats 3] [--threads 0] [--json out.json]

Baseline, measured in the same run: ONNX Runtime alone on the same CPU, one
128x256 image per run with the server's thread setting (median of ``repeats`` x 50
runs). Then for batching on (one inference stream, batches of up to 8: the GPU
default) and off (the CPU default: a stream per core, one image each) a real
``scene-serve`` process on 127.0.0.1 answers ``requests``
POSTs of PNG street scenes (the default JSON response with all three outputs) from
1, 4 and 16 concurrent clients, each client sending its next request when the last
one is answered. Every figure is the median over ``repeats`` rounds.

Service overhead = end-to-end p50 with one client / model-only p50: everything the
service adds (HTTP, PNG decode, resize, batching, instance grouping, PNG encode,
JSON) on top of the model. "server" is the p50 of the response's own
``timings_ms.total``: the same without the HTTP client and the connection. The
load generator runs on the same machine, so with many clients it competes with the
server for the CPU; the throughput figures are a floor for a server with a machine
to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

from scene_contract.model import INPUT_NAME
from training.data.procedural import ProceduralScenes

HEIGHT, WIDTH = 128, 256
IMAGES = 8


@dataclass(frozen=True)
class Load:
    batching: str
    clients: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    server_p50_ms: float
    throughput_rps: float
    mean_batch: float


def scene_pngs(count: int) -> list[bytes]:
    """PNGs of held-out procedural scenes (test split) at the training resolution."""
    scenes = ProceduralScenes(split="test", seed=11, count=count, height=HEIGHT, width=WIDTH)
    pngs = []
    for index in range(len(scenes)):
        buffer = io.BytesIO()
        Image.fromarray(scenes[index].image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def model_only_p50(model: Path, threads: int, repeats: int) -> float:
    """Median milliseconds of one batch-1 ORT run on the CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    scenes = ProceduralScenes(split="test", seed=11, count=IMAGES)
    images = [scenes[index].image[None] for index in range(IMAGES)]
    for image in images:
        session.run(None, {INPUT_NAME: image})
    medians = []
    for _ in range(repeats):
        times = []
        for i in range(50):
            started = time.perf_counter()
            session.run(None, {INPUT_NAME: images[i % len(images)]})
            times.append((time.perf_counter() - started) * 1000)
        medians.append(statistics.median(times))
    return statistics.median(medians)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def server_process(
    command: list[str],
    env: dict[str, str],
    port: int,
    *,
    name: str = "scene-serve",
    ready_path: str = "/readyz",
    cwd: Path | None = None,
    timeout_s: float = 120,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command``, a server listening on 127.0.0.1:``port``, with its output in a
    temporary log; yield the process once ``ready_path`` answers 200; terminate it on exit.

    Raises `RuntimeError` with the server's log if it exits or is not ready within
    ``timeout_s``.
    """
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{name} did not become ready:\n{log.read().decode()}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def server(model: Path, threads: int, batching: bool) -> Iterator[str]:
    """A ``scene-serve`` process on a free loopback port, ready; stopped on exit."""
    port = free_port()
    env = {**os.environ, "SCENE_PROVIDERS": "CPUExecutionProvider", "SCENE_INTRA_OP_THREADS": str(threads)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if batching:
        env |= {"SCENE_MAX_BATCH_SIZE": "8", "SCENE_INFERENCE_STREAMS": "1"}
    command = [sys.executable, "-m", "service.cli", "--model", str(model), "--port", str(port)]
    with server_process([*command, "--log-level", "warning"], env, port):
        yield f"http://127.0.0.1:{port}"


async def run_load(
    base: str, pngs: list[bytes], clients: int, requests: int
) -> tuple[list[float], list[float], float, float]:
    """Latencies (ms) of ``requests`` POSTs from ``clients`` closed-loop clients, the
    server's own ``timings_ms.total`` for each, the wall time in seconds, and the mean
    ORT batch size the server reported."""
    latencies: list[float] = []
    server_totals: list[float] = []
    batch_sizes: list[int] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def one_client() -> None:
            for i in counter:
                started = time.perf_counter()
                response = await client.post(
                    "/predict", content=pngs[i % len(pngs)], headers={"Content-Type": "image/png"}
                )
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                body = response.json()
                batch_sizes.append(body["batch_size"])
                server_totals.append(body["timings_ms"]["total"])

        # Warm the connections and the server's code paths first.
        for png in pngs[:2]:
            (
                await client.post("/predict", content=png, headers={"Content-Type": "image/png"})
            ).raise_for_status()
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - started
    return latencies, server_totals, wall, statistics.fmean(batch_sizes)


def measure(base: str, pngs: list[bytes], batching: str, clients: int, requests: int, repeats: int) -> Load:
    rounds = []
    for _ in range(repeats):
        latencies, server_totals, wall, mean_batch = asyncio.run(run_load(base, pngs, clients, requests))
        p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
        rounds.append((p50, p90, p99, statistics.median(server_totals), len(latencies) / wall, mean_batch))
    p50, p90, p99, server_p50, throughput, mean_batch = (
        float(statistics.median(column)) for column in zip(*rounds, strict=True)
    )
    return Load(batching, clients, p50, p90, p99, server_p50, throughput, mean_batch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="ONNX model at 128x256")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=120, help="requests per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per setting; medians are reported")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT decides)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    pngs = scene_pngs(IMAGES)
    baseline = model_only_p50(args.model, args.threads, args.repeats)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}"
    )
    print(f"model only (ORT, batch 1): p50 {baseline:.2f} ms")
    loads = []
    for batching in ("on", "off"):
        with server(args.model, args.threads, batching == "on") as base:
            for clients in args.clients:
                load = measure(base, pngs, batching, clients, args.requests, args.repeats)
                loads.append(load)
                print(
                    f"batching {batching:3} clients {clients:2}: p50 {load.p50_ms:7.2f}  "
                    f"p90 {load.p90_ms:7.2f}  p99 {load.p99_ms:7.2f} ms  (server {load.server_p50_ms:7.2f})  "
                    f"{load.throughput_rps:6.1f} req/s  mean batch {load.mean_batch:.2f}"
                )
    single = {load.batching: load.p50_ms for load in loads if load.clients == 1}
    for batching, p50 in single.items():
        print(
            f"service overhead, batching {batching}: {p50 / baseline:.2f}x (end-to-end p50 / model-only p50)"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"model_only_p50_ms": baseline, "loads": [asdict(load) for load in loads]}, indent=2)
        )


if __name__ == "__main__":
    main()
