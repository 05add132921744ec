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
