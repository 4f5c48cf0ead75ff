"""The annotation app in a real browser (headless Debian chromium through Playwright): strokes, fills,
undo, the model's pre-fill, two tabs, unsaved strokes across a reload, and the token, checked on the
mask files the app writes."""
from pathlib import Path

import numpy as np
import pytest

from pixelwise.data.io import read_image, read_mask
from pixelwise.inference.predict import load
from pixelwise.web.server import serving
from pixelwise.web.store import superpixel_labels
from webdata import H, W, cells_dataset

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need Debian's chromium at "
                                "/usr/bin/chromium (apt-get install chromium); Playwright's own download is not used")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def served(tmp_path):
    """-> (dataset root, app, URL with token) of a running app on a fresh copy of the three-image dataset."""
    root = cells_dataset(tmp_path / "cells")
    with serving(root, log=lambda _: None) as (app, url):
        yield root, app, url


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1000, "height": 700})
    errors = []
    ctx.on("page", lambda page: page.on("pageerror", lambda err: errors.append(err)))
    yield ctx
    ctx.close()
    assert not errors, errors


def open_app(context, url: str, item: int):
    page = context.new_page()
    page.goto(f"{url}#item={item}")
    page.wait_for_selector('body[data-ready="1"]')
    return page


def at(page, x: int, y: int) -> tuple[float, float]:
    """Page coordinates of the centre of image pixel (x, y), whatever the zoom."""
    box = page.locator("#mask").bounding_box()
    scale = box["width"] / W
    return box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale


def click(page, x: int, y: int) -> None:
    page.mouse.click(*at(page, x, y))


def stroke(page, points) -> None:
    page.mouse.move(*at(page, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(page, *point), steps=8)
    page.mouse.up()


def set_size(page, size: int) -> None:
    while int(page.inner_text("#size")) != size:
        page.keyboard.press("[" if int(page.inner_text("#size")) > size else "]")


def save(page, count: int) -> None:
    """Ctrl+S, then wait for the app to count its `count`-th successful save."""
    page.keyboard.press("Control+s")
    page.wait_for_selector(f'body[data-saves="{count}"]')


def test_a_square_brush_stroke_is_saved_pixel_exact_and_undo_removes_it(served, context):
    root, _, url = served
    page = open_app(context, url, 0)  # a.png, no mask yet: all ignore
    page.keyboard.press("2")  # class 1
    page.keyboard.press("q")  # square brush
    set_size(page, 5)
    stroke(page, [(10, 20), (30, 20), (30, 30)])
    expected = np.full((H, W), 255)
    expected[18:23, 8:33] = 1  # 5x5 squares centred on every pixel from (10, 20) to (30, 20)
    expected[18:33, 28:33] = 1  # ... and on down to (30, 30)
    save(page, 1)
    assert (read_mask(root / "masks" / "a.png") == expected).all()
    page.keyboard.press("Control+z")
    save(page, 2)
    assert (read_mask(root / "masks" / "a.png") == 255).all()
    page.keyboard.press("Control+y")
    save(page, 3)
    assert (read_mask(root / "masks" / "a.png") == expected).all()


def test_flood_superpixel_and_polygon_fills_are_exact(served, context):
    root, _, url = served
    page = open_app(context, url, 1)  # b.png
    expected = np.full((H, W), 255)
    page.keyboard.press("3")  # class 2
    page.keyboard.press("f")
    click(page, 15, 10)  # inside the red block
    expected[6:20, 8:28] = 2
    page.keyboard.press("2")  # class 1
    page.keyboard.press("s")
    page.wait_for_selector('body[data-superpixels="1"]')
    click(page, 45, 30)
    superpixels = superpixel_labels(read_image(root / "images" / "b.png"))
    expected[superpixels == superpixels[30, 45]] = 1
    page.keyboard.press("p")
    for corner in ((2, 30), (20, 30), (20, 44), (2, 44)):
        click(page, *corner)
    page.keyboard.press("Enter")
    expected[30:44, 2:20] = 1  # pixel centres inside the corners' centres: x 2-19, y 30-43
    save(page, 1)
    assert (read_mask(root / "masks" / "b.png") == expected).all()


def test_an_unlabelled_image_opens_with_exactly_the_models_prediction(tmp_path, context, checkpoint):
    root = cells_dataset(tmp_path / "cells")
    with serving(root, checkpoint, log=lambda _: None) as (app, url):
        page = open_app(context, url, 0)
        assert page.inner_text("#message") == "pre-filled by the model"
        regions = app.state.session.assistant.predict(root / "images" / "a.png").regions
        page.keyboard.press("u")
        assert page.inner_text("#message").startswith(
            f"unsure region 1 of {len(regions)}" if regions else "no unsure region")
        save(page, 1)
    assert (read_mask(root / "masks" / "a.png") == load(checkpoint).predict(root / "images" / "a.png")).all()


def test_a_save_from_a_second_tab_on_the_same_mask_gets_a_conflict_and_an_offer_to_reload(served, context):
    root, _, url = served
    first, second = open_app(context, url, 0), open_app(context, url, 0)
    first.bring_to_front()  # a background tab gets no frames: input to it would wait for them
    first.keyboard.press("2")
    stroke(first, [(5, 5), (20, 5)])
    save(first, 1)
    saved = (root / "masks" / "a.png").read_bytes()
    second.bring_to_front()
    second.clock.install()
    second.clock.pause_at(second.evaluate("Date.now()") / 1000 + 60)  # the draft's timer fires when the test says
    second.keyboard.press("3")
    stroke(second, [(5, 40), (20, 40)])
    second.keyboard.press("Control+s")
    second.wait_for_selector('body[data-save="conflict"]')
    assert second.locator("#banner").is_visible()
    assert (root / "masks" / "a.png").read_bytes() == saved
    # The reload's mask is held back while the stroke's draft timer comes due: the draft must not come back.
    held = []
    second.route("**/api/items/0/labels", lambda route: held.append(route)
                 if route.request.method == "GET" and not held else route.continue_())
    second.click("#banner-reload")
    second.clock.run_for(1000)
    while not held:
        second.wait_for_timeout(10)
    held[0].continue_()
    second.wait_for_selector('body[data-ready="1"]')
    assert not second.inner_text("#message").startswith("restored unsaved strokes")
    save(second, 1)  # the reloaded mask is the first tab's, saved on its current version
    assert (read_mask(root / "masks" / "a.png") == read_mask(root / ".pixelwise-backup" / "masks" / "a.png")).all()


def test_unsaved_strokes_survive_a_page_reload(served, context):
    root, _, url = served
    original = read_mask(root / "masks" / "c.png")
    page = open_app(context, url, 2)
    page.keyboard.press("q")
    set_size(page, 3)
    stroke(page, [(40, 10), (50, 10)])
    page.wait_for_selector('body[data-draft="saved"]')
    page.reload()
    page.wait_for_selector('body[data-ready="1"]')
    assert page.inner_text("#message").startswith("restored unsaved strokes")
    save(page, 1)
    expected = original.copy()
    expected[9:12, 39:52] = 0
    assert (read_mask(root / "masks" / "c.png") == expected).all()


def test_the_app_refuses_a_browser_without_the_token(served, browser):
    _, _, url = served
    ctx = browser.new_context()
    page = ctx.new_page()
    response = page.goto(url.split("?")[0])
    assert response.status == 403 and "token" in page.inner_text("body")
    ctx.close()
