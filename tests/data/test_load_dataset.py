"""From store events to a dataset: event-type weights, rating threshold, k-core, catalogue."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retailgan.data.dataset import LoadOptions, load_dataset
from retailgan.data.ingest import ingest
from retailgan.errors import ConfigError, StoreError
from tests.conftest import shared


@pytest.fixture
def store(tmp_path):
    rows = [
        {"u": "a", "i": "x", "t": 10, "e": "view"},
        {"u": "a", "i": "x", "t": 20, "e": "purchase"},
        {"u": "a", "i": "y", "t": 30, "e": "cart"},
        {"u": "b", "i": "x", "t": 5, "e": "view"},
        {"u": "b", "i": "z", "t": 40, "e": "view"},
        {"u": "c", "i": "z", "t": 50, "e": "rating", "r": 2.0},
        {"u": "c", "i": "y", "t": 60, "e": "rating", "r": 5.0},
    ]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(json.dumps({"r": None, **r}) for r in rows) + "\n")
    path = tmp_path / "s.duckdb"
    ingest(path, src, "events", mapping={"user": "u", "item": "i", "timestamp": "t", "event_type": "e", "rating": "r"})
    return path


def pair(ds, u, i):
    m = (ds.users.decode(ds.user_idx) == u) & (ds.items.decode(ds.item_idx) == i)
    assert m.sum() == 1
    j = np.flatnonzero(m)[0]
    return float(ds.weight[j]), int(ds.timestamp[j]), int(ds.count[j])


def test_weights_by_strongest_event_first_time(store):
    ds = load_dataset(store)
    assert pair(ds, "a", "x") == (3.0, 10, 2)  # viewed then purchased: purchase weight, first time
    assert pair(ds, "a", "y") == (2.0, 30, 1)
    assert pair(ds, "b", "z") == (1.0, 40, 1)
    custom = load_dataset(store, LoadOptions(event_weights={"view": 0.5, "cart": 4, "purchase": 8, "rating": 1}))
    assert pair(custom, "a", "x")[0] == 8.0 and pair(custom, "b", "z")[0] == 0.5


def test_rating_threshold_drops_low_ratings(store):
    ds = load_dataset(store, LoadOptions(rating_threshold=4))
    pairs = set(zip(ds.users.decode(ds.user_idx), ds.items.decode(ds.item_idx), strict=True))
    assert ("c", "y") in pairs and ("c", "z") not in pairs


def test_k_core(store):
    ds = load_dataset(store, LoadOptions(min_user=2, min_item=2))
    assert ds.stats()["users"] == ds.n_users  # compacted
    assert np.bincount(ds.user_idx).min() >= 2 and np.bincount(ds.item_idx).min() >= 2


def test_missing_weight_for_an_event_type(store):
    with pytest.raises(ConfigError, match="no weight configured for event type"):
        load_dataset(store, LoadOptions(event_weights={"view": 1, "purchase": 3}))
    with pytest.raises(ConfigError, match="positive number"):
        LoadOptions(event_weights={"view": -1})


def test_missing_store(tmp_path):
    with pytest.raises(StoreError):
        load_dataset(tmp_path / "nope.duckdb")
    assert not (tmp_path / "nope.duckdb").exists()


def test_online_retail_catalogue_reaches_the_dataset(tmp_path):
    src = shared("online-retail-uci", "online_retail.csv.gz")
    path = tmp_path / "r.duckdb"
    ingest(path, src)
    ds = load_dataset(path)
    assert (ds.n_users, ds.n_items) == (4324, 3645)
    j = ds.items.index(["85123A"])[0]
    assert ds.item_info.titles[j] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert ds.item_info.has_prices() and ds.item_info.prices[j] > 0
