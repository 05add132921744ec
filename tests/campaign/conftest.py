"""A tiny store (two customer groups, two product blocks, two countries) and an EASE model on it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from retailgan.cli import app
from retailgan.data.store import Store
from tests.conftest import SHOP_INGEST_ARGS, write_shop_logs

runner = CliRunner()


@pytest.fixture(scope="session")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    # Spread over ~80 days so that "recent" windows select part of the customers.
    events, products = write_shop_logs(
        root, customers=40, events=1200, products=12, step_s=6000, customer_id=lambda c: f"C{c:02d}",
        title=lambda b, j: f"Mug <b>{b}-{j}</b> & co" if j == 0 else f"Product {b}-{j}",
    )
    store = root / "shop.duckdb"
    res = runner.invoke(app, ["ingest", str(events), "--store", str(store), "--catalogue", str(products),
                              *SHOP_INGEST_ARGS])
    assert res.exit_code == 0, res.output
    with Store.open(store) as s:
        s.con.execute("UPDATE users SET country = CASE WHEN user_id < 'C20' THEN 'United Kingdom' ELSE 'France' END")
    model = root / "ease"
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "ease", "--out", str(model),
                              "--params", '{"l2": 10}'])
    assert res.exit_code == 0, res.output
    return store, model


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
