"""Closed-loop load on one URL: ``hey`` when it is on PATH, else an asyncio ``httpx`` client.

Each client sends its next request when its last is answered; a round reports its
throughput, its median and 99th-percentile latency and its errors.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np


@dataclass(frozen=True)
class Payload:
    """One image to send: its name in the tables, its media type, its bytes, requests per round."""

    name: str
    media_type: str
    data: bytes
    requests: int


@dataclass(frozen=True)
class Round:
    """One round's figures; ``cpu_ms_per_request`` is the server's, when it could be read."""

    throughput_rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float | None = None


Load = Callable[[str, Payload, int, int], Round]


def have_hey() -> bool:
    """Whether ``hey`` is on PATH (lighter on a shared CPU than the Python client)."""
    return shutil.which("hey") is not None


def load_with_hey(url: str, payload: Payload, clients: int, requests: int) -> Round:
    """One round with ``hey``: ``requests`` POSTs from ``clients`` concurrent workers.

    Read from hey's per-request CSV (failed requests have no row, so errors are the
    requests without a 200 row); req/s = answered requests / time to the last answer.
    """
    with tempfile.NamedTemporaryFile(suffix=".bin") as body:
        body.write(payload.data)
        body.flush()
        command = ["hey", "-n", str(requests), "-c", str(clients), "-m", "POST", "-t", "120", "-o", "csv"]
        result = subprocess.run(
            [*command, "-T", payload.media_type, "-D", body.name, url],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    rows = [line.split(",") for line in result.stdout.splitlines()[1:] if line.strip()]
    latencies = [float(row[0]) * 1000 for row in rows if row[6] == "200"]
    if not latencies:
        raise RuntimeError(f"no request succeeded:\n{result.stdout[:2000]}{result.stderr[:2000]}")
    wall = max(float(row[7]) + float(row[0]) for row in rows)
    p50, p99 = np.percentile(latencies, [50, 99])
    return Round(len(latencies) / wall, float(p50), float(p99), requests - len(latencies))


async def _load_with_httpx(url: str, payload: Payload, clients: int, requests: int) -> Round:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Content-Type": payload.media_type}
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one_client() -> None:
            nonlocal errors
            for _ in counter:
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=payload.data, headers=headers)
                    await response.aread()
                    errors += response.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - started
    p50, p99 = np.percentile(latencies, [50, 99])
    return Round(len(latencies) / wall, float(p50), float(p99), errors)


def load_with_httpx(url: str, payload: Payload, clients: int, requests: int) -> Round:
    """One round with an asyncio httpx client, closed loop like ``hey``."""
    return asyncio.run(_load_with_httpx(url, payload, clients, requests))
