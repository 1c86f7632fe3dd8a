"""Soak: a bounded stream of good, bad, huge and abandoned requests, then abusive clients.

    python -m bench.soak --model model.onnx [--count 10000] [--clients 32]
                         [--abusive 8] [--hold-s 10] [--json out.json] [--smoke]

A real ``scene-serve`` process (one worker, CPU, 127.0.0.1, ``SCENE_BODY_TIMEOUT_S=3``
so stalled uploads resolve quickly) is driven with raw HTTP/1.1 over asyncio streams,
so the client controls exactly when it stops sending or reading:

1. warm-up: a tenth as many requests as the mix (at least two per client), of the
   same kinds; then the server's RSS is the baseline;
2. the mix: ``count`` requests from ``clients`` concurrent clients, drawn with a fixed
   seed — 55% good street scenes (JSON), 10% good as npz, 10% corrupt bytes, 5% a
   4096x4096 PNG asking for npz maps at its own size (``resolution=original``, over the
   output budget), 5% a 200000x20 PNG,
   10% abandoned (the client closes right after sending), 5% stalled uploads (a third
   of the declared body, then silence); RSS is read after every tenth of it;
3. abusive clients: ``abusive`` clients each ask for the largest maps the budget
   allows (npz of a 1920x1080 image at its own size) and never read the answer, for
   ``hold_s`` seconds, while RSS is sampled every 100 ms; then they hang up;
4. after: two good requests per client, then the RSS is read once more.

Reported (RSS from ``/proc``, so Linux only): the baseline, the trace over the mix,
growth over the mix, the peak during the abusive clients and over the whole run (the
kernel's VmHWM), and the RSS at the end; outcomes by kind, status and error code as
the clients saw them and ``scene_errors_total`` as the server counted them; p50/p99
of the good requests of the mix; and 5xx answers other than 503. ``--smoke`` runs a
few requests of each kind, for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bench.service_latency import free_port, server_process
from training.data.procedural import ProceduralScenes

KINDS: dict[str, float] = {
    "good": 0.55,
    "good_npz": 0.10,
    "corrupt": 0.10,
    "huge_npz": 0.05,
    "thin": 0.05,
    "abandoned": 0.10,
    "stalled": 0.05,
}
BODY_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Answer:
    status: int  # 0: the client hung up before any answer (abandoned, abusive)
    code: str  # the error code, "" for 2xx
    seconds: float
    body_bytes: int


@dataclass
class Report:
    count: int
    clients: int
    abusive: int
    hold_s: float
    seconds: float
    rss_baseline_mb: float
    rss_trace_mb: list[float]
    rss_after_mix_mb: float
    rss_growth_pct: float
    rss_abusive_peak_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    good_p50_ms: float
    good_p99_ms: float
    outcomes: dict[str, int] = field(default_factory=dict)
    server_errors_by_reason: dict[str, float] = field(default_factory=dict)
    unexpected_5xx: int = 0


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Bodies:
    """The request bodies, made once: street scenes at the model's size, and the abusive ones."""

    def __init__(self, height: int, width: int, budget_side: tuple[int, int]) -> None:
        scenes = ProceduralScenes(split="test", seed=0, count=8, height=height, width=width)
        self.scenes = [png(Image.fromarray(scenes[i].image)) for i in range(len(scenes))]
        self.corrupt = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
        self.huge = png(Image.new("L", (4096, 4096)))
        self.thin = png(Image.new("L", (200_000, 20)))
        # The largest maps the budget allows, from a real scene scaled up (so PNG decoding costs).
        self.largest = png(Image.open(io.BytesIO(self.scenes[0])).resize(budget_side))


def request_bytes(path: str, body: bytes, headers: dict[str, str], declared: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"Content-Length: {declared if declared is not None else len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(port: int, raw: bytes, *, read: bool = True) -> Answer:
    """Send ``raw``; then read the whole answer, or hang up at once when ``read`` is False.

    A ``raw`` shorter than its declared body is a stalled upload: the rest never comes.
    """
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        if not read:
            return Answer(0, "hung_up", time.perf_counter() - started, 0)
        data = await asyncio.wait_for(reader.read(-1), READ_TIMEOUT_S)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    code = ""
    if status >= 400:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError):
            code = "unparsed"
    return Answer(status, code, time.perf_counter() - started, len(body))


