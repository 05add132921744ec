"""A small store (two customer groups, two product blocks) and models fitted on it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

from retailgan.data.dataset import load_dataset
from retailgan.data.ingest import ingest
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.serving.security import hash_key


def pytest_configure(config):
    # Starlette suggests another HTTP client package for its TestClient; httpx works and is what we ship.
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


USER_KEY = "user-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"


def make_store(root: Path) -> Path:
    """60 customers; even ones buy products P0xx, odd ones P1xx; 30 products with titles and prices."""
    rng = np.random.default_rng(0)
    events = root / "events.csv"
    with events.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["customer", "sku", "ts", "action"])
        t = 1_600_000_000
        for step in range(1500):
            c = int(rng.integers(0, 60))
            w.writerow([f"C{c}", f"P{c % 2}{int(rng.integers(0, 15)):02d}", t + step * 60,
                        rng.choice(["view", "cart", "purchase"])])
    products = root / "products.csv"
    with products.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sku", "name", "dept", "price"])
        for b in range(2):
            for j in range(15):
                w.writerow([f"P{b}{j:02d}", f"Product {b}-{j}", f"dept{b}", 2.5 + j])
            w.writerow([f"P{b}99", f"Never bought {b}", f"dept{b}", 1.0])  # catalogue only
    path = root / "shop.duckdb"
    ingest(path, events, "events",
           mapping={"user": "customer", "item": "sku", "timestamp": "ts", "event_type": "action"},
           catalogue=products,
           catalogue_mapping={"item": "sku", "title": "name", "category": "dept", "price": "price"})
    return path


def fit(store: Path, name: str, out: Path, **params) -> Path:
    ds = load_dataset(store)
    model = get_model_class(name)(**params).fit(ds, TrainingOptions(seed=0))
    return model.save(out)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    store = make_store(root)
    models = {
        "ease": fit(store, "ease", root / "models" / "ease", l2=10.0),
        "ials": fit(store, "ials", root / "models" / "ials", factors=8, epochs=3),
    }
    keys = root / "keys.txt"
    keys.write_text(f"# test keys\nshop:user:{hash_key(USER_KEY)}\nops:admin:{hash_key(ADMIN_KEY)}\n")
    return {"root": root, "store": store, "models": models, "keys": keys}
