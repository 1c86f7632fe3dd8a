"""What a photo costs through the demo page, against the same photo POSTed without overlays.

    python -m bench.demo_page [--model models/default/model.onnx] [--runs 5]
                              [--size 1280x720 --size 4032x3024] [--photo street.jpg] [--json out.json]

Starts ``scene-serve`` on 127.0.0.1 and opens its demo page in headless Chromium
(Playwright; the ``chromium`` of ``make system-deps``). For each photo, each run
measures, in the page and one after the other:

- ``demo``: the page's own flow for a chosen file — scaling it down in the browser,
  the upload, ``/predict`` and drawing the three pictures from the maps (the page's
  ``dataset`` timings), and the answer's bytes;
- ``plain``: ``fetch`` of ``/predict`` with the original photo and no overlay, the
  request any client would make, until its JSON text has arrived;
- ``overlay``: the same with ``overlay=true``, what the page asked for before it drew
  the pictures itself.

The photos are procedural street scenes scaled up to each ``--size`` with sensor-like
noise (so they compress like photos), as 90% JPEGs; ``--photo`` adds a file of your
own. Medians over ``--runs``; the ratios are of medians from the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PHOTO_URL = "/bench-photo.jpg"  # answered by Playwright, never by the server

# Runs in the page: fetch the photo (from the route above), POST it to /predict, time it.
FETCH_PREDICT = """async ([query]) => {
    const photo = await (await fetch("PHOTO_URL")).blob();
    const form = new FormData();
    form.append("image", photo, "photo.jpg");
    const started = performance.now();
    const response = await fetch("/predict" + query, { method: "POST", body: form });
    const text = await response.text();
    return [response.status, text.length, performance.now() - started, photo.size];
}""".replace("PHOTO_URL", PHOTO_URL)


def street_photo(width: int, height: int, seed: int = 3) -> bytes:
    """A procedural street scene at ``width`` x ``height`` with noise, as a 90% JPEG."""
    from training.data.procedural import ProceduralScenes

    scene = ProceduralScenes(split="test", seed=seed, count=1, height=256, width=512)[0].image
    big = np.asarray(Image.fromarray(scene).resize((width, height), Image.Resampling.BILINEAR), dtype=float)
    noisy = big + np.random.default_rng(seed).normal(0.0, 6.0, size=big.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(model: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "service.cli", "--model", str(model), "--port", str(port)]
    server = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.25)
    server.terminate()
    raise RuntimeError(f"scene-serve did not become ready; see {log}")


def measure_photo(page: Any, photo: bytes, runs: int, wait_ms: int) -> dict[str, Any]:
    """Median bytes and milliseconds of the demo flow, the plain request and the overlay request."""
    page.unroute(f"**{PHOTO_URL}")
    page.route(f"**{PHOTO_URL}", lambda route: route.fulfill(body=photo, content_type="image/jpeg"))
    rows: dict[str, list[dict[str, float]]] = {"demo": [], "plain": [], "overlay": []}
    for _ in range(runs):
        page.set_input_files("#image-file", files=[])
        page.evaluate("() => { document.body.dataset.state = 'idle'; }")
        page.set_input_files(
            "#image-file", files=[{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": photo}]
        )
        page.wait_for_function(
            "() => ['done', 'error'].includes(document.body.dataset.state)", timeout=wait_ms
        )
        data = page.evaluate("() => ({...document.body.dataset})")
        if data["state"] != "done":
            raise RuntimeError(f"the demo page failed: {page.inner_text('#status')}")
        stages = {key: float(data[key]) for key in ("prepareMs", "requestMs", "drawMs")}
        rows["demo"].append(
            {"bytes": float(data["answerBytes"]), "ms": sum(stages.values()), **stages}
            | {"upload_bytes": float(data["uploadBytes"])}
        )
        for name, query in (("plain", ""), ("overlay", "?overlay=true")):
            status, size, elapsed, uploaded = page.evaluate(FETCH_PREDICT, [query])
            if status != 200:
                raise RuntimeError(f"/predict{query} answered {status}")
            rows[name].append({"bytes": float(size), "ms": float(elapsed), "upload_bytes": float(uploaded)})
    medians = {
        name: {key: statistics.median(row[key] for row in values) for key in values[0]}
        for name, values in rows.items()
    }
    plain = medians["plain"]
    for name in ("demo", "overlay"):
        medians[name]["bytes_vs_plain"] = round(medians[name]["bytes"] / plain["bytes"], 3)
        medians[name]["time_vs_plain"] = round(medians[name]["ms"] / plain["ms"], 3)
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/default/model.onnx"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", action="append", help="WIDTHxHEIGHT of a generated photo (repeatable)")
    parser.add_argument("--photo", type=Path, action="append", default=[], help="a JPEG of your own")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    photos = {f"generated {size}": street_photo(*map(int, size.split("x"))) for size in args.size or []}
    if not photos and not args.photo:
        photos = {f"generated {w}x{h}": street_photo(w, h) for w, h in ((1280, 720), (4032, 3024))}
    photos |= {str(path): path.read_bytes() for path in args.photo}
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-demo-page-{port}.log"
    server = start_server(args.model, port, log)
    results = {}
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS
            )
            page = chromium.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => document.body.dataset.state === 'idle'", timeout=60_000)
            for name, photo in photos.items():
                measure_photo(page, photo, 1, 120_000)  # warm-up: JIT, ORT arenas, caches
                results[name] = measure_photo(page, photo, args.runs, 120_000)
                for kind, row in results[name].items():
                    ratios = (
                        f"  ({row['bytes_vs_plain']:.2f}x bytes, {row['time_vs_plain']:.2f}x time of plain)"
                        if kind != "plain"
                        else ""
                    )
                    print(
                        f"{name:24} {kind:8} upload {row['upload_bytes'] / 1024:8.1f} KiB  "
                        f"answer {row['bytes'] / 1024:8.1f} KiB  {row['ms']:7.1f} ms{ratios}",
                        flush=True,
                    )
            chromium.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