async def one(port: int, kind: str, bodies: Bodies, rng: random.Random) -> Answer:
    image = {"Content-Type": "image/png"}
    npz = image | {"Accept": "application/x-npz"}
    scene = rng.choice(bodies.scenes)
    if kind == "good":
        return await exchange(port, request_bytes("/predict", scene, image))
    if kind == "good_npz":
        return await exchange(port, request_bytes("/predict", scene, npz))
    if kind == "corrupt":
        return await exchange(port, request_bytes("/predict", bodies.corrupt, image))
    if kind == "huge_npz":
        return await exchange(port, request_bytes("/predict?resolution=original", bodies.huge, npz))
    if kind == "thin":
        return await exchange(port, request_bytes("/predict", bodies.thin, npz))
    if kind == "abandoned":
        return await exchange(port, request_bytes("/predict", scene, image), read=False)
    if kind == "stalled":
        third = bodies.largest[: len(bodies.largest) // 3]
        raw = request_bytes("/predict", third, image, declared=len(bodies.largest))
        return await exchange(port, raw)
    raise ValueError(kind)


async def run_clients(
    port: int, kinds: list[str], clients: int, bodies: Bodies, seed: int
) -> list[tuple[str, Answer]]:
    """Send ``kinds`` in order from ``clients`` concurrent clients; each waits for its last answer."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for kind in kinds:
        queue.put_nowait(kind)
    answers: list[tuple[str, Answer]] = []

    async def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        while not queue.empty():
            kind = queue.get_nowait()
            answers.append((kind, await one(port, kind, bodies, rng)))

    await asyncio.gather(*(client(i) for i in range(clients)))
    return answers


async def abusive_clients(port: int, count: int, hold_s: float, body: bytes, pid: int) -> float:
    """``count`` clients ask for the largest npz maps and read nothing for ``hold_s`` seconds;
    the server's highest RSS meanwhile, sampled every 100 ms."""
    headers = {"Content-Type": "image/png", "Accept": "application/x-npz"}
    connections = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes("/predict", body, headers))
        await writer.drain()
        connections.append((reader, writer))
    peak = rss_mb(pid)
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        peak = max(peak, rss_mb(pid))
    for _, writer in connections:
        writer.transport.abort()  # hang up with the answer unread
    return peak


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


@contextmanager
def server(model: Path, threads: int) -> Iterator[tuple[int, int]]:
    """A ``scene-serve`` process on a free loopback port, ready: ``(port, pid)``; stopped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "SCENE_PROVIDERS": "CPUExecutionProvider",
        "SCENE_INTRA_OP_THREADS": str(threads),
        "SCENE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    command = [sys.executable, "-m", "service.cli", "--model", str(model), "--host", "127.0.0.1"]
    with server_process([*command, "--port", str(port), "--log-level", "warning"], env, port) as process:
        yield port, process.pid


def error_counts(port: int) -> dict[str, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).partition(b"\r\n\r\n")[2].decode()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "scene_errors_total"
    }


def card_size(model: Path) -> tuple[int, int]:
    import onnxruntime as ort

    from scene_contract.model import METADATA_KEY

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    card = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    return int(card["input"]["height"]), int(card["input"]["width"])


def soak(
    model: Path, count: int, clients: int, abusive: int, hold_s: float, threads: int, seed: int
) -> Report:
    height, width = card_size(model)
    # 1920x1080 fits the default SCENE_MAX_OUTPUT_PIXELS (2,097,152); it is the abusive request.
    bodies = Bodies(height, width, budget_side=(1920, 1080))
    rng = random.Random(seed)
    names, weights = zip(*KINDS.items(), strict=True)
    warm_up = rng.choices(names, weights, k=max(2 * clients, count // 10))
    kinds = rng.choices(names, weights, k=count)
    tenth = max(1, count // 10)
    started = time.perf_counter()
    with server(model, threads) as (port, pid):
        asyncio.run(run_clients(port, warm_up, clients, bodies, seed + 1))
        baseline = rss_mb(pid)
        answers, trace = [], []
        for start in range(0, count, tenth):
            answers += asyncio.run(
                run_clients(port, kinds[start : start + tenth], clients, bodies, seed + start)
            )
            trace.append(round(rss_mb(pid), 1))
        after_mix = rss_mb(pid)
        abusive_peak = asyncio.run(abusive_clients(port, abusive, hold_s, bodies.largest, pid))
        time.sleep(1)  # let the server notice the hang-ups
        asyncio.run(run_clients(port, ["good"] * clients * 2, clients, bodies, seed + 2))
        end = rss_mb(pid)
        peak = rss_mb(pid, "VmHWM")
        reasons = error_counts(port)
    good = sorted(a.seconds * 1000 for kind, a in answers if kind in ("good", "good_npz") and a.status == 200)
    outcomes = Counter(f"{kind} -> {a.status} {a.code}".rstrip() for kind, a in answers)
    return Report(
        count=count,
        clients=clients,
        abusive=abusive,
        hold_s=hold_s,
        seconds=round(time.perf_counter() - started, 1),
        rss_baseline_mb=round(baseline, 1),
        rss_trace_mb=trace,
        rss_after_mix_mb=round(after_mix, 1),
        rss_growth_pct=round(100 * (after_mix - baseline) / baseline, 1),
        rss_abusive_peak_mb=round(abusive_peak, 1),
        rss_peak_mb=round(peak, 1),
        rss_end_mb=round(end, 1),
        good_p50_ms=round(statistics.median(good), 1) if good else float("nan"),
        good_p99_ms=round(good[min(len(good) - 1, int(0.99 * len(good)))], 1) if good else float("nan"),
        outcomes=dict(sorted(outcomes.items())),
        server_errors_by_reason=dict(sorted(reasons.items())),
        unexpected_5xx=sum(1 for _, a in answers if a.status >= 500 and a.status != 503),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/default/model.onnx"))
    parser.add_argument(
        "--count", type=int, default=10_000, help="requests in the mix (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default: %(default)s)")
    parser.add_argument(
        "--abusive", type=int, default=8, help="clients that never read (default: %(default)s)"
    )
    parser.add_argument(
        "--hold-s", type=float, default=10.0, help="how long they hold on (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="SCENE_INTRA_OP_THREADS (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--smoke", action="store_true", help="a few requests of each kind, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.count, args.clients, args.abusive, args.hold_s = 40, 4, 2, 1.0
    report = soak(args.model, args.count, args.clients, args.abusive, args.hold_s, args.threads, args.seed)
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
