"""Resident memory of one scene-serve process: at rest, and at its peak under load.

    python -m bench.serve_memory --model model.onnx [--sizes 128x256 1024x2048 4096x4096]
                                 [--clients 1 4] [--requests 16] [--json out.json]

A real ``scene-serve`` process (one worker, CPU provider, ``SCENE_CPU_CONCURRENCY``
equal to the largest client count so every client is decoded and postprocessed at
once) answers ``requests`` POSTs of a PNG street scene of each size from each number
of concurrent clients (default JSON response, all outputs). Memory is the process's
own ``/proc`` accounting: ``VmRSS`` once warm and idle (the baseline), and
``VmHWM``, the high-water mark, reset before every load (``clear_refs``), so each
row is the peak of that load alone. "per request" is (peak − baseline) / clients:
what one more concurrent request adds, the figure the Kubernetes memory limit is
sized from (docs/deploy.md).

Linux only (``/proc``). ``--smoke`` runs one small size and one client, for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.service_latency import free_port, server_process

MIB = 2**20


@dataclass(frozen=True)
class Peak:
    size: str
    clients: int
    requests_ok: int
    baseline_mib: float
    peak_mib: float
    per_request_mib: float


def street_png(height: int, width: int) -> bytes:
    """A PNG with sky, road and a car-coloured block. Faint noise in one channel keeps it
    from compressing to nothing while a 4096x4096 one stays under the 20 MiB body limit."""
    rng = np.random.default_rng(0)
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = rng.integers(0, 16, size=(height, width), dtype=np.uint8)
    rgb[: height // 3, :, 2] = 220
    rgb[height // 3 :, :, 1] = 180
    rgb[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3, 0] = 230
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Set VmHWM back to the current RSS (Linux ``clear_refs`` value 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def load(base: str, body: bytes, clients: int, requests: int) -> int:
    """Send ``requests`` POSTs from ``clients`` concurrent clients; the count answered 200."""
    ok = 0
    remaining = requests

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal ok, remaining
        while remaining > 0:
            remaining -= 1
            try:
                response = await http.post(
                    f"{base}/predict", content=body, headers={"Content-Type": "image/png"}
                )
            except httpx.TimeoutException:
                continue
            ok += response.status_code == 200

    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return ok


def measure(model: Path, sizes: list[str], clients: list[int], requests: int) -> list[Peak]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SCENE_", "PROMETHEUS_"))}
    env |= {
        "SCENE_PROVIDERS": "CPUExecutionProvider",
        "SCENE_CPU_CONCURRENCY": str(max(clients)),
        "SCENE_REQUEST_TIMEOUT_S": "600",
    }
    command = [sys.executable, "-m", "service.cli", "--model", str(model), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning"]
    with server_process(command, env, port, timeout_s=60) as server:
        peaks = []
        for size in sizes:
            height, width = (int(side) for side in size.split("x"))
            body = street_png(height, width)
            asyncio.run(load(base, body, 1, 1))  # first touch of this size's buffers
            for count in clients:
                time.sleep(0.5)
                baseline = proc_status_kib(server.pid, "VmRSS") / 1024
                reset_peak(server.pid)
                ok = asyncio.run(load(base, body, count, requests))
                peak = proc_status_kib(server.pid, "VmHWM") / 1024
                per_request = (peak - baseline) / count
                peaks.append(Peak(size, count, ok, round(baseline, 1), round(peak, 1), round(per_request, 1)))
                print(peaks[-1], file=sys.stderr, flush=True)
        return peaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/default/model.onnx"))
    parser.add_argument("--sizes", nargs="+", default=["128x256", "1024x2048", "4096x4096"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="one small size, one client, two requests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.clients, args.requests = ["64x96"], [1], 2
    peaks = measure(args.model, args.sizes, args.clients, args.requests)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, model {args.model}")
    print("| image | clients | answered | idle RSS MiB | peak RSS MiB | per request MiB |")
    print("|---|---|---|---|---|---|")
    for peak in peaks:
        print(
            f"| {peak.size} | {peak.clients} | {peak.requests_ok} | {peak.baseline_mib} "
            f"| {peak.peak_mib} | {peak.per_request_mib} |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(peak) for peak in peaks], indent=2))
    return 0 if all(peak.requests_ok > 0 for peak in peaks) else 1


if __name__ == "__main__":
    sys.exit(main())
