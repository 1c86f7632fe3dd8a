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

from bench.demo_screenshot import CHROMIUM_FLAGS
from scene_contract.model import SAMPLES_DIR
from service.encoding import decode_png, from_base64
from service.main import create_app
from service.settings import Settings

from playwright.sync_api import Browser, Page, Route, expect, sync_playwright  # isort: skip

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
# The input is an <img>; the three maps are drawn into <canvas> elements.
PICTURE_WIDTH = "e => e instanceof HTMLImageElement ? e.complete && e.naturalWidth : e.width"


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
        # Each panel holds a picture of the scene's size.
        assert demo.eval_on_selector(panel, PICTURE_WIDTH) == 48
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
    assert demo.eval_on_selector("#semantic-image", PICTURE_WIDTH) == 100


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

    demo.route("**/predict", beyond_range)
    demo.set_input_files(
        "#image-file", files=[{"name": "street.png", "mimeType": "image/png", "buffer": scene_png}]
    )
    expect(demo.locator("body")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(demo.locator("#depth-caption")).to_have_text(
        "Depth: 1.0 m (bright) to beyond 1024.0 m (dark); sky black"
    )


def jpeg(rgb: np.ndarray, size: tuple[int, int]) -> bytes:
    """``rgb`` scaled (nearest) to ``size`` = (width, height), as a JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def legend(page: Page) -> dict[str, str]:
    """The classes table's legend: class name -> its swatch's colour."""
    rows = page.locator("#classes tbody tr td:first-child")
    names = rows.all_inner_texts()
    colours = page.eval_on_selector_all(
        "#classes tbody tr td:first-child .swatch", "swatches => swatches.map(s => s.style.background)"
    )
    return dict(zip(names, colours, strict=True))


def test_a_large_photo_is_scaled_down_in_the_browser_before_upload(demo: Page, scene: np.ndarray) -> None:
    photo = jpeg(scene, (1600, 1200))
    demo.set_input_files(
        "#image-file", files=[{"name": "big.jpg", "mimeType": "image/jpeg", "buffer": photo}]
    )
    expect(demo.locator("body")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    # The tiny model's input is 48x32: the upload is the smallest 4:3 size covering twice that.
    expect(demo.locator("#status")).to_contain_text("96×72 px · scaled from 1600×1200 in the browser")
    uploaded = int(demo.eval_on_selector("body", "b => b.dataset.uploadBytes"))
    assert 0 < uploaded < len(photo) / 4
    assert demo.eval_on_selector("#semantic-image", PICTURE_WIDTH) == 96
    # The legend: each class found, with the model card's colour.
    colours = legend(demo)
    assert {"sky", "road", "car"} <= set(colours)
    assert colours["sky"] == "rgb(70, 130, 180)" and colours["car"] == "rgb(0, 0, 142)"


def test_a_photo_dropped_on_the_page_is_predicted(demo: Page, scene_png: bytes) -> None:
    demo.evaluate(
        """bytes => {
            const file = new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" });
            const transfer = new DataTransfer();
            transfer.items.add(file);
            document.querySelector("#drop-zone").dispatchEvent(
                new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        list(scene_png),
    )
    expect(demo.locator("body")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(demo.locator("#status")).to_contain_text("100×60 px · 1 instance")
    assert {"car", "road", "sky"} <= set(legend(demo))


def canvas_pixels(page: Page, selector: str) -> np.ndarray:
    """The RGB pixels drawn on a canvas, ``uint8 [H, W, 3]``."""
    width, height, values = page.eval_on_selector(
        selector,
        """c => [c.width, c.height,
            Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data)]""",
    )
    return np.asarray(values, dtype=np.uint8).reshape(height, width, 4)[..., :3]


def test_the_pictures_drawn_in_the_browser_match_the_services_overlays(
    demo: Page, server: str, scene_png: bytes
) -> None:
    demo.set_input_files(
        "#image-file", files=[{"name": "street.png", "mimeType": "image/png", "buffer": scene_png}]
    )
    expect(demo.locator("body")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    served = httpx.post(
        server + "/predict",
        params={"overlay": "true"},
        content=scene_png,
        headers={"Content-Type": "image/png"},
        timeout=30,
    ).json()["overlay"]
    for canvas, field, tolerance in (
        ("#semantic-image", "png", 1),
        ("#instances-image", "instances_png", 1),
        # The browser reads depth back from 1/64 m steps, the service from the model's floats.
        ("#depth-image", "depth_png", 3),
    ):
        expected = decode_png(from_base64(served[field]))
        drawn = canvas_pixels(demo, canvas)
        assert drawn.shape == expected.shape
        difference = np.abs(drawn.astype(int) - expected.astype(int)).max()
        assert difference <= tolerance, (canvas, difference)


def test_quality_figures_say_what_they_were_measured_on(demo: Page) -> None:
    def with_metrics(route: Route) -> None:
        card = route.fetch().json()
        card["metrics"] = {
            "semantic_miou": 55.2,
            "semantic_iou_per_class": {"road": 96.3, "car": 73.4, "sign": 21.0, "pole": 0.0, "bus": None},
        }
        card["training"] = {"data_source": "procedural", "data_mix": {"procedural": 0.625, "camvid": 0.375}}
        route.fulfill(json=card)

    demo.route("**/metadata", with_metrics)
    demo.reload()
    expect(demo.locator("#model-line")).to_contain_text(
        "mIoU 55.2% on generated (procedural) validation scenes, not real photos", timeout=WAIT_MS
    )
    note = demo.locator("#model-note-text")
    expect(note).to_contain_text("squeezed to 48×32 pixels")
    expect(note).to_contain_text("(procedural 62.5%, camvid 37.5%)")  # adds up to 100
    expect(note).to_contain_text(
        "Finds (IoU on generated (procedural) validation scenes, not real photos): road 96%, car 73%."
    )
    expect(note).to_contain_text("Mostly misses: pole 0%.")
    # Between the two, a class is named as found in part, not left out.
    expect(note).to_contain_text("Finds in part: sign 21%.")
    expect(note).to_contain_text("never checked: bus")


def test_a_dataset_that_labels_few_classes_is_scored_over_those(demo: Page) -> None:
    """CamVid labels 11 of the 19 classes: the header gives the mIoU over those, and a class
    the data never labels is not listed as missed."""

    def with_metrics(route: Route) -> None:
        card = route.fetch().json()
        card["metrics"] = {
            "semantic_miou": 60.2,
            "semantic_miou_labelled": 71.1,
            "semantic_iou_per_class": {
                "road": 96.1,
                "fence": 49.5,  # shown as 50%: found
                "sign": 19.6,  # shown as 20%: found in part, not missed
                "pole": 19.4,
                "terrain": 0.0,
                "bus": None,
            },
            "semantic_unlabelled_classes": ["terrain"],
        }
        card["training"] = {"data_source": "camvid", "data_mix": {"camvid": 0.5, "procedural": 0.5}}
        route.fulfill(json=card)

    demo.route("**/metadata", with_metrics)
    demo.reload()
    expect(demo.locator("#model-line")).to_contain_text(
        "mIoU 71.1% over the classes labelled in CamVid validation frames (real street photos)",
        timeout=WAIT_MS,
    )
    note = demo.locator("#model-note-text")
    expect(note).to_contain_text("road 96%, fence 50%.")
    expect(note).to_contain_text("Finds in part: sign 20%.")
    expect(note).to_contain_text("Mostly misses: pole 19%.")
    expect(note).not_to_contain_text("terrain 0%")
    expect(note).to_contain_text("Not labelled in that data, so not scored: terrain.")
