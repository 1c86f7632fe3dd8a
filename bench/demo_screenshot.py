"""The README's picture of the demo page, taken from the real page in headless Chromium.

    python -m bench.demo_screenshot [--model models/default/model.onnx] [--image street.png]
                                    [--out docs/images/demo.png]

Starts ``scene-serve`` with the model on a free loopback port, opens the demo page,
uploads ``--image`` (default: the model's sample scene 0 through the page's own
button), waits for the maps and saves a screenshot of the page. Chromium comes from
``make system-deps``; Playwright from the dev extra.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from bench import peer

# How Chromium is launched here and in the demo tests: no sandbox (root), and nothing that
# reaches for the network (this machine's closed network refuses it, many times a start).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=peer.REPO / "models/default/model.onnx")
    parser.add_argument("--image", type=Path, help="a photo to upload (default: sample scene 0)")
    parser.add_argument("--out", type=Path, default=peer.REPO / "docs/images/demo.png")
    parser.add_argument("--width", type=int, default=1280, help="browser window width (px)")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is missing: run `make system-deps`")
    with peer.server("scene-serve", args.model, 0) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(base + "/")
        expect(page.locator("#model-line")).not_to_contain_text("Loading", timeout=60_000)
        if args.image is not None:
            page.set_input_files("#image-file", str(args.image))
        else:
            page.click("#sample-button")
        expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=120_000)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
