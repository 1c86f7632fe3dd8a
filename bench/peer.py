"""scene-serve against a naive FastAPI + ONNX Runtime server, side by side, in one run.

    python -m bench.peer [--model models/default/model.onnx] [--naive-model FILE] [--clients 1 4 16 32]
                         [--photo street.jpg]
                         [--rounds 3] [--requests 200] [--jpeg-requests 40]
                         [--load-generator hey|httpx] [--json out.json] [--smoke]

Both servers run at once on 127.0.0.1 with the same model on the CPU provider:
``scene-serve`` with its defaults, and `bench.naive_server` (one ``session.run`` per
request in the thread pool, Pillow, two base64 PNGs back). Each is sent the same
images — a PNG street scene at the model's input size, a 2048x1024 JPEG of a scene
rendered at that size, and ``--photo`` if given — at each client count, a bounded
number of requests per round, closed loop
(each client sends its next request when the last is answered). Rounds alternate
which server goes first; every figure is the median over the rounds.

The load generator is ``hey`` when it is on PATH (Go, light on the shared CPU), else
an asyncio ``httpx`` client. It runs on the same machine as both servers, so
absolute figures are a floor; the ratio between the servers in one run is what
counts, and so does each server's CPU time per answered request (user + system, all
its threads, from /proc), which holds when other work shares the CPU — there a
server with more runnable threads simply gets a larger share of it, whatever its
efficiency. Also reported: ONNX Runtime alone on the PNG's pixels (batch 1, the
servers' thread setting), so "overhead" = scene-serve's p50 at 1 client / model-only
p50. ``--smoke`` runs a tiny version (1 and 2 clients, a few requests, a smaller
JPEG) to check the script works.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

from bench.load import Load, Payload, Round, have_hey, load_with_hey, load_with_httpx
from bench.service_latency import free_port, server_process
from scene_contract.card import ModelCard
from scene_contract.model import INPUT_NAME, METADATA_KEY
from training.data.procedural import ProceduralScenes

SERVERS = ("scene-serve", "naive")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Figure:
    server: str
    image: str
    clients: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float | None
    rounds: list[Round]


def scene_image(height: int, width: int, seed: int) -> Image.Image:
    """One procedural street scene (test split) rendered at ``height`` x ``width``."""
    scenes = ProceduralScenes(split="test", seed=seed, count=1, height=height, width=width)
    return Image.fromarray(scenes[0].image)


def model_input_size(model: Path) -> tuple[int, int]:
    """(height, width) the model's card says it takes."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    card = ModelCard.from_json(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY))
    return card.input.height, card.input.width


def payloads(smoke: bool, requests: int, jpeg_requests: int, model_size: tuple[int, int]) -> list[Payload]:
    """A PNG street scene at the model's input size ``(height, width)`` and a 2048x1024 JPEG scene."""
    png, jpeg = io.BytesIO(), io.BytesIO()
    scene_image(*model_size, seed=11).save(png, format="PNG")
    height, width = (256, 512) if smoke else (1024, 2048)
    scene_image(height, width, seed=12).save(jpeg, format="JPEG", quality=90)
    return [
        Payload(f"{model_size[1]}x{model_size[0]} PNG", "image/png", png.getvalue(), requests),
        Payload(f"{width}x{height} JPEG", "image/jpeg", jpeg.getvalue(), jpeg_requests),
    ]


def photo_payload(photo: Path, requests: int) -> Payload:
    """A photo file as it is (PNG, JPEG or WebP), named after the file and its size."""
    with Image.open(photo) as opened:
        kind, size = (opened.format or "").lower(), opened.size
    if kind not in ("png", "jpeg", "webp"):
        raise SystemExit(f"--photo: {photo} is not a PNG, JPEG or WebP image")
    return Payload(f"{photo.name} {size[0]}x{size[1]}", f"image/{kind}", photo.read_bytes(), requests)


