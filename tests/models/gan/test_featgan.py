"""The product-feature GAN: targets, new customers and products, slates, explanations, files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from retailgan.data.dataset import InteractionDataset
from retailgan.errors import ConfigError, UnknownIdError
from retailgan.index import faiss_available
from retailgan.models.base import TrainingOptions
from retailgan.models.gan.featgan import FeatureGAN, FeatureGANConfig, blend_item_prior, buyer_weighted_counts
from retailgan.persistence import load_model
from tests.conftest import oracle_dataset
from tests.models.test_contract import FAST_CONFIGS

FAST = FAST_CONFIGS["featgan"]


@pytest.fixture(scope="module")
def fitted():
    ds, answer = oracle_dataset()
    return FeatureGAN(**FAST).fit(ds, TrainingOptions(seed=0)), ds, answer


def test_targets_use_strictly_earlier_products_only():
    # One customer: a at t=1, b and c together at t=2 (one basket), d at t=3.
    ds = InteractionDataset.from_arrays(
        ["u"] * 4 + ["v"] * 2, ["a", "b", "c", "d", "a", "b"], timestamps=[1, 2, 2, 3, 5, 6]
    )
    model = FeatureGAN(**{**FAST, "epochs": 1, "text_dim": 2, "collab_dim": 1})
    model.fit(ds, TrainingOptions(seed=0))
    model.init_training(ds, TrainingOptions(seed=0))
    items = model.items.decode(model._hist_items[model._ex_pos])
    got = sorted((str(i), int(c)) for i, c in zip(items, model._ex_cut, strict=True))
    # a never a target (no history); b and c each see only a; d sees a, b, c; v's b sees a.
    assert got == [("b", 1), ("b", 1), ("c", 1), ("d", 3)]


def test_new_customer_history(fitted):
    model, ds, answer = fitted
    recs = model.recommend_histories(
        [["i0_0", "i0_1", "i0_2", "i0_3", "i0_4"], ["i1_0", "i1_1", "i1_2", "i1_4", "i1_5"]], k=1
    )
    assert recs.known.tolist() == [True, True]
    # (Each history is a training customer's minus one product; the first product of the time
    # order, never a "next purchase" target, is not asked for.)
    assert recs.item_ids[:, 0].tolist() == ["i0_5", "i1_3"]
    # The history is excluded by default, and can be allowed back.
    recs = model.recommend_histories([["i0_1"]], k=12)
    assert "i0_1" not in recs.item_ids[0]
    recs = model.recommend_histories([["i0_1"]], k=12, exclude_history=False)
    assert "i0_1" in recs.item_ids[0]


def test_empty_or_unknown_history_falls_back_to_popularity(fitted):
    model, ds, answer = fitted
    recs = model.recommend_histories([[], ["no-such-product"], ["no-such-product", "i0_1"]], k=4)
    assert recs.known.tolist() == [False, False, True]
    order = np.lexsort((np.arange(model.n_items), -model.popularity))[:4]
    assert list(recs.item_idx[0]) == list(order) == list(recs.item_idx[1])
    assert np.all(np.isfinite(recs.scores))
    with pytest.raises(ConfigError, match="list of lists"):
        model.recommend_histories(["i0_1"], k=2)


def test_score_histories_matches_known_customers(fitted):
    model, ds, answer = fitted
    u = next(iter(answer))
    row = model.seen[model.users.index([u])]
    # Ordered values (positions) reproduce the customer's time order.
    order = model._user_rows(model.users.index([u]))[1]
    hist = row.copy().astype(np.float64)
    ranks = {int(i): r for r, i in enumerate(order)}
    hist.data = np.array([ranks[int(i)] + 1.0 for i in hist.indices])
    np.testing.assert_allclose(model.score_histories(hist), model.score_users(model.users.index([u])), rtol=1e-5)
    empty = model.score_histories(sp.csr_matrix((1, model.n_items)))
    assert np.argmax(empty[0]) == np.argmax(model.popularity)


def test_unknown_ids(fitted):
    model, ds, answer = fitted
    with pytest.raises(UnknownIdError, match="nope"):
        model.explain(["nope"], user_id=next(iter(answer)))
    with pytest.raises(UnknownIdError, match="nope"):
        model.recommend_histories([["i0_1"]], k=2, candidates=["nope"])
    recs = model.recommend(["ghost"], k=3, samples=3, diversity=0.2)
    assert not recs.known[0]
    with pytest.raises(ConfigError, match="exactly one"):
        model.explain(["i0_0"])


def test_explanations_name_history_products(fitted):
    model, ds, answer = fitted
    u = next(iter(answer))
    history = set(model.items.decode(model.seen[model.users.index([u])[0]].indices))
    recs = model.recommend([u], k=3)
    expl = model.explain(list(recs.item_ids[0]), user_id=u, n=2)
    assert list(expl) == list(recs.item_ids[0])
    for drivers in expl.values():
        assert len(drivers) == 2
        assert {d for d, _ in drivers} <= history
        assert drivers[0][1] >= drivers[1][1]
    # Ad-hoc history: drivers come from it; an empty history explains nothing.
    expl = model.explain(["i0_0"], history=["i0_3", "i1_2", "unknown"], n=5)
    assert {d for d, _ in expl["i0_0"]} == {"i0_3", "i1_2"}
    assert expl["i0_0"][0][0] == "i0_3"  # same family first
    assert model.explain(["i0_0"], history=[]) == {"i0_0": []}


def test_new_products_are_recommendable_without_retraining(tmp_path):
    ds, answer = oracle_dataset()
    model = FeatureGAN(**FAST).fit(ds, TrainingOptions(seed=0))
    n = model.n_items
    model.add_products(["new0", "new1"], ["Product 0-9", "Product 1-9"], ["cat0", "cat1"], [2.0, None])
    assert model.n_items == n + 2 and model.popularity[-1] == 0
    u0 = next(u for u in answer if u.startswith("u0_"))
    recs = model.recommend([u0], k=2, candidates=["new0", "new1"])
    assert recs.item_ids[0].tolist() == ["new0", "new1"]
    recs = model.recommend_histories([["i1_0", "i1_1"]], k=2, candidates=["new0", "new1"], samples=3, diversity=0.1)
    assert recs.item_ids[0, 0] == "new1"
    with pytest.raises(ConfigError, match="already in the catalogue"):
        model.add_products(["new0"], ["x"])
    loaded = load_model(model.save(tmp_path / "m"))
    assert "new1" in loaded.items
    np.testing.assert_array_equal(loaded.score_users(np.arange(5)), model.score_users(np.arange(5)))


def test_slates_diverse_deterministic_and_plain_when_s1(fitted):
    model, ds, answer = fitted
    users = list(answer)[:6]
    plain = model.recommend(users, k=4)
    via_merge = model.recommend(users, k=4, samples=1, diversity=0.0)
    np.testing.assert_array_equal(plain.item_ids, via_merge.item_ids)
    a = model.recommend(users, k=4, samples=5, diversity=0.5, exclude=["i1_0"])
    b = model.recommend(users, k=4, samples=5, diversity=0.5, exclude=["i1_0"])
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    for r, u in enumerate(users):
        got = [i for i in a.item_ids[r] if i is not None]
        owned = set(model.items.decode(model.seen[model.users.index([u])[0]].indices))
        assert len(set(got)) == len(got) == 4 and not owned & set(got) and "i1_0" not in got
    with pytest.raises(ConfigError, match="samples"):
        model.recommend(users, k=4, samples=0)


def test_dpp_slates_follow_the_retrieval_space_and_survive_save_load(fitted, tmp_path):
    model, ds, answer = fitted
    users = list(answer)[:6]
    dpp_model = load_model(model.save(tmp_path / "plain"))  # a copy: the fixture stays as it is
    dpp_model.config = dataclasses.replace(dpp_model.config, diversify="dpp")
    a = dpp_model.recommend(users, k=4, samples=3, diversity=0.5)
    np.testing.assert_array_equal(a.item_ids, dpp_model.recommend(users, k=4, samples=3, diversity=0.5).item_ids)
    # Diversity 0 is the plain merged order, whatever the diversifier.
    np.testing.assert_array_equal(
        dpp_model.recommend(users, k=4, samples=3, diversity=0.0).item_ids,
        model.recommend(users, k=4, samples=3, diversity=0.0).item_ids,
    )
    E = model.item_vectors
    for r, u in enumerate(users):
        got = [i for i in a.item_ids[r] if i is not None]
        owned = set(model.items.decode(model.seen[model.users.index([u])[0]].indices))
        assert len(set(got)) == len(got) == 4 and not owned & set(got)
    # Spread in the retrieval space: DPP lists span more volume than the plain lists on average.
    plain = model.recommend(users, k=4, samples=3, diversity=0.0)

    def logdet(ids):
        v = E[model.items.index(list(ids))].astype(np.float64)
        return np.linalg.slogdet(v @ v.T)[1]

    assert np.mean([logdet(x) for x in a.item_ids]) > np.mean([logdet(x) for x in plain.item_ids])
    loaded = load_model(dpp_model.save(tmp_path / "dpp"))
    assert loaded.config.diversify == "dpp"
    np.testing.assert_array_equal(loaded.recommend(users, k=4, samples=3, diversity=0.5).item_ids, a.item_ids)
    with pytest.raises(ConfigError, match="diversify"):
        FeatureGAN(**{**FAST, "diversify": "volume"}).fit(ds)


def test_save_load_keeps_every_path(fitted, tmp_path):
    model, ds, answer = fitted
    loaded = load_model(model.save(tmp_path / "fg"))
    users = list(answer)[:5]
    for kw in ({}, {"samples": 4, "diversity": 0.3}):
        np.testing.assert_array_equal(
            model.recommend(users, k=5, **kw).item_ids, loaded.recommend(users, k=5, **kw).item_ids
        )
    h = [["i0_1", "i0_2"], []]
    np.testing.assert_array_equal(
        model.recommend_histories(h, k=3).item_ids, loaded.recommend_histories(h, k=3).item_ids
    )
    assert loaded.explain(["i0_0"], user_id=users[0]) == model.explain(["i0_0"], user_id=users[0])


def test_determinism_of_slates_under_seed(fitted):
    model, ds, answer = fitted
    again = FeatureGAN(**FAST).fit(ds, TrainingOptions(seed=0))
    users = list(answer)
    np.testing.assert_array_equal(
        again.recommend(users, k=5, samples=3, diversity=0.2).item_ids,
        model.recommend(users, k=5, samples=3, diversity=0.2).item_ids,
    )
    other = FeatureGAN(**FAST).fit(ds, TrainingOptions(seed=1))
    assert not np.array_equal(other.score_users(np.arange(4)), model.score_users(np.arange(4)))


def test_ablation_without_adversary_and_config_checks(fitted):
    ds, answer = oracle_dataset()
    model = FeatureGAN(**{**FAST, "adversarial": False, "epochs": 2}).fit(ds, TrainingOptions(seed=0))
    assert "loss_d" not in model.history[-1] and "loss_aux" in model.history[-1]
    with pytest.raises(ConfigError, match="loss"):
        FeatureGAN(**{**FAST, "loss": "wgan"}).fit(ds)
    with pytest.raises(ConfigError, match="aux_weight=0"):
        FeatureGAN(**{**FAST, "aux_weight": 0.0, "adversarial": False}).fit(ds)


def test_cli_recommend_explain(fitted, tmp_path):
    import json

    from typer.testing import CliRunner

    from retailgan.cli import app
    from retailgan.models.baselines import EASE

    model, ds, answer = fitted
    path = model.save(tmp_path / "fg")
    runner = CliRunner()
    u = next(iter(answer))
    res = runner.invoke(app, ["recommend", "--model-dir", str(path), "--user", u, "--k", "2", "--explain", "--json"])
    assert res.exit_code == 0, res.output
    items = json.loads(res.output)[0]["items"]
    history = set(model.items.decode(model.seen[model.users.index([u])[0]].indices))
    assert len(items) == 2 and all(1 <= len(it["because"]) <= 3 for it in items)
    assert {b["product_id"] for it in items for b in it["because"]} <= history
    res = runner.invoke(app, ["recommend", "--model-dir", str(path), "--user", u, "--k", "2", "--explain"])
    assert res.exit_code == 0 and "close to" in res.output and "Product" in res.output
    # Item-item models explain by contributions: the history products that add most to the score.
    ease = EASE(l2=1.0).fit(ds).save(tmp_path / "ease")
    res = runner.invoke(app, ["recommend", "--model-dir", str(ease), "--user", u, "--k", "2", "--explain", "--json"])
    assert res.exit_code == 0, res.output
    items = json.loads(res.output)[0]["items"]
    assert all(it["reasons"] for it in items)
    assert {b["product_id"] for it in items for b in it["because"]} <= history


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (extra 'ann')")
def test_faiss_index_gives_the_exact_lists_on_a_small_catalogue(fitted, tmp_path):
    model, ds, answer = fitted
    cfg = {**model.config.to_dict(), "index": "hnsw"}
    ann = FeatureGAN(**cfg).fit(ds, TrainingOptions(seed=0))
    users = list(answer)
    for kw in ({}, {"samples": 3, "diversity": 0.2}):
        np.testing.assert_array_equal(
            ann.recommend(users, k=3, **kw).item_ids, model.recommend(users, k=3, **kw).item_ids
        )


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (extra 'ann')")
def test_use_index_switches_the_batch_path_to_the_index_and_back(fitted, tmp_path):
    """The batch job's recall gate: an exhaustive index (nprobe = nlist) has recall 1."""
    from retailgan.batch import index_recall

    model = load_model(fitted[0].save(tmp_path / "m"))  # a copy: the fixture stays as it is
    users = sorted(model.users.ids.tolist())
    exact = model.top_k(users, 3).item_idx
    nlist = max(1, model.n_items // 40)
    recall, n = index_recall(model, users, 3, True, "ivf", {"nlist": nlist, "nprobe": nlist})
    assert (recall, n) == (1.0, len(users)) and model.config.index == "ivf"
    assert model.top_k(users, 3).item_idx.tolist() == exact.tolist()
    model.use_index("exact")
    assert model.config.index == "exact" and model.top_k(users, 3).item_idx.tolist() == exact.tolist()


def test_blend_item_prior_is_a_product_of_experts():
    cos = np.array([[0.5, 0.4, 0.1]], np.float32)
    counts = np.array([0.0, 3.0, 0.0])
    np.testing.assert_array_equal(blend_item_prior(cos, counts, 0.0, 0.1), cos)
    got = blend_item_prior(cos, counts, 2.0, 0.1)
    np.testing.assert_allclose(got, [[0.5, 0.4 + 0.2 * np.log(4.0), 0.1]], rtol=1e-6)
    assert got.dtype == np.float32
    # exp(score / T) = exp(cos / T) * (1 + c) ** w
    np.testing.assert_allclose(np.exp(got[0] / 0.1), np.exp(cos[0] / 0.1) * (1 + counts) ** 2.0, rtol=1e-4)
    for bad in ({"counts": np.array([0.0, -1.0, 0.0])}, {"counts": np.zeros(2)}, {"weight": -1.0}):
        kw = {"counts": counts, "weight": 1.0, **bad}
        with pytest.raises(ConfigError):
            blend_item_prior(cos, kw["counts"], kw["weight"], 0.1)


def test_sales_prior_reranks_new_products_as_documented():
    ds, answer = oracle_dataset()
    model = FeatureGAN(**FAST).fit(ds, TrainingOptions(seed=0))
    model.add_products(["new0", "new1"], ["Product 0-9", "Product 1-9"], ["cat0", "cat1"], [2.0, None])
    u0 = next(u for u in answer if u.startswith("u0_"))
    new = ["new0", "new1"]
    assert model.recommend([u0], k=2, candidates=new).item_ids[0].tolist() == ["new0", "new1"]
    u = model.users.index([u0])
    before = model.score_users(u)
    # A weak prior keeps featgan's order; a strong one lets the best seller win.
    model.set_item_prior(["new1"], [50.0], weight=0.01)
    assert model.recommend([u0], k=2, candidates=new).item_ids[0].tolist() == ["new0", "new1"]
    model.set_item_prior(["new1"], [50.0], weight=20.0)
    after = model.score_users(u)
    t = model.config.temperature
    expected = before.copy()
    expected[0, model.items.index(["new1"])[0]] += 20.0 * t * np.log(51.0)
    np.testing.assert_allclose(after, expected, rtol=1e-5)
    assert model.recommend([u0], k=2, candidates=new).item_ids[0].tolist() == ["new1", "new0"]
    # The slate path (index search, no candidate list) sees the boosted product too.
    assert model.recommend([u0], k=1, samples=3, diversity=0.1).item_ids[0, 0] == "new1"
    assert model.recommend_histories([["i0_0", "i0_1"]], k=1).item_ids[0, 0] == "new1"
    # The config's cold_prior is the default weight; 0 switches the prior off.
    model.set_item_prior(["new1"], [50.0])
    np.testing.assert_allclose(model.score_users(u), before)
    model.set_item_prior(["new1"], [50.0], weight=20.0)
    model.clear_item_prior()
    np.testing.assert_allclose(model.score_users(u), before)
    # Products added later get no sales; bad inputs are refused.
    model.set_item_prior(["new1"], [5.0], weight=1.0)
    model.add_products(["new2"], ["Product 1-8"])
    assert model.score_users(u).shape == (1, model.n_items)
    with pytest.raises(UnknownIdError):
        model.set_item_prior(["nope"], [1.0])
    with pytest.raises(ConfigError):
        model.set_item_prior(["new0", "new1"], [1.0])
    with pytest.raises(ConfigError):
        model.set_item_prior(["new0"], [-1.0])
    with pytest.raises(ConfigError, match="cold_prior"):
        FeatureGAN(**{**FAST, "cold_prior": -1.0}).fit(ds)


def test_buyer_weighted_counts():
    g_users = np.array([[1.0, 0.0]])
    g_buyers = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    known = np.array([True, True, False])
    sales = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 2]]))
    np.testing.assert_allclose(buyer_weighted_counts(g_users, g_buyers, known, sales, 0.0), [[2.0, 2.0]])
    w_far = np.exp(-1 / 0.5)
    mean_w = (1.0 + w_far) / 2  # the unknown buyer weighs as an average known one
    np.testing.assert_allclose(
        buyer_weighted_counts(g_users, g_buyers, known, sales, 0.5), [[1.0 + w_far, w_far + mean_w]]
    )


