"""Contract tests every recommender inherits: add a model to FAST_CONFIGS and it is covered."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retailgan.errors import ConfigError, ModelFileError, UnknownIdError
from retailgan.models.base import Recommender, TrainingOptions
from retailgan.models.registry import MODELS, get_model_class
from retailgan.persistence import load_model
from tests.conftest import oracle_dataset

# Small, fast configurations that solve the oracle dataset.
FAST_CONFIGS: dict[str, dict] = {
    "pop": {},
    "itemknn": {"neighbors": 20, "shrink": 0.0},
    "ease": {"l2": 1.0},
    "sansa": {"l2": 1.0, "neighbors": 20},
    "ials": {"factors": 8, "regularization": 0.1, "alpha": 5.0, "epochs": 10},
    "bpr": {"factors": 8, "lr": 0.05, "reg": 0.05, "epochs": 100, "batch_size": 64},
    "cfgan": {
        "mode": "user", "g_hidden": 32, "d_hidden": 16, "lr_g": 0.01, "lr_d": 0.01, "zr_alpha": 0.1,
        "batch_size": 8, "batch_size_d": 8, "epochs": 15,
    },
    "featgan": {
        "emb_dim": 16, "hidden": 32, "noise_dim": 4, "text_dim": 8, "collab_dim": 4, "recent": 1,
        "temperature": 0.3, "lr_g": 0.01, "batch_size": 16, "epochs": 20,
    },
    "resgan": {"l2": 1.0, "hidden": 16, "d_hidden": 16, "batch_size": 16, "epochs": 5, "crossfit": 2},
    "recent": {"base": "ease", "base_params": {"l2": 1.0}, "trend_days": 3, "weight": 0.01},
    "contentknn": {"text_dim": 8},
    **{
        name: {"factors": 8, "bpr_lr": 0.05, "bpr_reg": 0.05, "bpr_epochs": 100, "text_dim": 8, "hidden": 32,
               "lr": 0.01, "batch_size": 64, "epochs": 30, **extra}
        for name, extra in (("dropoutnet", {"out_dim": 16}), ("heater", {"out_dim": 16}), ("clcrec", {"num_neg": 8}),
                            ("gar", {}))
    },
}
PERSONALISED = [m for m in FAST_CONFIGS if m != "pop"]


def test_every_registered_model_has_a_contract_config():
    assert set(MODELS) == set(FAST_CONFIGS)


def fit(name: str, seed: int = 0) -> tuple[Recommender, dict[str, str]]:
    ds, answer = oracle_dataset()
    model = get_model_class(name)(**FAST_CONFIGS[name])
    return model.fit(ds, TrainingOptions(seed=seed)), answer


@pytest.fixture(scope="module", params=list(FAST_CONFIGS))
def fitted(request):
    return request.param, *fit(request.param)


@pytest.mark.parametrize("name", PERSONALISED)
def test_oracle_known_answer_ranked_first(name):
    model, answer = fit(name)
    users = list(answer)
    recs = model.recommend(users, k=1)
    hits = np.mean([recs.item_ids[r, 0] == answer[u] for r, u in enumerate(users)])
    assert hits >= 0.95, f"{name}: top-1 equals the held-out item for only {hits:.0%} of users"


def test_pop_oracle_ranks_by_distinct_users():
    model, answer = fit("pop")
    # Each block item is owned by all but (n_per_cluster / items_per_cluster) users; ties by index.
    recs = model.recommend(["nobody"], k=12)
    pops = model.popularity[recs.item_idx[0]]
    assert np.all(np.diff(pops) <= 0)
    assert not recs.known[0]


def test_pop_recent_days_ranks_by_the_last_days(tmp_path):
    from retailgan.data.dataset import InteractionDataset

    day = 86400
    # "old" sold to three customers long ago, "new" to two in the last days, "mid" to one then.
    ds = InteractionDataset.from_arrays(
        ["a", "b", "c", "d", "e", "f", "a"],
        ["old", "old", "old", "new", "new", "mid", "mid"],
        timestamps=[0, day, 2 * day, 30 * day, 31 * day, 30 * day, 3 * day],
    )
    assert get_model_class("pop")().fit(ds).recommend(["x"], k=3).item_ids[0].tolist() == ["old", "mid", "new"]
    trending = get_model_class("pop")(recent_days=7).fit(ds)
    assert trending.recommend(["x"], k=3).item_ids[0].tolist() == ["new", "mid", "old"]  # old: tie-broken last
    assert load_model(trending.save(tmp_path / "p")).recommend(["x"], k=3).item_ids[0].tolist() == [
        "new", "mid", "old"
    ]
    with pytest.raises(ConfigError, match="recent_days"):
        get_model_class("pop")(recent_days=-1).fit(ds)


def test_shapes_and_sorted_scores(fitted):
    name, model, answer = fitted
    users = list(answer)[:7]
    scores = model.score_users(model.users.index(users))
    assert scores.shape == (7, model.n_items)
    recs = model.recommend(users, k=3)
    assert recs.item_ids.shape == recs.scores.shape == (7, 3)
    assert np.all(np.diff(recs.scores, axis=1) <= 0)


def test_exclude_seen(fitted):
    name, model, answer = fitted
    users = list(answer)
    seen = model.seen
    recs = model.recommend(users, k=6)
    for r, u in enumerate(users):
        owned = set(model.items.decode(seen[model.users.index([u])[0]].indices))
        got = {i for i in recs.item_ids[r] if i is not None}
        assert not owned & got
    # With exclude_seen=False owned items become recommendable.
    recs_all = model.recommend(users[:1], k=model.n_items, exclude_seen=False)
    assert set(recs_all.item_ids[0]) == set(model.items.ids)


def test_exclude_and_candidates(fitted):
    name, model, answer = fitted
    u = next(iter(answer))
    banned = answer[u]
    recs = model.recommend([u], k=3, exclude=[banned, "not-an-item"])
    assert banned not in recs.item_ids[0]
    recs = model.recommend([u, u], k=3, exclude=[[banned], []])
    assert banned not in recs.item_ids[0]
    cands = ["i1_0", "i1_1"]
    recs = model.recommend([u], k=5, candidates=cands, exclude_seen=False)
    got = [i for i in recs.item_ids[0] if i is not None]
    assert set(got) == set(cands)
    assert recs.item_ids[0, 2] is None and recs.scores[0, 2] == -np.inf  # padded
    with pytest.raises(UnknownIdError, match="no-such-product"):
        model.recommend([u], k=3, candidates=["no-such-product"])
    with pytest.raises(ConfigError):
        model.recommend([u], k=0)


def test_unknown_users_get_popularity(fitted):
    name, model, answer = fitted
    known_user = next(iter(answer))
    recs = model.recommend(["ghost", known_user], k=4)
    assert recs.known.tolist() == [False, True]
    order = np.argsort(-model.popularity, kind="stable")[:4]
    assert list(recs.item_idx[0]) == list(order)


def test_save_load_equality_without_training_data(fitted, tmp_path):
    name, model, answer = fitted
    path = model.save(tmp_path / name)
    assert sorted(p.name for p in path.iterdir()) == ["arrays.safetensors", "model.json"]
    meta = json.loads((path / "model.json").read_text())
    assert meta["model"] == name and meta["item_ids"] == list(model.items.ids)
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    users = list(answer)
    idx = model.users.index(users)
    np.testing.assert_array_equal(loaded.score_users(idx), model.score_users(idx))
    a, b = model.recommend(users, k=5), loaded.recommend(users, k=5)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert loaded.item_info.titles[0] == model.item_info.titles[0]


def test_determinism_under_seed(fitted):
    name, model, answer = fitted
    again, _ = fit(name, seed=0)
    idx = np.arange(model.n_users)
    np.testing.assert_array_equal(again.score_users(idx), model.score_users(idx))


def test_corrupt_or_missing_model_files(fitted, tmp_path):
    name, model, _ = fitted
    path = model.save(tmp_path / "m")
    (path / "arrays.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match="arrays.safetensors"):
        load_model(path)
    path = model.save(tmp_path / "m2")
    (path / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="model.json"):
        load_model(path)
    with pytest.raises(ModelFileError, match="no such model directory"):
        load_model(tmp_path / "missing")


def test_unfitted_model_refuses():
    model = get_model_class("ease")()
    with pytest.raises(ConfigError, match="not fitted"):
        model.recommend(["a"], k=1)


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown parameter"):
        get_model_class("ease")(lamda=3)
    with pytest.raises(ConfigError, match="must be an integer"):
        get_model_class("itemknn")(neighbors=2.5)


def test_forget_users_erases_the_customer(fitted, tmp_path):
    name, model, answer = fitted
    model.save(tmp_path / "m")
    m = load_model(tmp_path / "m")  # the fixture's model is shared: erase from a copy
    users = list(answer)
    gone, others = users[:2], users[2:]
    before = m.recommend(others, k=5)
    gone_idx = m.users.index(gone)
    assert m.forget_users([*gone, "nobody"]) == 2
    assert m.forget_users(gone) == 0  # idempotent: they are unknown now
    m.save(tmp_path / "m")
    meta = (tmp_path / "m" / "model.json").read_text()
    assert not any(f'"{u}"' in meta for u in gone)
    loaded = load_model(tmp_path / "m")
    assert not loaded.recommend(gone, k=5).known.any()
    assert loaded.seen[gone_idx].nnz == 0
    # Per-customer arrays hold nothing of them any more.
    for key, arr in loaded._state().items():
        if arr.ndim and arr.shape[0] == loaded.n_users:
            assert not np.any(arr[gone_idx]), f"{name}: {key} keeps rows of erased customers"
        if key.endswith("indptr") and arr.shape == (loaded.n_users + 1,):
            assert not np.any(np.diff(arr)[gone_idx]), f"{name}: {key} keeps rows of erased customers"
    # Everyone else gets exactly what they got before.
    after = loaded.recommend(others, k=5)
    np.testing.assert_array_equal(after.item_ids, before.item_ids)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5)


def _same_lists(fast, slow) -> None:
    assert fast.item_ids.tolist() == slow.item_ids.tolist()
    assert fast.item_idx.tolist() == slow.item_idx.tolist()
    assert fast.known.tolist() == slow.known.tolist()
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-6, atol=1e-6)


TOP_K_CASES = {
    "default": dict(k=5),
    "with_seen": dict(k=12, exclude_seen=False),
    "per_user_exclude": dict(k=4, exclude="per-user"),
    "flat_exclude_and_candidates": dict(k=3, exclude=["i0_1", "i1_2", "nope"], candidates=["i0_1", "i0_3", "i1_0",
                                                                                             "i1_4", "i1_5"]),
    "long_k": dict(k=30),
}


@pytest.mark.parametrize("case", list(TOP_K_CASES))
@pytest.mark.parametrize("block", [1 << 22, 1])
def test_top_k_gives_the_lists_of_recommend(fitted, case, block, monkeypatch):
    """The batch path (blocked, float32, per-model fast paths) equals ``recommend`` for every model."""
    import retailgan.models.base as base

    name, model, answer = fitted
    monkeypatch.setattr(base, "SCORE_BLOCK_ELEMENTS", block)  # 1: one row per block
    users = [*list(answer)[::3], "ghost", list(answer)[1]]
    kwargs = dict(TOP_K_CASES[case])
    if kwargs.get("exclude") == "per-user":
        kwargs["exclude"] = [[answer[u]] if u in answer and i % 2 else ["i0_0"] for i, u in enumerate(users)]
    _same_lists(model.top_k(users, **kwargs), model.recommend(users, **kwargs))


@pytest.mark.skipif(not __import__("retailgan.index.topk", fromlist=["x"]).faiss_available(), reason="faiss absent")
def test_featgan_top_k_through_its_faiss_index_equals_recommend():
    ds, answer = oracle_dataset()
    model = get_model_class("featgan")(**{**FAST_CONFIGS["featgan"], "index": "hnsw", "epochs": 3})
    model.fit(ds, TrainingOptions(seed=0))
    users = [*answer, "ghost"]
    for kwargs in (dict(k=4), dict(k=3, exclude_seen=False, exclude=["i0_1"]), dict(k=2, candidates=["i1_0", "i1_3"])):
        _same_lists(model.top_k(users, **kwargs), model.recommend(users, **kwargs))