def model_only_p50(model: Path, png: bytes, threads: int, runs: int) -> float:
    """Median milliseconds of one batch-1 ORT run on the PNG's pixels (CPU provider)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))[None]
    for _ in range(3):
        session.run(None, {INPUT_NAME: image})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {INPUT_NAME: image})
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@contextmanager
def server(
    name: str,
    model: Path,
    threads: int,
    providers: str = "CPUExecutionProvider",
    env: dict[str, str] | None = None,
    checkout: Path = REPO,
) -> Iterator[str]:
    """``name`` ("scene-serve" or "naive") on a free loopback port, ready; stopped on exit.

    ``providers``: ONNX Runtime providers, comma-separated, in order; ``env``: more
    environment variables for the server (``SCENE_*`` settings, say); ``checkout``: the
    copy of this repository whose code the server runs.
    """
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(checkout), **(env or {})}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if name == "scene-serve":
        environment |= {"SCENE_PROVIDERS": providers, "SCENE_INTRA_OP_THREADS": str(threads)}
        command = [sys.executable, "-m", "service.cli", "--model", str(model.resolve()), "--port", str(port)]
        ready_path = "/readyz"
    else:
        environment |= {"NAIVE_MODEL": str(model.resolve()), "NAIVE_PROVIDERS": providers}
        command = [sys.executable, "-m", "uvicorn", "bench.naive_server:app", "--port", str(port)]
        ready_path = "/openapi.json"
    command = [*command, "--host", "127.0.0.1", "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    with server_process(
        command, environment, port, name=name, ready_path=ready_path, cwd=checkout
    ) as process:
        _PIDS[base] = process.pid
        try:
            yield base
        finally:
            _PIDS.pop(base, None)


_PIDS: dict[str, int] = {}


def server_cpu_s(url: str) -> float | None:
    """CPU seconds (user + system, every thread) the server answering ``url`` has used so far;
    None where /proc is not there to read it from."""
    pid = next((pid for base, pid in _PIDS.items() if url.startswith(base)), None)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured_round(load: Load, url: str, payload: Payload, clients: int, requests: int) -> Round:
    """One round of ``load``, with the server's CPU milliseconds per answered request: a
    cost that holds when other work shares the machine, where requests per second do not."""
    cpu_before = server_cpu_s(url)
    result = load(url, payload, clients, requests)
    cpu_after = server_cpu_s(url)
    answered = requests - result.errors
    if cpu_before is None or cpu_after is None or answered == 0:
        return result
    return dataclasses.replace(result, cpu_ms_per_request=(cpu_after - cpu_before) * 1000 / answered)


def provider_in_use(name: str, base: str, payload: Payload) -> str:
    """The execution provider the server's session really runs on, from one answer."""
    response = httpx.post(
        base + "/predict", content=payload.data, headers={"Content-Type": payload.media_type}, timeout=120
    )
    response.raise_for_status()
    body = response.json()
    return str(body["model"]["execution_provider"] if name == "scene-serve" else body["provider"])


