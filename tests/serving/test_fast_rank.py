"""A known customer of a factor model is ranked through the model's exact top-k path (no dense row
of scores over the catalogue); every request option gives the dense path's list."""

from __future__ import annotations

import pytest

from tests.serving.test_api import make_client, rec

BODIES = [
    {"customer_id": "C0", "k": 3},
    {"customer_id": "C1", "k": 5, "exclude": ["P100", "P001"]},
    {"customer_id": "C1", "k": 10, "candidates": ["P000", "P001", "P100"], "exclude_seen": False},
    {"customer_id": "C0", "k": 30, "filters": {"categories": ["dept0"], "max_price": 6.0}, "exclude_seen": False},
    {"customer_id": "C0", "k": 4, "diversity": 0.7, "diversify": "dpp", "exclude": ["P100"]},
    {"customer_id": "C3", "k": 4, "diversity": 0.5, "explain": True},
    {"customer_id": "C2", "k": 40, "exclude_seen": False},
]


@pytest.mark.parametrize("body", BODIES)
def test_factor_model_top_k_path_equals_dense_scores(built, tmp_path, body):
    c, _ = make_client(built, tmp_path, model="ials")
    with c:
        bundle = c.app.state.service.bundle
        assert bundle.fast_top_k(0)
        calls = []
        real = bundle.rank_known

        def counted(*args):
            calls.append(args)
            return real(*args)

        bundle.rank_known = counted
        fast = rec(c, **body)
        assert calls, "the known customer was not ranked by the top-k path"
        bundle.fast_top_k = lambda u: False  # the dense path: score_user over every product
        dense = rec(c, **body)
        # Same lists; scores equal up to float32 rounding (a candidate subset is scored on its own).
        scores = [[it.pop("score") for it in r["items"]] for r in (fast, dense)]
        assert fast == dense
        assert scores[0] == pytest.approx(scores[1], rel=1e-5, abs=1e-6)
        assert fast["strategy"] == "model" and fast["items"]


def test_fast_path_after_new_events_leaves_their_products_out(built, tmp_path):
    c, _ = make_client(built, tmp_path, model="ials")
    with c:
        first = rec(c, customer_id="C0", k=3)["items"][0]["product_id"]
        ev = {"events": [{"customer_id": "C0", "product_id": first, "event_type": "view"}]}
        assert c.post("/v1/events", json=ev, headers={"X-API-Key": "user-key-0123456789"}).status_code == 201
        after = rec(c, customer_id="C0", k=3)
        assert after["strategy"] == "model" and first not in [it["product_id"] for it in after["items"]]


@pytest.mark.skipif(not __import__("retailgan.index.topk", fromlist=["x"]).faiss_available(), reason="faiss absent")
def test_featgan_with_a_faiss_index_serves_its_index_lists(built, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from retailgan.data.store import Store
    from retailgan.models.base import TrainingOptions
    from retailgan.models.registry import get_model_class
    from retailgan.serving import Settings, create_app
    from tests.conftest import oracle_dataset
    from tests.models.test_contract import FAST_CONFIGS

    ds, answer = oracle_dataset()
    model = get_model_class("featgan")(**{**FAST_CONFIGS["featgan"], "index": "hnsw", "epochs": 3})
    model.fit(ds, TrainingOptions(seed=0))
    model_dir = model.save(tmp_path / "featgan")
    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    with Store.open(store) as st, st.transaction() as con:  # the oracle's products only
        con.execute("DELETE FROM items")
        info = ds.item_info
        for item, title, category, price in zip(ds.items.ids, info.titles, info.categories, info.prices, strict=True):
            con.execute("INSERT INTO items VALUES (?, ?, ?, ?)", [str(item), title, category, float(price)])
    with TestClient(create_app(Settings(model_dir=model_dir, store=store, keys_file=built["keys"]))) as c:
        bundle = c.app.state.service.bundle
        served = bundle.model
        for user in list(answer)[:4]:
            assert bundle.fast_top_k(bundle.user_index(user))
            got = rec(c, customer_id=user, k=3, exclude=["i0_1"])
            want = served.top_k([user], 3, exclude=["i0_1"])
            assert got["strategy"] == "model"
            assert [it["product_id"] for it in got["items"]] == [str(i) for i in want.item_ids[0] if i is not None]
        # A session is searched in the same index: the lists of recommend_histories, no dense row.
        session = [str(i) for i in ds.items.ids[:3]]
        calls = []
        real = bundle.rank_history
        bundle.rank_history = lambda *a: calls.append(a) or real(*a)
        got = rec(c, product_ids=session, k=4, exclude=["i0_1"])
        want = served.recommend_histories([session], 4, exclude=["i0_1"])
        assert calls and got["strategy"] == "session"
        assert [it["product_id"] for it in got["items"]] == [str(i) for i in want.item_ids[0] if i is not None]
        assert not set(session) & {it["product_id"] for it in got["items"]}
