"""The demo page: its endpoints in-process, then the real page in headless Chromium."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from scene_contract.model import SAMPLES_DIR
from service.main import create_app
from service.settings import Settings

from playwright.sync_api import Browser, Page, Route, expect, sync_playwright  # isort: skip

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000


@pytest.mark.anyio
async def test_the_page_and_its_assets_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in page.text
    for asset, media_type in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        response = await client.get(asset)
        assert response.status_code == 200 and media_type in response.headers["content-type"]
    assert (await client.get("/static/../settings.py")).status_code == 404


@pytest.mark.anyio
async def test_the_favicon_is_not_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/favicon.ico")
    assert response.status_code == 204 and not response.content


@pytest.mark.anyio
async def test_samples_are_the_images_beside_the_model(client: httpx.AsyncClient, model_path: Path) -> None:
    samples = sorted((model_path.parent / SAMPLES_DIR).glob("*.png"))
    first = await client.get("/demo/sample.png", params={"seed": 1})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content == samples[1].read_bytes()
    image = np.asarray(Image.open(io.BytesIO(first.content)))
    assert image.shape == (32, 48, 3)  # the tiny model's input size
    # Any seed is valid: it wraps around the samples there are.
    wrapped = await client.get("/demo/sample.png", params={"seed": 1 + len(samples)})
    other = await client.get("/demo/sample.png", params={"seed": 2})
    assert wrapped.content == first.content != other.content
    refused = await client.get("/demo/sample.png", params={"seed": -1})
    assert refused.status_code == 422 and refused.json()["error"]["code"]


@pytest.mark.anyio
async def test_a_model_without_samples_says_so(
    build_model: Callable[..., Path],
    make_settings: Callable[..., Settings],
    serve: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    async with serve(create_app(make_settings(model_path=build_model()))) as client:
        response = await client.get("/demo/sample.png")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "scene-export writes them" in response.json()["error"]["message"]


@pytest.mark.anyio
async def test_samples_need_the_token_when_one_is_set(
    make_settings: Callable[..., Settings],
    serve: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    async with serve(create_app(make_settings(api_token="s3cret"))) as client:
        assert (await client.get("/")).status_code == 200  # the page itself is open
        assert (await client.get("/demo/sample.png")).status_code == 401
        granted = await client.get("/demo/sample.png", headers={"Authorization": "Bearer s3cret"})
        assert granted.status_code == 200


@pytest.fixture(scope="module")
def browser(system_tool: Callable[[str, str], str]) -> Iterator[Browser]:
    chromium = system_tool("chromium", "chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def demo(browser: Browser, server: str) -> Iterator[Page]:
    """The demo page of a real server, freshly loaded in Chromium, with the model card read."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + "/")
    expect(page.locator("#model-line")).to_contain_text("tiny-test 0.0.1", timeout=WAIT_MS)
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sigma_cells(page: Page) -> list[list[str]]:
    rows = page.locator("#sigma tbody tr")
    return [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]


PANELS = ("#input-image", "#semantic-image", "#instances-image", "#depth-image")


def test_a_generated_scene_shows_all_three_tasks(demo: Page) -> None:
    for panel in PANELS:  # no broken-image placeholders before the first run
        expect(demo.locator(panel)).to_be_hidden()
    # The card's σ are shown before any prediction.
    assert sigma_cells(demo) == [
        ["semantic", "0.500", "-1.386"],
        ["instance", "2.000", "1.386"],
        ["depth", "1.000", "0.000"],
    ]
    demo.fill("#seed", "5")
    demo.click("#sample-button")
    expect(demo.locator("body")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    for panel in PANELS:
        expect(demo.locator(panel)).to_be_visible()
        # Each panel holds a decoded picture of the scene's size.
        assert demo.eval_on_selector(panel, "img => img.complete && img.naturalWidth") == 48
    expect(demo.locator("#timings tbody tr")).to_have_count(7)
    expect(demo.locator("#classes tbody tr").first).to_be_visible()
    expect(demo.locator("#status")).to_contain_text("48×32 px")


def test_an_uploaded_image_lists_its_instance(demo: Page, scene_png: bytes) -> None:
    demo.set_input_files(
        "#image-file", files=[{"name": "street.png", "mimeType": "image/png", "buffer": scene_png}]
    )
    expect(demo.locator("body")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(demo.locator("#status")).to_contain_text("100×60 px · 1 instance")
    [row] = [demo.locator("#instances tbody tr").nth(0).locator("td").all_inner_texts()]
    assert row[1] == "car" and int(row[2]) > 0
    classes = demo.locator("#classes tbody tr td:first-child").all_inner_texts()
    assert {"car", "road", "sky"} <= set(classes)
    assert demo.eval_on_selector("#semantic-image", "img => img.naturalWidth") == 100


def test_a_bad_file_shows_the_services_error(demo: Page) -> None:
    demo.set_input_files(
        "#image-file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not a png"}]
    )
    expect(demo.locator("body")).to_have_attribute("data-state", "error", timeout=WAIT_MS)
    expect(demo.locator("#status")).to_contain_text("400 corrupt_image")


def test_depth_beyond_the_pngs_range_is_captioned_so(demo: Page, scene_png: bytes) -> None:
    # The tiny model cannot see past 255 m, so the answer is edited on its way to the page.
    def beyond_range(route: Route) -> None:
        body = route.fetch().json()
        body["depth"] |= {"min_m": 1.0, "max_m": 1023.984375, "beyond_range": True}
        route.fulfill(json=body)

    demo.route("**/predict?*", beyond_range)
    demo.set_input_files(
        "#image-file", files=[{"name": "street.png", "mimeType": "image/png", "buffer": scene_png}]
    )
    expect(demo.locator("body")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(demo.locator("#depth-caption")).to_have_text(
        "Depth: 1.0 m (bright) to beyond 1024.0 m (dark); sky black"
    )