def median_figure(server: str, payload: Payload, clients: int, rounds: list[Round]) -> Figure:
    return Figure(
        server=server,
        image=payload.name,
        clients=clients,
        throughput_rps=statistics.median(r.throughput_rps for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        errors=sum(r.errors for r in rounds),
        cpu_ms_per_request=(
            statistics.median(r.cpu_ms_per_request for r in rounds if r.cpu_ms_per_request is not None)
            if all(r.cpu_ms_per_request is not None for r in rounds)
            else None
        ),
        rounds=rounds,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models/default/model.onnx")
    parser.add_argument(
        "--naive-model",
        type=Path,
        help="the naive server's model (default: --model), e.g. fp32 against scene-serve's int8",
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setting; medians are reported")
    parser.add_argument("--requests", type=int, default=200, help="PNG requests per round")
    parser.add_argument("--jpeg-requests", type=int, default=40, help="JPEG requests per round")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT decides)")
    parser.add_argument("--load-generator", choices=["hey", "httpx"], help="default: hey when on PATH")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout whose scene-serve runs alongside, as 'scene-serve (before)'",
    )
    parser.add_argument(
        "--images", choices=["png", "jpeg", "both"], default="both", help="which generated images to send"
    )
    parser.add_argument(
        "--photo", type=Path, help="also send this photo (PNG, JPEG or WebP), e.g. a 1024x512 street photo"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the script works")
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.rounds, args.requests, args.jpeg_requests = [1, 2], 1, 4, 2
    return args


def measure_payload(
    load: Load, urls: dict[str, str], payload: Payload, args: argparse.Namespace
) -> list[Figure]:
    """Every server under ``payload`` at each client count: the median of ``args.rounds`` rounds."""
    names = list(urls)
    figures: list[Figure] = []
    for name in names:  # warm every server's code paths for this image
        load(urls[name], payload, 2, 4)
    for clients in args.clients:
        # hey sends requests // clients per worker: keep it a whole multiple.
        requests = max(payload.requests, 2 * clients) // clients * clients
        rounds: dict[str, list[Round]] = {name: [] for name in names}
        for index in range(args.rounds):
            # Each round starts with another server, so drifting load spreads evenly.
            for name in names[index % len(names) :] + names[: index % len(names)]:
                rounds[name].append(measured_round(load, urls[name], payload, clients, requests))
        row = {name: median_figure(name, payload, clients, rounds[name]) for name in names}
        figures.extend(row.values())
        ratio = row["scene-serve"].throughput_rps / row["naive"].throughput_rps
        print(
            f"{payload.name:>15} clients {clients:2}: "
            + "   ".join(
                f"{f.server} {f.throughput_rps:6.1f} req/s p50 {f.p50_ms:7.1f} "
                f"p99 {f.p99_ms:7.1f} ms errors {f.errors} CPU {f.cpu_ms_per_request or 0:.1f} ms/req"
                for f in row.values()
            )
            + f"   scene-serve/naive {ratio:.2f}x"
        )
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = {"scene-serve": args.model, "naive": args.naive_model or args.model}
    generator = args.load_generator or ("hey" if have_hey() else "httpx")
    load = load_with_hey if generator == "hey" else load_with_httpx
    model_size = model_input_size(args.model)
    images = payloads(args.smoke, args.requests, args.jpeg_requests, model_size)
    images = [p for p in images if args.images == "both" or p.media_type == f"image/{args.images}"]
    if args.photo is not None:
        images.append(photo_payload(args.photo, args.jpeg_requests))
    # A SIGTERM (a timeout, say) unwinds like an exception, so the servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    baseline = model_only_p50(args.model, images[0].data, args.threads, 10 if args.smoke else 100)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"onnxruntime {ort.__version__}, load generator {generator}"
    )
    print(f"model only (ORT, batch 1, {model_size[0]}x{model_size[1]}): p50 {baseline:.2f} ms")
    print("models: " + ", ".join(f"{name} {path}" for name, path in models.items()))
    figures: list[Figure] = []
    with contextlib.ExitStack() as running:
        urls = {
            name: running.enter_context(server(name, models[name], args.threads)) + "/predict"
            for name in SERVERS
        }
        if args.before is not None:
            before = server("scene-serve", args.model, args.threads, checkout=args.before.resolve())
            urls["scene-serve (before)"] = running.enter_context(before) + "/predict"
        for payload in images:
            figures += measure_payload(load, urls, payload, args)
    ours_single = next(f for f in figures if f.server == "scene-serve" and f.clients == min(args.clients))
    overhead = ours_single.p50_ms / baseline
    print(f"service overhead: {overhead:.2f}x (scene-serve p50 at 1 client / model-only p50)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "load_generator": generator,
                    "model_only_p50_ms": baseline,
                    "models": {name: str(path) for name, path in models.items()},
                    "figures": [asdict(f) for f in figures],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
