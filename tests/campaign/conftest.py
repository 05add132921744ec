"""A tiny store (two customer groups, two product blocks, two countries) and an EASE model on it."""

from __future__ import annotations

import pytest

from retailgan.data.store import Store
from tests.conftest import shop_store_and_model


@pytest.fixture(scope="session")
def shop(tmp_path_factory):
    # Spread over ~80 days so that "recent" windows select part of the customers.
    return shop_store_and_model(
        tmp_path_factory.mktemp("campaign"), customers=40, customer_id=lambda c: f"C{c:02d}",
        title=lambda b, j: f"Mug <b>{b}-{j}</b> & co" if j == 0 else f"Product {b}-{j}",
    )


def _png(w: int, h: int, mode: str, seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


PHOTOS = [f"P{b}{j:02d}" for b in (0, 1) for j in range(0, 4)]
GENERATED = [f"P{b}{j:02d}" for b in (0, 1) for j in range(4, 8)]
"""Products with a retailer photo / a generated image in ``shop_images``; P*08-P*11 have none."""


@pytest.fixture(scope="session")
def shop_images(shop, tmp_path_factory):
    """The tiny shop with plain PNGs as photos (64x48 RGB) and as generated images (28x28 grey)."""
    import shutil

    from retailgan.data.images import ItemImage, put_images

    store, model = shop
    root = tmp_path_factory.mktemp("campaign-images")
    copy = root / "shop.duckdb"
    shutil.copy(store, copy)
    images = [ItemImage(p, _png(64, 48, "RGB", i), False, 64, 48, source=f"{p}.png") for i, p in enumerate(PHOTOS)]
    images += [ItemImage(p, _png(28, 28, "L", 100 + i), True, 28, 28, source="test-gan", model_version="g-1", seed=i)
               for i, p in enumerate(GENERATED)]
    with Store.open(copy) as s:
        assert put_images(s, images) == len(images)
    return copy, model
