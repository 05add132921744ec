"""Every registered model is servable: loaded from its files, validated, and answering every
recommendation path (known customer, ad-hoc session, new events, similar products)."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from retailgan.data.store import Store
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import MODELS, get_model_class
from retailgan.serving import Settings, create_app
from tests.conftest import oracle_dataset
from tests.models.test_contract import FAST_CONFIGS
from tests.serving.conftest import USER_KEY

H = {"X-API-Key": USER_KEY}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_model_serves_every_path(name, built, tmp_path):
    ds, answer = oracle_dataset()
    model = get_model_class(name)(**FAST_CONFIGS[name]).fit(ds, TrainingOptions(seed=0))
    model_dir = model.save(tmp_path / name)
    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    with Store.open(store) as st, st.transaction() as con:  # the service serves catalogue products only
        # Only the oracle's products: models that embed products from content (add_products) would
        # otherwise take the shop's products too, as products without sales.
        con.execute("DELETE FROM items")
        info = ds.item_info
        for item, title, category, price in zip(ds.items.ids, info.titles, info.categories, info.prices, strict=True):
            con.execute("INSERT INTO items VALUES (?, ?, ?, ?)", [str(item), title, category, float(price)])
    app = create_app(Settings(model_dir=model_dir, store=store, keys_file=built["keys"]))
    with TestClient(app) as c:
        user = "u0_1"
        out = c.post("/v1/recommendations", json={"customer_id": user, "k": 3, "explain": True}, headers=H)
        assert out.status_code == 200, out.text
        body = out.json()
        assert body["strategy"] == "model" and len(body["items"]) == 3
        assert all(it["reasons"] for it in body["items"])
        if name in ("itemknn", "ease") or hasattr(model, "explain"):  # models that name history products
            assert body["items"][0]["reasons"][0]["kind"] == "history_item"
        if name != "pop":
            assert body["items"][0]["product_id"] == answer[user]
        session = c.post("/v1/recommendations", json={"product_ids": ["i1_0", "i1_1"], "k": 3}, headers=H).json()
        assert session["strategy"] in ("session", "popular") and len(session["items"]) == 3
        if session["strategy"] == "popular":
            assert session["notes"]  # the fallback is said, not silent
        ev = {"events": [{"customer_id": "newbie", "product_id": "i1_2", "event_type": "purchase"}]}
        assert c.post("/v1/events", json=ev, headers=H).status_code == 201
        after = c.post("/v1/recommendations", json={"customer_id": "newbie", "k": 3}, headers=H).json()
        assert after["strategy"] in ("fold-in", "popular")
        assert "i1_2" not in [it["product_id"] for it in after["items"]]
        sim = c.get("/v1/products/i0_0/similar", params={"k": 3}, headers=H)
        assert sim.status_code == 200 and len(sim.json()["items"]) == 3