def test_buyer_weighted_sales_prefer_what_similar_customers_bought():
    ds, answer = oracle_dataset()
    model = FeatureGAN(**FAST).fit(ds, TrainingOptions(seed=0))
    model.add_products(["new0", "new1"], ["Product 0-9", "Product 1-9"], ["cat0", "cat1"], [2.0, None])
    u0 = [u for u in answer if u.startswith("u0_")]
    u1 = [u for u in answer if u.startswith("u1_")]
    # new1 sold to five customers of group 1 and a stranger, new0 to two customers of group 0.
    customers, products = [*u1[:5], "stranger", *u0[:2]], ["new1"] * 6 + ["new0"] * 2
    new = ["new0", "new1"]
    model.set_item_sales(customers, products, weight=20.0, kernel=0.0)  # plain counts: 6 vs 2
    assert model.recommend(u0[5:8], k=1, candidates=new).item_ids[:, 0].tolist() == ["new1"] * 3
    model.set_item_sales(customers, products, weight=20.0, kernel=0.05)  # similar buyers count
    assert model.recommend(u0[5:8], k=1, candidates=new).item_ids[:, 0].tolist() == ["new0"] * 3
    assert model.recommend(u1[5:8], k=1, candidates=new).item_ids[:, 0].tolist() == ["new1"] * 3
    # The slate path agrees, and set_item_prior / clear_item_prior replace the sales prior.
    assert model.recommend(u0[5:6], k=1, candidates=new, samples=3, diversity=0.1).item_ids[0, 0] == "new0"
    model.set_item_prior(["new1"], [6.0], weight=20.0)
    assert model.recommend(u0[5:6], k=1, candidates=new).item_ids[0, 0] == "new1"
    model.clear_item_prior()
    assert model._prior_sales is None and model._prior_counts is None
    with pytest.raises(ConfigError, match="customers"):
        model.set_item_sales(["a"], ["new0", "new1"])
    with pytest.raises(ConfigError, match="prior_kernel"):
        model.set_item_sales(["a"], ["new0"], kernel=-1.0)


