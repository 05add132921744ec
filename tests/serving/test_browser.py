"""The merchandiser page end to end in headless Chromium (Debian's chromium, driven by Playwright):
pick a customer, build a session by clicking products, and a screenshot that shows the results."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from retailgan.serving import Settings, create_app  # noqa: E402
from tests.serving.conftest import USER_KEY  # noqa: E402

CHROMIUM = os.environ.get("RETAILGAN_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RETAILGAN_CHROMIUM)",
)


def add_images(store: Path) -> None:
    """Block 1's products get images: P100 a photo, the others generated (block 0 keeps placeholders)."""
    from PIL import Image

    from retailgan.data.images import ItemImage, encode_png, put_images
    from retailgan.data.store import Store

    images = [ItemImage("P100", encode_png(Image.new("RGB", (60, 60), (20, 140, 60)))[0], False, 60, 60, "P100.png")]
    for j in range(1, 15):
        px = np.full((1, 28, 28), 40 + 10 * j, np.uint8)
        px[0, 8:20, 8:20] = 230
        png = encode_png(px, {"synthetic": "true", "generator": "retailgan-cgan"})[0]
        images.append(ItemImage(f"P1{j:02d}", png, True, 28, 28, "retailgan-cgan", "v-test", j))
    with Store.open(store) as s:
        put_images(s, images)


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    import uvicorn

    root = tmp_path_factory.mktemp("browser")
    store = root / "shop.duckdb"
    shutil.copy(built["store"], store)
    add_images(store)
    app = create_app(Settings(model_dir=built["models"]["ease"], store=store, keys_file=built["keys"]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    yield base
    srv.should_exit = True
    thread.join(20)


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        pg.goto(f"{server}/")
        pg.fill("#api-key", USER_KEY)
        pg.dispatch_event("#api-key", "change")
        yield pg
        browser.close()


def test_pick_customer_shows_recommendations_with_reasons(page):
    page.wait_for_selector("#customer-select option[value='C0']", state="attached")
    page.select_option("#customer-select", "C0")
    page.wait_for_selector("[data-testid=rec]")
    cards = page.locator("[data-testid=rec]")
    assert cards.count() >= 3
    first = cards.first
    assert first.locator(".title").inner_text().startswith("1. Product 0-")
    assert first.locator("[data-testid=price]").inner_text().startswith("£")
    assert "because of Product 0-" in first.locator("[data-testid=reasons]").inner_text()
    assert first.locator("[data-testid=image-kind]").inner_text() == "no image: placeholder"
    assert first.locator("img").evaluate("i => i.complete && i.naturalWidth > 0")
    assert "strategy: model" in page.inner_text("[data-testid=status]")
    assert page.locator("[data-testid=history] li").count() > 0
    assert page.inner_text("[data-testid=model]").startswith("model: ease-")


def test_variety_brings_in_products_unlike_the_first(page):
    def shown() -> list[str]:
        page.click("[data-testid=customer-go]")
        page.wait_for_function("document.querySelector('[data-testid=status]').innerText.includes('strategy')")
        return [t.split(". ", 1)[1] for t in page.locator("[data-testid=rec] .title").all_inner_texts()]

    page.fill("#customer-id", "C0")
    page.fill("#k", "4")
    plain = shown()
    assert len(plain) == 4 and all(t.startswith("Product 0-") for t in plain)  # C0's 4 unbought
    page.fill("#diversity", "0.7")
    varied = shown()
    assert varied[0] == plain[0] and any(t.startswith("Product 1-") for t in varied)
    page.fill("#diversity", "0")
    page.fill("#k", "12")
    page.fill("#customer-id", "")


def test_build_session_by_clicking_products(page):
    page.fill("#search", "Product 1-")
    page.click("#search-go")
    page.wait_for_selector("[data-testid=search-results] li[data-product^='P1']")
    page.locator("[data-testid=search-results] li[data-product^='P1']").nth(0).click()
    page.locator("[data-testid=search-results] li[data-product^='P1']").nth(1).click()
    assert page.locator("[data-testid=session] .chip").count() == 2
    page.click("[data-testid=session-go]")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('strategy: session')")
    products = page.locator("[data-testid=rec]").evaluate_all("cs => cs.map(c => c.dataset.product)")
    assert products and all(p.startswith("P1") for p in products)
    # Clicking a recommendation adds it to the session.
    page.locator("[data-testid=rec]").first.click()
    assert page.locator("[data-testid=session] .chip").count() == 3


def test_error_is_shown_not_swallowed(page):
    page.fill("#customer-id", "C0")
    page.fill("#k", "12")
    page.fill("#category", "no-such-dept")
    page.click("[data-testid=customer-go]")
    page.wait_for_selector("[data-testid=status].error")
    assert "unknown categor" in page.inner_text("[data-testid=status]")
    page.fill("#category", "")


def test_generated_images_are_labelled_on_the_page(page):
    page.select_option("#customer-select", "C1")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('strategy: model')")
    cards = page.locator("[data-testid=rec]")
    assert cards.count() >= 3
    kinds = {}
    for i in range(cards.count()):
        card = cards.nth(i)
        pid = card.get_attribute("data-product")
        kind = card.locator("[data-testid=image-kind]").inner_text()
        kinds[pid] = kind
        img = card.locator("img")
        assert img.evaluate("i => i.complete && i.naturalWidth > 0")
        if kind == "generated image":
            assert img.get_attribute("src") == f"/v1/products/{pid}/image"
            assert "generated" in (card.locator("[data-testid=image-kind]").get_attribute("class") or "")
            # The server stamps the label on the picture itself: enlarged to >= 112 px.
            assert img.evaluate("i => i.naturalWidth") >= 112
    def expected(pid: str) -> str:
        if not pid.startswith("P1") or pid == "P199":
            return "no image: placeholder"
        return "photo" if pid == "P100" else "generated image"

    assert kinds == {pid: expected(pid) for pid in kinds}
    assert "generated image" in kinds.values()


def test_screenshot_shows_rendered_recommendations(page, tmp_path):
    page.select_option("#customer-select", "C1")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('strategy: model')")
    shot = tmp_path / "merchandiser.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape[0] >= 600 and img.shape[1] >= 1200
    assert img.std() > 20  # not blank
    # The results panel (right of the 340 px side panel) holds the cards: varied colours there too.
    box = page.locator("[data-testid=results]").bounding_box()
    assert box is not None and box["height"] > 100
    region = img[int(box["y"]) : int(box["y"] + box["height"]), int(box["x"]) : int(box["x"] + box["width"])]
    assert region.std() > 20
    assert len(np.unique(region.reshape(-1, 3), axis=0)) > 50  # placeholder images, text: many colours
    if os.environ.get("RETAILGAN_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["RETAILGAN_SCREENSHOT_DIR"]) / "merchandiser.png")
