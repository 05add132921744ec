"""The service's endpoints through FastAPI's TestClient: recommendations, products, customers,
events with fold-in, health, metrics, reloads, and the error contract."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from retailgan.serving import Settings, create_app
from tests.serving.conftest import ADMIN_KEY, USER_KEY, fit

U = {"X-API-Key": USER_KEY}
A = {"X-API-Key": ADMIN_KEY}


def make_client(built, tmp_path, model="ease", store_override=None, **settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = store_override or tmp_path / "shop.duckdb"
    if store_override is None:
        shutil.copy(built["store"], store)
    model_dir = tmp_path / "model"
    shutil.copytree(built["models"][model], model_dir)
    s = Settings(model_dir=model_dir, store=store, keys_file=built["keys"], **settings)
    return TestClient(create_app(s), raise_server_exceptions=False), s


@pytest.fixture
def client(built, tmp_path):
    c, _ = make_client(built, tmp_path)
    with c:
        yield c


def rec(client, **body):
    r = client.post("/v1/recommendations", json=body, headers=U)
    assert r.status_code == 200, r.text
    return r.json()


def test_known_customer_gets_products_of_their_block_with_titles_prices_scores(client):
    out = rec(client, customer_id="C0", k=3)  # C0 has 11 of the 15 block-0 products
    assert out["known_customer"] and out["strategy"] == "model"
    assert len(out["items"]) == 3
    history = {e["product_id"] for e in client.get("/v1/customers/C0/history", headers=U).json()["events"]}
    for it in out["items"]:
        assert it["product_id"].startswith("P0")  # even customers buy block 0
        assert it["product_id"] not in history  # seen products excluded by default
        assert it["title"] == f"Product 0-{int(it['product_id'][2:])}"
        assert it["price"] == 2.5 + int(it["product_id"][2:])
    scores = [it["score"] for it in out["items"]]
    assert scores == sorted(scores, reverse=True)
    assert [it["rank"] for it in out["items"]] == [1, 2, 3]


def test_unknown_customer_gets_popular_with_reason(client):
    out = rec(client, customer_id="nobody", k=3, explain=True)
    assert not out["known_customer"] and out["strategy"] == "popular"
    pops = [client.get(f"/v1/products/{it['product_id']}", headers=U).json()["customers"] for it in out["items"]]
    assert pops == sorted(pops, reverse=True)
    assert all(it["reasons"][0]["kind"] == "popular" for it in out["items"])


def test_adhoc_session_and_explain_names_history_items(client):
    out = rec(client, product_ids=["P100", "P101"], k=4, explain=True)
    assert out["strategy"] == "session" and out["history_size"] == 2
    for it in out["items"]:
        assert it["product_id"].startswith("P1") and it["product_id"] not in ("P100", "P101")
        reasons = it["reasons"]
        assert reasons and reasons[0]["kind"] == "history_item"
        assert {r["product_id"] for r in reasons} <= {"P100", "P101"}
        contrib = [r["contribution"] for r in reasons]
        assert contrib == sorted(contrib, reverse=True)
        # Contributions of an item-item model add up to its score (binary history).
        if len(reasons) == 2:
            assert sum(contrib) == pytest.approx(it["score"], rel=1e-4)


def test_exclude_candidates_and_filters(client):
    base = rec(client, customer_id="C1", k=3)
    first = base["items"][0]["product_id"]
    out = rec(client, customer_id="C1", k=3, exclude=[first])
    assert first not in [it["product_id"] for it in out["items"]]
    cands = ["P000", "P001", "P100"]
    out = rec(client, customer_id="C1", k=10, candidates=cands, exclude_seen=False)
    assert {it["product_id"] for it in out["items"]} == set(cands)
    out = rec(client, customer_id="C1", k=30, filters={"categories": ["dept0"], "max_price": 6.0})
    assert out["items"] and all(it["category"] == "dept0" and it["price"] <= 6.0 for it in out["items"])


@pytest.mark.parametrize("model", ["ease", "ials"])  # similarity over shared customers / item factors
def test_diversity_reranks_towards_products_unlike_the_first(built, tmp_path, model):
    c, _ = make_client(built, tmp_path, model=model)
    with c:
        plain = rec(c, customer_id="C0", k=4)
        assert rec(c, customer_id="C0", k=4, diversity=0.0) == plain
        history = {e["product_id"] for e in c.get("/v1/customers/C0/history", headers=U).json()["events"]}
        # C0 has not bought 4 of the 15 block-0 products: the plain list is those four.
        assert all(it["product_id"].startswith("P0") for it in plain["items"])
        for how in ("mmr", "dpp"):
            out = rec(c, customer_id="C0", k=4, diversity=0.7, diversify=how, exclude=["P100"])
            got = [it["product_id"] for it in out["items"]]
            assert len(set(got)) == 4 and not set(got) & history and "P100" not in got
            assert got[0] == plain["items"][0]["product_id"]  # the best product stays first
            assert any(p.startswith("P1") for p in got), (how, got)  # the other block comes in
            assert [it["rank"] for it in out["items"]] == [1, 2, 3, 4]
        # Filters still hold, and a list of one is left as it is.
        out = rec(c, customer_id="C0", k=30, diversity=0.5, filters={"categories": ["dept0"]})
        assert out["items"] and all(it["category"] == "dept0" for it in out["items"])
        one = rec(c, customer_id="C0", k=1, diversity=0.9)
        assert one["items"][0]["product_id"] == plain["items"][0]["product_id"]


def test_catalogue_only_product_is_known_but_not_recommendable(client):
    p = client.get("/v1/products/P099", headers=U)
    assert p.status_code == 200 and p.json()["in_model"] is False and p.json()["title"] == "Never bought 0"
    out = rec(client, customer_id="C0", k=5, candidates=["P099"])
    assert out["items"] == []
    sim = client.get("/v1/products/P099/similar", headers=U).json()
    assert sim["items"] == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"customer_id": "C0", "k": 0}, "k"),
        ({"customer_id": "C0", "k": 101}, "k"),
        ({"customer_id": "C0", "surprise": 1}, "surprise"),
        ({}, "exactly one of customer_id or product_ids"),
        ({"customer_id": "C0", "product_ids": ["P000"]}, "exactly one"),
        ({"customer_id": "C0", "exclude": ["x"] * 1001}, "exclude"),
        ({"customer_id": "C0", "candidates": ["nope"]}, "unknown product id(s) in candidates: 'nope'"),
        ({"product_ids": ["P000", "zzz"]}, "'zzz'"),
        ({"customer_id": "C0", "filters": {"categories": ["toys"]}}, "unknown categor"),
        ({"customer_id": "C0", "filters": {"max_price": -1}}, "filters.max_price"),
        ({"customer_id": "C0", "diversity": 1.5}, "diversity"),
        ({"customer_id": "C0", "diversify": "volume"}, "diversify"),
    ],
)
def test_bad_requests_get_clear_422(client, body, fragment):
    r = client.post("/v1/recommendations", json=body, headers=U)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]
    assert "Traceback" not in r.text


def test_product_similar_and_404s(client):
    p = client.get("/v1/products/P003", headers=U).json()
    assert p == {"product_id": "P003", "title": "Product 0-3", "category": "dept0", "price": 5.5,
                 "in_model": True, "customers": p["customers"], "image_url": None,
                 "image_generated": None}
    sim = client.get("/v1/products/P003/similar", params={"k": 5}, headers=U).json()
    assert sim["method"] == "model" and len(sim["items"]) == 5
    assert all(it["product_id"].startswith("P0") and it["product_id"] != "P003" for it in sim["items"])
    assert client.get("/v1/products/nope", headers=U).status_code == 404
    assert client.get("/v1/products/nope/similar", headers=U).status_code == 404
    assert client.get("/v1/products/P003/similar", params={"k": 1000}, headers=U).status_code == 422
    assert client.get("/v1/customers/nobody/history", headers=U).status_code == 404
    found = client.get("/v1/products", params={"query": "product 1-", "limit": 3}, headers=U).json()["items"]
    assert len(found) == 3 and all(f["title"].startswith("Product 1-") for f in found)


def test_event_is_stored_and_folded_in_at_once(client):
    # A new customer: popular products first; after viewing block-1 products, block-1 products.
    before = rec(client, customer_id="NEW1", k=5)
    assert before["strategy"] == "popular"
    events = [{"customer_id": "NEW1", "product_id": p, "event_type": "purchase", "event_id": f"e{p}"}
              for p in ("P100", "P101", "P102")]
    r = client.post("/v1/events", json={"events": events}, headers=U)
    assert r.status_code == 201 and r.json() == {"accepted": 3, "written": 3}
    after = rec(client, customer_id="NEW1", k=5, explain=True)
    assert after["strategy"] == "fold-in" and after["history_size"] == 3
    assert all(it["product_id"].startswith("P1") for it in after["items"])
    assert not {"P100", "P101", "P102"} & {it["product_id"] for it in after["items"]}
    assert after["items"][0]["reasons"][0]["product_id"] in {"P100", "P101", "P102"}
    hist = client.get("/v1/customers/NEW1/history", headers=U).json()
    assert sorted(e["product_id"] for e in hist["events"]) == ["P100", "P101", "P102"]
    assert not hist["known_to_model"]
    # Re-sending the same event ids writes nothing twice.
    again = client.post("/v1/events", json={"events": events}, headers=U).json()
    assert again == {"accepted": 3, "written": 0}
    assert len(client.get("/v1/customers/NEW1/history", headers=U).json()["events"]) == 3


def test_event_validation(client):
    ok = {"customer_id": "C0", "product_id": "P000", "event_type": "view"}
    for bad, fragment in [
        ({**ok, "product_id": "ghost"}, "unknown product id(s): 'ghost'"),
        ({**ok, "event_type": "refund"}, "event_type"),
        ({**ok, "quantity": -2}, "quantity"),
        ({**ok, "extra": True}, "extra"),
        ({**ok, "ts": "0001-01-01T00:00:00+05:00"}, "time"),
        ({**ok, "ts": "2999-01-01T00:00:00"}, "more than 1 day after the server's clock"),
        ({**ok, "ts": "1969-12-31T00:00:00"}, "after 1970"),
    ]:
        r = client.post("/v1/events", json={"events": [bad]}, headers=U)
        assert r.status_code == 422 and fragment in r.json()["detail"], r.text
    r = client.post("/v1/events", json={"events": [ok] * 101}, headers=U)
    assert r.status_code == 422
    r = client.post("/v1/events", json={"events": [{**ok, "ts": "2024-03-01T12:00:00+02:00"}]}, headers=U)
    assert r.status_code == 201
    times = [e["ts"] for e in client.get("/v1/customers/C0/history", headers=U).json()["events"]]
    assert "2024-03-01T10:00:00Z" in times  # stored and answered in UTC


def test_model_without_foldin_uses_documented_fallback(built, tmp_path):
    c, _ = make_client(built, tmp_path, model="ials")
    with c:
        out = rec(c, customer_id="C0", k=3, explain=True)
        assert out["strategy"] == "model"
        assert out["items"][0]["reasons"][0]["kind"] == "model"
        r = c.post("/v1/events", json={"events": [{"customer_id": "C0", "product_id": out["items"][0]["product_id"],
                                                   "event_type": "purchase"}]}, headers=U)
        assert r.status_code == 201
        after = rec(c, customer_id="C0", k=3)
        assert after["strategy"] == "model" and "cannot fold in" in after["notes"][0]
        assert out["items"][0]["product_id"] not in [it["product_id"] for it in after["items"]]
        session = rec(c, product_ids=["P100"], k=3)
        assert session["strategy"] == "popular" and "cannot score ad-hoc sessions" in session["notes"][0]
        sim = c.get("/v1/products/P100/similar", headers=U).json()
        assert sim["method"] == "item-factor cosine" and len(sim["items"]) == 10


def test_health_ready_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok", "model_version": None}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model_version"].startswith("ease-")
    rec(client, customer_id="C0")
    text = client.get("/metrics").text
    assert 'retailgan_http_requests_total{method="POST",route="/v1/recommendations",status="200"} 1.0' in text
    assert 'retailgan_http_request_duration_seconds_bucket{le="0.05",method="POST",route="/v1/recommendations"}' in text
    assert 'retailgan_model_info{model="ease",version="' in text
    assert "retailgan_http_requests_in_flight 1.0" in text  # the /metrics request itself
    assert "process_cpu_seconds_total" in text
    assert client.get("/openapi.json").json()["paths"]["/v1/recommendations"]["post"]


def test_auth_401_403_admin_and_rate_limit(built, tmp_path):
    c, _ = make_client(built, tmp_path, rate_limit=0.01, rate_burst=3)  # no refill during the test
    body = {"customer_id": "C0"}
    with c:
        r = c.post("/v1/recommendations", json=body)
        assert r.status_code == 401 and "missing API key" in r.json()["detail"]
        r = c.post("/v1/recommendations", json=body, headers={"X-API-Key": "wrong"})
        assert r.status_code == 403 and r.json()["detail"] == "invalid API key"
        r = c.post("/admin/models/reload", json={}, headers=U)
        assert r.status_code == 403 and "not an admin key" in r.json()["detail"]
        codes = [c.post("/v1/recommendations", json=body, headers={"X-API-Key": ADMIN_KEY}).status_code
                 for _ in range(3)]  # the admin key's own bucket (3 tokens; the failed admin call used U's)
        assert codes == [200, 200, 200]
        r = c.post("/v1/recommendations", json=body, headers=A)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        # The other key has its own bucket.
        assert c.post("/v1/recommendations", json=body, headers=U).status_code == 200


def test_body_limit_and_no_stack_traces(built, tmp_path):
    c, _ = make_client(built, tmp_path, max_body_bytes=2048)
    with c:
        r = c.post("/v1/recommendations", content=b'{"customer_id": "' + b"x" * 4000 + b'"}',
                   headers={**U, "Content-Type": "application/json"})
        assert r.status_code == 413 and "larger than 2048 bytes" in r.json()["detail"]
        r = c.post("/v1/recommendations", content=b"{not json", headers={**U, "Content-Type": "application/json"})
        assert r.status_code == 422 and "Traceback" not in r.text
        bundle = c.app.state.service.bundle

        def boom(u):
            raise RuntimeError("secret internal detail")

        bundle.score_user = boom
        r = c.post("/v1/recommendations", json={"customer_id": "C0"}, headers=U)
        assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
        assert "secret" not in r.text


def test_reload_swaps_model_and_refuses_a_corrupt_one(built, tmp_path):
    c, s = make_client(built, tmp_path)
    with c:
        old = c.get("/admin/models", headers=A).json()
        # A newly trained model written over the directory (atomically, as `retailgan train` does).
        fit(built["store"], "ease", s.model_dir, l2=500.0)
        r = c.post("/admin/models/reload", json={"wait": True}, headers=A)
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["reload_state"] == "succeeded" and new["version"] != old["version"]
        assert rec(c, customer_id="C0")["model_version"] == f"ease-{new['version']}"
        # Corrupt weights: refused, the previous model keeps serving.
        arrays = s.model_dir / "arrays.safetensors"
        data = bytearray(arrays.read_bytes())
        data[8:40] = b"\xff" * 32
        arrays.write_bytes(bytes(data))
        r = c.post("/admin/models/reload", json={"wait": True}, headers=A)
        assert r.status_code == 422
        assert r.json()["reload_state"] == "failed" and "arrays.safetensors" in r.json()["last_error"]
        assert r.json()["version"] == new["version"]
        assert rec(c, customer_id="C0")["model_version"] == f"ease-{new['version']}"
        assert 'retailgan_model_reloads_total{outcome="failed"} 1.0' in c.get("/metrics").text
        # Weights that load but score NaN: refused too.
        fit(built["store"], "ease", s.model_dir, l2=10.0)
        from safetensors.numpy import load_file, save_file

        arr = load_file(str(arrays))
        arr["W"] = np.full_like(arr["W"], np.nan)
        save_file(arr, str(arrays))
        r = c.post("/admin/models/reload", json={"wait": True}, headers=A)
        assert r.status_code == 422 and "not finite" in r.json()["last_error"]
        assert rec(c, customer_id="C0")["model_version"] == f"ease-{new['version']}"


def test_background_reload_and_swap_mid_request_keeps_the_requests_model(built, tmp_path):
    c, s = make_client(built, tmp_path)
    with c:
        state = c.app.state.service
        old = state.bundle
        fit(built["store"], "ease", s.model_dir, l2=123.0)
        # Reload in the background: 202 at once, then the status shows the outcome.
        r = c.post("/admin/models/reload", json={}, headers=A)
        assert r.status_code == 202
        for _ in range(200):
            status = c.get("/admin/models", headers=A).json()
            if status["reload_state"] != "loading":
                break
            time.sleep(0.05)
        assert status["reload_state"] == "succeeded"
        new = state.bundle
        assert new is not old and rec(c, customer_id="C1")["model_version"] == new.label
        # A swap landing in the middle of a request: the request finishes on the model it started with.
        state.set_bundle(old)
        expected = rec(c, customer_id="C0", explain=True)
        real = old.score_user

        def swap_then_score(u):
            state.set_bundle(new)
            return real(u)

        old.score_user = swap_then_score
        during = rec(c, customer_id="C0", explain=True)
        assert during == expected and during["model_version"] == old.label
        after = rec(c, customer_id="C0", explain=True)
        assert after["model_version"] == new.label
        assert [it["score"] for it in after["items"]] != [it["score"] for it in expected["items"]]


def test_not_ready_before_the_model_is_loaded_and_one_reload_at_a_time(built, tmp_path, monkeypatch):
    c, _ = make_client(built, tmp_path)
    # Without entering the client the lifespan has not run: alive, but not ready.
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 503
    import retailgan.serving.app as app_module

    real = app_module.ModelBundle.load

    def slow_load(path, *args):
        time.sleep(3.0)
        return real(path, *args)

    with c:
        monkeypatch.setattr(app_module.ModelBundle, "load", staticmethod(slow_load))
        assert c.post("/admin/models/reload", json={}, headers=A).status_code == 202
        r = c.post("/admin/models/reload", json={}, headers=A)
        assert r.status_code == 409 and "already running" in r.json()["detail"]
        assert rec(c, customer_id="C0")["items"]  # still serving while the reload runs
        for _ in range(300):
            if c.get("/admin/models", headers=A).json()["reload_state"] != "loading":
                break
            time.sleep(0.05)
        assert c.get("/admin/models", headers=A).json()["reload_state"] == "succeeded"


def test_product_images_photo_and_generated_labelled(built, tmp_path):
    import io

    from PIL import Image

    from retailgan.data.images import ItemImage, encode_png, put_images
    from retailgan.data.store import Store

    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    photo = Image.new("RGB", (40, 30), (10, 120, 200))
    gen = np.full((1, 28, 28), 90, np.uint8)
    with Store.open(store) as s:
        put_images(s, [
            ItemImage("P000", encode_png(photo)[0], False, 40, 30, source="P000.jpg"),
            ItemImage("P001", encode_png(gen, {"synthetic": "true", "generator": "retailgan-cgan"})[0], True, 28, 28,
                      source="retailgan-cgan", model_version="v1", seed=3),
        ])
    c, _ = make_client(built, tmp_path / "svc", store_override=store)
    with c:
        p0 = c.get("/v1/products/P000", headers=U).json()
        p1 = c.get("/v1/products/P001", headers=U).json()
        p2 = c.get("/v1/products/P002", headers=U).json()
        assert (p0["image_url"], p0["image_generated"]) == ("/v1/products/P000/image", False)
        assert (p1["image_url"], p1["image_generated"]) == ("/v1/products/P001/image", True)
        assert p2["image_url"] is None and p2["image_generated"] is None
        # Images need no key (img tags send none); a photo comes back as stored.
        r = c.get("/v1/products/P000/image")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-image-generated"] == "false"
        assert Image.open(io.BytesIO(r.content)).size == (40, 30)
        # A generated image is enlarged and stamped with a visible red label; its provenance stays.
        r = c.get("/v1/products/P001/image")
        assert r.status_code == 200 and r.headers["x-image-generated"] == "true"
        shown = Image.open(io.BytesIO(r.content))
        assert shown.text["synthetic"] == "true" and shown.size[0] >= 112
        bottom = np.asarray(shown.convert("RGB"))[-3:]
        assert (bottom[..., 0] > 150).mean() > 0.5 and (bottom[..., 1] < 80).mean() > 0.3  # the red band
        assert c.get("/v1/products/P002/image").status_code == 404
        assert c.get("/v1/products/nope/image").status_code == 404
        sim = c.get("/v1/products/P003/similar", params={"k": 14}, headers=U).json()["items"]
        by_id = {it["product_id"]: it for it in sim}
        assert by_id["P000"]["image_generated"] is False and by_id["P000"]["image_url"].endswith("/P000/image")
        assert by_id["P001"]["image_generated"] is True and by_id["P002"]["image_url"] is None


def test_customer_campaign_matches_the_batch_build(built, tmp_path):
    from retailgan.campaign.customer import customer_campaign
    from retailgan.data.store import Store
    from retailgan.serving.engine import ModelBundle

    c, settings = make_client(built, tmp_path)
    with c:
        r = c.get("/v1/customers/C0/campaign", params={"k": 4, "theme": "category:dept0"}, headers=U)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["customer_id"] == "C0" and got["theme"] == "category:dept0" and len(got["products"]) == 4
        assert all(p["product_id"].startswith("P0") and p["reason"] for p in got["products"])
        assert got["banner_png"].startswith("data:image/png;base64,") and "<html" in got["html"]
        assert [p["rank"] for p in got["products"]] == [1, 2, 3, 4]
        html = c.get("/v1/customers/C0/campaign", params={"k": 4, "theme": "category:dept0", "format": "html"},
                     headers=U)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert html.text == got["html"]
        no_banner = c.get("/v1/customers/C0/campaign", params={"k": 4, "banner": "false"}, headers=U).json()
        assert "banner_png" not in no_banner or no_banner["banner_png"] is None
        # Errors: unknown customer 404, bad theme 422 naming the part, k out of range 422, no key 401.
        assert c.get("/v1/customers/nobody/campaign", headers=U).status_code == 404
        bad = c.get("/v1/customers/C0/campaign", params={"theme": "colour:red"}, headers=U)
        assert bad.status_code == 422 and "colour:red" in bad.json()["detail"]
        assert c.get("/v1/customers/C0/campaign", params={"k": 0}, headers=U).status_code == 422
        assert c.get("/v1/customers/C0/campaign").status_code == 401
    # The same content as the campaign code gives for this customer directly.
    with Store.open(settings.store, read_only=True) as s:
        direct = customer_campaign(ModelBundle.load(settings.model_dir), s, "C0", theme="category:dept0", k=4)
    assert [p.product_id for p in direct.products] == [p["product_id"] for p in got["products"]]
    assert direct.html == got["html"]


def test_trend_model_is_served_with_the_stores_recent_sales(built, tmp_path):
    from retailgan.data.dataset import load_dataset
    from retailgan.models.base import TrainingOptions
    from retailgan.models.gan.featgan import FeatureGAN
    from retailgan.persistence import load_model
    from retailgan.serving.storage import ServiceStore

    days = 5
    model = FeatureGAN(trend_days=days, epochs=2, emb_dim=8, hidden=16, noise_dim=2, text_dim=4, collab_dim=2)
    model.fit(load_dataset(built["store"]), TrainingOptions(seed=0))
    model.set_recent_sales([], [])  # a saved snapshot of no sales: the service must replace it
    built = {**built, "models": {"featgan": model.save(tmp_path / "fg")}}
    snapshot = load_model(built["models"]["featgan"])._recent
    assert not snapshot.any()
    c, settings = make_client(built, tmp_path / "svc", model="featgan")
    # Expected: customers whose first event with the product is in the last 5 days (UTC) of the store.
    ds = load_dataset(settings.store)
    day = ds.timestamp // 86400
    recent = np.bincount(ds.item_idx[day > day.max() - days], minlength=ds.n_items)
    assert recent.sum() > 0
    store = ServiceStore(settings.store)
    try:
        got = store.recent_buyers(days)
    finally:
        store.close()
    assert got == {str(ds.items.decode([j])[0]): int(n) for j, n in enumerate(recent) if n}
    with c:
        model = c.app.state.service.bundle.model
        order = model.items.index(list(ds.items.ids))
        np.testing.assert_array_equal(model._recent[order], recent)
        assert not np.array_equal(snapshot[order], recent)  # not the training snapshot
        assert rec(c, customer_id="C0", k=3)["strategy"] == "model"
