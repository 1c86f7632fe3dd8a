"""Peak memory and response size of one /predict request, per pixel, for each output choice.

    python -m bench.request_memory --model model.onnx [--width 1920] [--height 1080]
                                   [--threads 1] [--json out.json] [--smoke]

Each choice (``Accept`` JSON or npz, ``outputs``, ``overlay``, ``resolution``) runs
in a fresh Python process: the app is started in-process, warmed up with one request
at the model's size, then sent one ``width`` x ``height`` street scene (a procedural
scene scaled up, PNG) straight through ASGI, with no HTTP client holding a copy of
the answer. Measured: the rise of the process's peak RSS during that request (Linux
``VmHWM``, reset through ``/proc/self/clear_refs`` just before it) and the response
body's size, each divided by the image's pixels. A fresh process per choice means a
fresh heap, so the figures are what a first request of that kind costs, not one
that reuses memory freed by an earlier one.

``--photo`` sends instead a 4032x3024 JPEG (12 MP, a phone camera's size) at the
default settings (``SCENE_MAX_OUTPUT_PIXELS`` included), asking for the default
``resolution=auto`` with and without overlays: the maps then come back scaled to the
output budget, and ``peak_mb`` is the figure to hold against docs/serving.md's
per-request memory. ``--smoke`` runs two choices on a small image, for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CHOICES: list[dict[str, str]] = [
    {"accept": "json", "outputs": "semantic", "overlay": "false", "resolution": "original"},
    {"accept": "json", "outputs": "instances", "overlay": "false", "resolution": "original"},
    {"accept": "json", "outputs": "depth", "overlay": "false", "resolution": "original"},
    {"accept": "json", "outputs": "semantic,instances,depth", "overlay": "false", "resolution": "original"},
    {"accept": "json", "outputs": "semantic,instances,depth", "overlay": "true", "resolution": "original"},
    {"accept": "npz", "outputs": "semantic", "overlay": "false", "resolution": "original"},
    {"accept": "npz", "outputs": "instances", "overlay": "false", "resolution": "original"},
    {"accept": "npz", "outputs": "depth", "overlay": "false", "resolution": "original"},
    {"accept": "npz", "outputs": "semantic,instances,depth", "overlay": "false", "resolution": "original"},
    {"accept": "json", "outputs": "semantic,instances,depth", "overlay": "true", "resolution": "model"},
]
PHOTO_CHOICES: list[dict[str, str]] = [
    {"accept": "json", "outputs": "semantic,instances,depth", "overlay": "false", "resolution": "auto"},
    {"accept": "json", "outputs": "semantic,instances,depth", "overlay": "true", "resolution": "auto"},
    {"accept": "npz", "outputs": "semantic,instances,depth", "overlay": "false", "resolution": "auto"},
]
PHOTO_SIZE = (4032, 3024)


@dataclass(frozen=True)
class Measurement:
    accept: str
    outputs: str
    overlay: str
    resolution: str
    status: int
    peak_bytes_per_pixel: float
    response_bytes_per_pixel: float
    peak_mb: float
    map_pixels: int


def proc_status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/self/status")


def scene_png(width: int, height: int, model_height: int, model_width: int, kind: str = "PNG") -> bytes:
    from PIL import Image

    from training.data.procedural import ProceduralScenes

    scene = ProceduralScenes(split="test", seed=1, count=1, height=model_height, width=model_width)[0]
    buffer = io.BytesIO()
    Image.fromarray(scene.image).resize((width, height), Image.Resampling.BILINEAR).save(buffer, format=kind)
    return buffer.getvalue()


async def asgi_post(app: Any, query: str, body: bytes, accept: str) -> tuple[int, int, int]:
    """POST /predict straight into the ASGI app; ``(status, response body bytes, map pixels)``."""
    media_type = b"image/jpeg" if body.startswith(b"\xff\xd8") else b"image/png"
    headers = [(b"content-type", media_type), (b"host", b"bench")]
    if accept == "npz":
        headers.append((b"accept", b"application/x-npz"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    sent = False
    finished = asyncio.Event()
    status, size, map_pixels = 0, 0, 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size, map_pixels
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                if name.lower() == b"scene-map-size":  # "scaled; maps=1672x1254; image=4032x3024"
                    maps = value.decode().split("maps=", 1)[1].split(";", 1)[0]
                    map_pixels = int(maps.split("x")[0]) * int(maps.split("x")[1])
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                finished.set()

    await app(scope, receive, send)
    return status, size, map_pixels


async def measure_one(
    model: Path, choice: dict[str, str], width: int, height: int, threads: int, photo: bool = False
) -> Measurement:
    from service.main import create_app
    from service.settings import Settings

    # A photo is measured at the default output budget; the rows at the budget's own size.
    settings = Settings(model_path=model, providers=["CPUExecutionProvider"], intra_op_threads=threads)
    if not photo:
        settings = settings.model_copy(update={"max_output_pixels": max(width * height, 2_097_152)})
    app = create_app(settings)
    query = "&".join(f"{key}={choice[key]}" for key in ("outputs", "overlay", "resolution"))
    async with app.router.lifespan_context(app):
        state = app.state.service
        while not state.ready:
            await asyncio.sleep(0.05)
        model_height, model_width = state.runtime.input_size
        small = scene_png(model_width, model_height, model_height, model_width)
        big = scene_png(width, height, model_height, model_width, "JPEG" if photo else "PNG")
        await asgi_post(app, query, small, choice["accept"])
        gc.collect()
        before_kb = proc_status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        status, size, map_pixels = await asgi_post(app, query, big, choice["accept"])
        peak_kb = proc_status_kb("VmHWM")
    # Per pixel of the maps returned (the image's pixels unless they were scaled down).
    pixels = map_pixels or width * height
    return Measurement(
        **choice,
        status=status,
        peak_bytes_per_pixel=round((peak_kb - before_kb) * 1024 / pixels, 1),
        response_bytes_per_pixel=round(size / pixels, 2),
        peak_mb=round((peak_kb - before_kb) / 1024, 1),
        map_pixels=map_pixels,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/default/model.onnx"))
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--threads", type=int, default=1, help="SCENE_INTRA_OP_THREADS (%(default)s)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--smoke", action="store_true", help="two choices on a small image, for tests")
    parser.add_argument("--photo", action="store_true", help="a 12 MP JPEG at the default settings")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a choice as JSON: run it in this process
    args = parser.parse_args(argv)
    if args.one:
        measured = asyncio.run(
            measure_one(args.model, json.loads(args.one), args.width, args.height, args.threads, args.photo)
        )
        print(json.dumps(asdict(measured)))
        return 0
    choices = [CHOICES[3], CHOICES[8]] if args.smoke else PHOTO_CHOICES if args.photo else CHOICES
    width, height = (320, 160) if args.smoke else PHOTO_SIZE if args.photo else (args.width, args.height)
    results = []
    for choice in choices:
        command = [sys.executable, "-m", "bench.request_memory", "--model", str(args.model)]
        command += ["--width", str(width), "--height", str(height), "--threads", str(args.threads)]
        command += ["--photo"] if args.photo else []
        output = subprocess.run(
            [*command, "--one", json.dumps(choice)], capture_output=True, text=True, check=True
        )
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
        row = results[-1]
        print(
            f"{row['accept']:4} {row['outputs']:26} overlay={row['overlay']:5} {row['resolution']:8} "
            f"status {row['status']}  peak {row['peak_mb']:6.1f} MB ({row['peak_bytes_per_pixel']:.1f} B/px) "
            f"response {row['response_bytes_per_pixel']:5.2f} B/px",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps({"width": width, "height": height, "results": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
