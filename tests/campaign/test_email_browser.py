"""A campaign e-mail (photo, generated image, no image) rendered in headless Chromium (Debian's
chromium, driven by Playwright): titles, prices, reasons, loaded images, "generated" badges, and a
screenshot that is not blank."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from retailgan.campaign import customer_campaign  # noqa: E402
from retailgan.campaign.render import GENERATED_BADGE, IMAGE_PLACEHOLDER  # noqa: E402
from retailgan.data.store import Store  # noqa: E402
from retailgan.serving.engine import ModelBundle  # noqa: E402

CHROMIUM = os.environ.get("RETAILGAN_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RETAILGAN_CHROMIUM)",
)


def test_email_renders_with_images_and_labels(shop_images, tmp_path):
    store, model = shop_images
    with Store.open(store, read_only=True) as s:
        cc = customer_campaign(ModelBundle.load(model), s, "C00", k=12, recent_days=0)
    kinds = {p.image for p in cc.products}
    assert kinds == {"photo", "generated", None}  # the e-mail shows all three cases
    email = tmp_path / "C00.html"
    email.write_text(cc.html, encoding="utf-8")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_context(viewport={"width": 800, "height": 900}).new_page()
            page.set_default_timeout(20_000)
            page.goto(email.as_uri())
            page.wait_for_load_state("load")
            text = page.inner_text("body")
            for prod in cc.products:
                row = page.locator(f"tr[data-product='{prod.product_id}']")
                assert row.locator(".title").inner_text() == f"{prod.rank}. {prod.title}"
                assert row.locator(".price").inner_text() == f"{prod.price:.2f}"
                assert prod.reason in row.locator(".reason").inner_text()
                badge = row.locator(".generated-badge")
                if prod.image == "generated":
                    assert badge.inner_text() == GENERATED_BADGE and badge.is_visible()
                else:
                    assert badge.count() == 0
                if prod.image is None:
                    assert IMAGE_PLACEHOLDER in row.inner_text()
            imgs = page.locator("img")
            assert imgs.count() == 1 + sum(prod.image is not None for prod in cc.products)  # + the banner
            loaded = imgs.evaluate_all("is => is.map(i => i.complete && i.naturalWidth > 0)")
            assert all(loaded)
            assert page.locator("img[data-image=banner]").evaluate("i => i.naturalWidth") > 500
            assert "computer-generated" in text
            shot = tmp_path / "email.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 900 and pixels.std() > 20  # a long page with pictures, not a blank one
    # The stamped red band of generated pictures is visible in the screenshot itself.
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    red = (rgb[..., 0] == 200) & (rgb[..., 1] == 30) & (rgb[..., 2] == 30)
    assert red.sum() > 500
    if os.environ.get("RETAILGAN_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["RETAILGAN_SCREENSHOT_DIR"]) / "campaign-email.png")