def _trending_log(seed: int = 0) -> InteractionDataset:
    """Ten weeks; each week a different product is "hot" and most customers buy it that week,
    after a few everyday products. Static features cannot tell which product is hot: only its
    sales of the last days can."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    info = {f"p{i}": {"title": f"product {w} {w}x", "price": 2.0} for i, w in enumerate(
        ["red", "blue", "green", "gold", "pink", "grey", "navy", "teal", "rust", "lime", "plum", "sand"]
    )}
    for week in range(10):
        for c in range(60):
            day = week * 7 + int(rng.integers(0, 6))
            for p in rng.choice(np.arange(10, 12), 1):  # everyday products first
                users.append(f"c{c}"), items.append(f"p{p}"), ts.append((day - 1) * 86400 + week)
            if rng.random() < 0.8:
                users.append(f"c{c}"), items.append(f"p{week}"), ts.append(day * 86400 + 3600 + c)
    return InteractionDataset.from_arrays(users, items, timestamps=ts, item_info=info)


def test_learned_trend_follows_recent_sales_and_is_saved(tmp_path):
    ds = _trending_log()
    cfg = {**FAST, "trend_days": 3, "epochs": 15}
    model = FeatureGAN(**cfg).fit(ds, TrainingOptions(seed=0))
    users = [f"c{c}" for c in range(30)]
    beta = model.trend_weights(users)
    assert beta.shape == (30, 2)
    assert np.all(beta.sum(axis=1) > 0.5)  # learned to follow what sells now
    # The default recent sales are the last 3 days of the log: week 9's product is hot.
    top = model.recommend(users, k=1, exclude_seen=False).item_ids[:, 0]
    assert (top == "p9").mean() >= 0.8
    # New recent sales move the list without retraining; both ranking paths agree.
    ids = [f"p{i}" for i in range(12)]
    model.set_recent_sales(ids, [50.0 if i == 4 else 0.0 for i in range(12)])
    for kw in ({}, {"samples": 3}):
        top = model.recommend(users, k=1, exclude_seen=False, **kw).item_ids[:, 0]
        assert (top == "p4").mean() >= 0.8, kw
    loaded = load_model(model.save(tmp_path / "trend"))
    np.testing.assert_allclose(loaded.score_users(np.arange(ds.n_users)), model.score_users(np.arange(ds.n_users)))
    np.testing.assert_array_equal(loaded.trend_weights(users), beta)
    # Seeded: a second fit gives the same model.
    again = FeatureGAN(**cfg).fit(ds, TrainingOptions(seed=0))
    np.testing.assert_array_equal(again.trend_weights(users), beta)
    # A product added later has no sales until told; then it is ranked by them too.
    model.add_products(["p99"], ["product new new"])
    model.set_recent_sales(["p99"], [80.0])
    assert (model.recommend(users, k=1, exclude_seen=False).item_ids[:, 0] == "p99").mean() >= 0.8


def test_trend_config_and_recent_sales_checks(fitted):
    model, ds, answer = fitted
    with pytest.raises(ConfigError, match="trend_days = 0"):
        model.set_recent_sales(["i0_0"], [1.0])
    with pytest.raises(ConfigError, match="trend_days = 0"):
        model.trend_weights(list(answer)[:1])
    with pytest.raises(ConfigError, match="trend_days >= 0"):
        FeatureGAN(**{**FAST, "trend_days": -1}).fit(ds, TrainingOptions(seed=0))
    trend = FeatureGAN(**{**FAST, "trend_days": 2, "epochs": 1}).fit(ds, TrainingOptions(seed=0))
    with pytest.raises(ConfigError, match="counts of shape"):
        trend.set_recent_sales(["i0_0", "i0_1"], [1.0])
    with pytest.raises(ConfigError, match="finite and >= 0"):
        trend.set_recent_sales(["i0_0"], [-1.0])
    with pytest.raises(UnknownIdError):
        trend.set_recent_sales(["nope"], [1.0])


def test_trend_sparse_path_equals_the_dense_table(monkeypatch):
    import retailgan.models.gan.featgan.training as fg

    ds = _trending_log()
    cfg = {**FAST, "trend_days": 3, "epochs": 3}
    dense = FeatureGAN(**cfg).fit(ds, TrainingOptions(seed=0))
    monkeypatch.setattr(fg, "TREND_TABLE_MAX", 0)  # too big for the table: per-batch sparse sums
    sparse = FeatureGAN(**cfg).fit(ds, TrainingOptions(seed=0))
    users = np.arange(ds.n_users)
    np.testing.assert_allclose(sparse.score_users(users), dense.score_users(users), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sparse._recent, dense._recent)


def test_weight_average_scores_with_the_average_and_trains_the_raw_weights(tmp_path):
    ds, answer = oracle_dataset()
    cfg = {**FAST, "epochs": 3}
    plain = FeatureGAN(**cfg).fit(ds, TrainingOptions(seed=0))
    raw_at_end: list[list[np.ndarray]] = []
    avg_at_end: list[list[np.ndarray]] = []

    def snapshot(epoch, logged):
        raw_at_end.append([w.numpy().copy() for w in model._raw_params])
        avg_at_end.append([w.detach().numpy().copy() for w in model.nets.parameters()])

    model = FeatureGAN(**cfg, ema=0.5)
    model.fit(ds, TrainingOptions(seed=0, callback=snapshot))
    # The optimiser's trajectory is the plain model's: averaging only changes what is read out.
    for raw, w in zip(raw_at_end[-1], plain.nets.parameters(), strict=True):
        np.testing.assert_array_equal(raw, w.detach().numpy())
    # What scores (and is saved) is the average, not the last weights.
    final = [w.detach().numpy() for w in model.nets.parameters()]
    for a, b in zip(final, avg_at_end[-1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, r) for a, r in zip(final, raw_at_end[-1], strict=True))
    assert model._ema_params is None and model._raw_params is None  # training state released
    # Seeded, and the files give the same lists.
    again = FeatureGAN(**cfg, ema=0.5).fit(ds, TrainingOptions(seed=0))
    users = list(answer)
    np.testing.assert_array_equal(again.recommend(users, k=3).item_ids, model.recommend(users, k=3).item_ids)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.score_users(np.arange(3)), model.score_users(np.arange(3)), rtol=1e-6)
    # Early stopping on validation restores the best epoch's average.
    val = FeatureGAN(**cfg, ema=0.5).fit(ds, TrainingOptions(seed=0, validation=ds, validation_metric="ndcg@5"))
    assert 1 <= val.best_epoch <= 3
    with pytest.raises(ConfigError, match="ema"):
        FeatureGAN(**{**FAST, "ema": 1.0}).fit(ds)


def test_weight_average_is_bias_corrected():
    """The average starts from zero and is divided by ``1 - decay ** steps``: after one step it is
    exactly that step's weights (no share of the random initial weights), after two the
    decay-weighted mean of both."""
    ds, _ = oracle_dataset()
    one_step = {**FAST, "batch_size": 1_000_000}  # the whole (tiny) training set in one batch
    for epochs in (1, 2):
        plain = [FeatureGAN(**{**one_step, "epochs": e}).fit(ds, TrainingOptions(seed=0)) for e in (1, 2)]
        model = FeatureGAN(**{**one_step, "epochs": epochs}, ema=0.9).fit(ds, TrainingOptions(seed=0))
        for k, w in enumerate(model.nets.parameters()):
            w1 = list(plain[0].nets.parameters())[k].detach().numpy()
            w2 = list(plain[1].nets.parameters())[k].detach().numpy()
            expected = w1 if epochs == 1 else (0.1 * 0.9 * w1 + 0.1 * w2) / (1 - 0.9**2)
            np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_removed_options_load_when_off_and_are_refused_when_on():
    # Model files written before the lost options were removed name them at their "off" value.
    old = {"emb_dim": 8, "wta": False, "mcl_eps": 0.0, "train_samples": 1, "mode_seeking": 0.0,
           "id_embeddings": False, "slate_merge": "max", "history_keep": 1.0}
    assert FeatureGANConfig.from_dict(old) == FeatureGANConfig(emb_dim=8)
    for name, value in (("wta", True), ("train_samples", 5), ("id_embeddings", True), ("slate_merge", "calibrated")):
        with pytest.raises(ConfigError, match=f"{name}.*removed"):
            FeatureGANConfig.from_dict({name: value})


def test_id_only_log_uses_the_wider_collaborative_block():
    # A log of ids only (no catalogue): the feature space is the collaborative block alone,
    # collab_dim_no_content wide (capped by the matrix' rank), and the model trains and saves.
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 4)
    items = (users % 6) * 3 + rng.integers(0, 3, len(users))
    ds = InteractionDataset.from_arrays(
        [f"u{u}" for u in users], [f"i{i}" for i in items], timestamps=np.tile(np.arange(4), 30)
    )
    model = FeatureGAN(**{**FAST, "epochs": 1, "collab_dim": 2, "collab_dim_no_content": 6})
    model.fit(ds, TrainingOptions(seed=0))
    assert model.space.block_dims == {"text": 0, "category": 0, "price": 0, "collab": 6}
    assert model.X.shape == (ds.n_items, 6)
    assert np.isfinite(model.score_users(np.arange(3))).all()


def test_held_out_targets_see_all_other_products_of_the_customer():
    # u: a at t=1, b and c together at t=2, d at t=3; v: a, b. Every pair is a target, its
    # history the customer's other products (held-out, not next, purchases).
    ds = InteractionDataset.from_arrays(
        ["u"] * 4 + ["v"] * 2, ["a", "b", "c", "d", "a", "b"], timestamps=[1, 2, 2, 3, 5, 6]
    )
    model = FeatureGAN(**{**FAST, "epochs": 1, "text_dim": 2, "collab_dim": 1, "targets": "held-out"})
    model.fit(ds, TrainingOptions(seed=0))
    model.init_training(ds, TrainingOptions(seed=0))
    items = model.items.decode(model._hist_items[model._ex_pos])
    got = sorted((str(i), int(c)) for i, c in zip(items, model._ex_cut, strict=True))
    assert got == [("a", 1), ("a", 3), ("b", 1), ("b", 3), ("c", 3), ("d", 3)]
    with pytest.raises(ConfigError, match="targets"):
        FeatureGAN(targets="random").fit(ds)


def test_held_out_input_removes_the_target_from_both_means():
    from retailgan.models.gan.featgan.training import held_out_input, history_input

    feats = np.arange(10, dtype=np.float64).reshape(5, 2)  # one customer's five products in order
    prefix = np.concatenate([np.zeros((1, 2)), np.cumsum(feats, axis=0)])
    for pos in range(5):
        rest = np.delete(feats, pos, axis=0)
        rest_prefix = np.concatenate([np.zeros((1, 2)), np.cumsum(rest, axis=0)])
        got = held_out_input(prefix, np.array([0]), np.array([5]), np.array([pos]), recent=2)
        want = history_input(rest_prefix, np.array([0]), np.array([4]), recent=2)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_cold_shift_lifts_products_without_sales_in_every_path():
    ds, answer = oracle_dataset()
    model = FeatureGAN(**FAST).fit(ds, TrainingOptions(seed=0))
    model.add_products(["new0", "new1"], ["Product 0-9", "Product 1-9"], ["cat0", "cat1"], [2.0, 3.0])
    u0 = next(u for u in answer if u.startswith("u0_"))
    base = model.score_users(model.users.index([u0]))
    assert "new1" not in model.recommend([u0], k=2).item_ids[0]  # the other group's new product
    # A shift beyond the cosine range (2) puts both new products first, whichever path ranks.
    model.config = dataclasses.replace(model.config, cold_shift=2.5)
    model._invalidate()
    shifted = model.score_users(model.users.index([u0]))
    np.testing.assert_allclose(shifted[0, -2:], base[0, -2:] + 2.5, rtol=1e-6)
    np.testing.assert_allclose(shifted[0, :-2], base[0, :-2], rtol=1e-6)
    for kwargs in ({}, {"samples": 3, "diversity": 0.1}):
        assert sorted(model.recommend([u0], k=2, **kwargs).item_ids[0].tolist()) == ["new0", "new1"]
    assert sorted(model.top_k([u0], k=2).item_ids[0].tolist()) == ["new0", "new1"]


def test_streamed_blocks_give_the_whole_log_prefix_inputs(monkeypatch):
    """Above PREFIX_MAX the prefix sums are built one block of customers at a time: every
    example is visited once per epoch with the same history input as from the whole log's
    prefix, and ``epoch_examples`` visits a share of them."""
    import retailgan.models.gan.featgan.training as fg

    ds, answer = oracle_dataset()
    model = FeatureGAN(**FAST)
    model.init_training(ds, TrainingOptions(seed=0))
    n_ex, d = len(model._ex_pos), model.X.shape[1]
    whole = fg.history_input(model._prefix, model._ex_start, model._ex_cut, model._cfg.recent).numpy()
    monkeypatch.setattr(fg, "PREFIX_MAX", 7 * d)  # blocks of about 7 pairs (one customer has 5)
    model.init_training(ds, TrainingOptions(seed=0))
    assert model._prefix is None
    for _ in range(2):  # customers are dealt afresh each epoch
        seen = np.zeros(n_ex, int)
        blocks = list(model._epoch_blocks())
        assert len(blocks) > 5
        for prefix, start, order in blocks:
            i = order.numpy()
            assert len(prefix) <= 7 + 5 + 1  # a block closes once it reaches the cap
            got = fg.history_input(prefix, start[i], model._ex_cut[i], model._cfg.recent).numpy()
            np.testing.assert_allclose(got, whole[i], rtol=1e-6, atol=1e-6)
            seen[i] += 1
        assert (seen == 1).all()
    half = FeatureGAN(**{**FAST, "epoch_examples": n_ex // 2})
    half.init_training(ds, TrainingOptions(seed=0))
    visits = sum(len(order) for _, _, order in half._epoch_blocks())
    assert n_ex // 2 <= visits <= n_ex // 2 + len(list(half._epoch_blocks()))
    # Trained streaming, the model still finds the known answers.
    streamed = FeatureGAN(**{**FAST, "epochs": 20}).fit(ds, TrainingOptions(seed=0))
    recs = streamed.recommend(list(answer), k=1)
    assert np.mean(recs.item_ids[:, 0] == np.array(list(answer.values()))) >= 0.9
    with pytest.raises(ConfigError, match="epoch_examples"):
        FeatureGAN(**{**FAST, "epoch_examples": -1}).fit(ds)


def test_held_out_targets_read_the_same_inputs_from_streamed_blocks(monkeypatch):
    """Held-out targets in blocks: the target's place is translated into the block's prefix sums."""
    import retailgan.models.gan.featgan.training as fg

    ds, _ = oracle_dataset()
    model = FeatureGAN(**{**FAST, "targets": "held-out"})
    model.init_training(ds, TrainingOptions(seed=0))
    cfg = model._cfg
    whole = fg.held_out_input(model._prefix, model._ex_start, model._ex_cut + 1, model._ex_pos, cfg.recent).numpy()
    monkeypatch.setattr(fg, "PREFIX_MAX", 7 * model.X.shape[1])
    model.init_training(ds, TrainingOptions(seed=0))
    assert model._prefix is None
    seen = 0
    for prefix, start, order in model._epoch_blocks():
        i = order.numpy()
        at = start[i] + model._ex_pos[i] - model._ex_start[i]
        got = fg.held_out_input(prefix, start[i], model._ex_cut[i] + 1, at, cfg.recent).numpy()
        np.testing.assert_allclose(got, whole[i], rtol=1e-6, atol=1e-6)
        seen += len(i)
    assert seen == len(model._ex_pos)


@pytest.mark.parametrize("shift", [float("nan"), float("inf")])
def test_cold_shift_must_be_finite(shift):
    ds, _ = oracle_dataset()
    with pytest.raises(ConfigError, match="cold_shift"):
        FeatureGAN(**{**FAST, "cold_shift": shift}).fit(ds)
