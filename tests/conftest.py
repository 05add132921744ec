"""Shared fixtures: small oracle datasets and the path of the shared real data."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retailgan.data.dataset import InteractionDataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BUNDLED_RETAIL = REPO / "data" / "online-retail" / "online_retail.csv.gz"


def shared(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def oracle_dataset(n_per_cluster: int = 20, items_per_cluster: int = 6) -> tuple[InteractionDataset, dict[str, str]]:
    """Two customer groups, each buying within its own block of products.

    Every user owns all of the block's items but one; that missing item is the known answer:
    any sensible collaborative model ranks it first among the user's unseen items.
    """
    users, items, answer = [], [], {}
    for c in range(2):
        for u in range(n_per_cluster):
            uid = f"u{c}_{u}"
            block = [f"i{c}_{j}" for j in range(items_per_cluster)]
            missing = block[u % items_per_cluster]
            answer[uid] = missing
            for it in block:
                if it != missing:
                    users.append(uid)
                    items.append(it)
    ts = np.arange(len(users))
    info = {
        f"i{c}_{j}": {"title": f"Product {c}-{j}", "category": f"cat{c}", "price": 1.0 + j}
        for c in range(2)
        for j in range(items_per_cluster)
    }
    return InteractionDataset.from_arrays(users, items, timestamps=ts, item_info=info, name="oracle"), answer


@pytest.fixture
def oracle():
    return oracle_dataset()


SHOP_INGEST_ARGS = (
    "--format", "events", "--user-col", "customer", "--item-col", "sku", "--time-col", "ts", "--event-col", "action",
    "--catalogue-item-col", "sku", "--title-col", "name", "--category-col", "dept", "--catalogue-price-col", "price",
)
"""``retailgan ingest`` options for the files of :func:`write_shop_logs` (add the events file, --store, --catalogue)."""


def write_shop_logs(
    root: Path,
    *,
    customers: int,
    events: int,
    products: int,
    step_s: int = 60,
    customer_id: Callable[[int], str] = lambda c: f"C{c}",
    title: Callable[[int, int], str] = lambda b, j: f"Product {b}-{j}",
    catalogue_only: bool = False,
) -> tuple[Path, Path]:
    """An event log and a catalogue for two customer groups buying from two product blocks.

    Customer c buys only from block c % 2 (products ``P<block><j>``); events are views, carts and
    purchases, ``step_s`` seconds apart. ``catalogue_only`` adds one never-bought product per block.
    Returns (events.csv, products.csv) with columns customer, sku, ts, action / sku, name, dept, price.
    """
    rng = np.random.default_rng(0)
    events_path = root / "events.csv"
    with events_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["customer", "sku", "ts", "action"])
        t = 1_600_000_000
        for step in range(events):
            c = int(rng.integers(0, customers))
            sku = f"P{c % 2}{int(rng.integers(0, products)):02d}"
            w.writerow([customer_id(c), sku, t + step * step_s, rng.choice(["view", "cart", "purchase"])])
    products_path = root / "products.csv"
    with products_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sku", "name", "dept", "price"])
        for b in range(2):
            for j in range(products):
                w.writerow([f"P{b}{j:02d}", title(b, j), f"dept{b}", 2.5 + j])
            if catalogue_only:
                w.writerow([f"P{b}99", f"Never bought {b}", f"dept{b}", 1.0])
    return events_path, products_path


def shop_store_and_model(root: Path, *, customers: int, **logs: Any) -> tuple[Path, Path]:
    """A store of :func:`write_shop_logs` (1200 events over ~80 days, 12 products a block; ``logs``
    overrides) whose first 20 customers (by id) live in the United Kingdom and the others in
    France, and an EASE model trained on it."""
    from typer.testing import CliRunner

    from retailgan.cli import app
    from retailgan.data.store import Store

    runner = CliRunner()
    events, products = write_shop_logs(root, customers=customers, **{"events": 1200, "products": 12,
                                                                     "step_s": 6000, **logs})
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
