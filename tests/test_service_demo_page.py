"""The demo page in a real headless Chromium: draw strokes, read what the page shows."""

import base64
import shutil
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-output"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(live_server):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto(live_server + "/")
        yield page
        browser.close()


def draw(page, strokes):
    """Each stroke is a list of (x, y) points on the 280x280 pad."""
    box = page.locator("#pad").bounding_box()
    page.click("#clear")
    for stroke in strokes:
        with page.expect_response("**/v1/predict"):
            page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
            page.mouse.up()


def canvas_label(page, live_server) -> str:
    """What the API answers for the pad's own pixels."""
    data = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
    png = base64.b64decode(data.split(",", 1)[1])
    return httpx.post(f"{live_server}/v1/predict", content=png, headers={"content-type": "image/png"}).json()["label"]


def test_drawn_one_is_recognised(page, live_server):
    draw(page, [[(140, 40), (138, 120), (136, 240)]])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-one.png"))
    assert page.inner_text("#label") == "1"
    assert page.inner_text("#label") == canvas_label(page, live_server)
    assert "known digit" in page.inner_text("#known")
    assert page.locator("#probs tr").count() == 5
    assert "threshold" in page.inner_text("#scoretext")


def test_scribble_is_other(page, live_server):
    zigzag = [(30 + 22 * i, 40 if i % 2 else 240) for i in range(11)]
    draw(page, [zigzag, [(20, 140), (260, 140)], [(20, 60), (260, 220)], [(30, 60), (250, 60)]])
    page.screenshot(path=str(ARTIFACTS / "demo-scribble.png"))
    assert page.inner_text("#label") == "other"
    assert page.inner_text("#label") == canvas_label(page, live_server)
    assert "not one of the known digits" in page.inner_text("#known")


def test_clear_resets_the_answer(page):
    page.click("#clear")
    assert page.inner_text("#label") == "–"
