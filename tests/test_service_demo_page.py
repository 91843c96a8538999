"""The demo page and the API docs in a real headless Chromium: draw strokes, read what the page shows."""

import base64
import os
import shutil
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-output"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        # `make test` installs it where it can (as root); CI always can, so there a missing browser fails.
        reason = "chromium is not installed (Debian/Ubuntu: sudo apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser tests")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, live_server):
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.goto(live_server + "/")
    yield page
    page.close()


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


@pytest.fixture
def offline_page(browser, live_server):
    """A page that can reach the server and nothing else, as in a closed network; yields (page, refused URLs)."""
    page, refused = browser.new_page(viewport={"width": 1200, "height": 900}), []

    def only_the_server(route):
        if route.request.url.startswith(live_server):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    yield page, refused
    page.close()


def test_swagger_ui_works_offline(offline_page, live_server):
    page, refused = offline_page
    page.goto(live_server + "/docs")
    page.wait_for_selector(".opblock", timeout=15000)  # one block per operation, rendered from /openapi.json
    page.screenshot(path=str(ARTIFACTS / "docs-swagger.png"))
    assert page.locator(".opblock").count() >= 10
    assert "/v1/predict" in page.inner_text(".swagger-ui")
    assert refused == []


def test_redoc_works_offline(offline_page, live_server):
    page, refused = offline_page
    page.goto(live_server + "/redoc")
    page.wait_for_selector("h1", timeout=15000)
    page.wait_for_function("document.body.innerText.includes('/v1/predict')", timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "docs-redoc.png"))
    assert "openset" in page.inner_text("h1")
    # ReDoc's "powered by" logo is the one address in its bundle; ReDoc removes the image when it cannot load.
    assert set(refused) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
    assert page.locator("img[alt='redocly logo']").count() == 0
