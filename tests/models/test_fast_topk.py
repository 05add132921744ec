"""Batch top-k fast paths (retailgan.models.fast_topk) give the dense path's lists.

Factor models (ials, bpr with its bias) rank over norm-ordered item
prefixes with a bound; ItemKNN ranks sparse products. Every list must equal
``Recommender.recommend``'s (same items, same order, ties by item index), with exclusions and
candidate restrictions honoured, including on data where the prefixes settle most customers.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import retailgan.models.base as base
import retailgan.models.fast_topk as fast
from retailgan.data.dataset import InteractionDataset
from retailgan.models.base import TrainingOptions, select_top_k
from retailgan.models.registry import get_model_class


def _power_law_log(n_users: int = 300, n_items: int = 800, seed: int = 0) -> InteractionDataset:
    """Purchases with power-law item popularity and two taste groups (norms vary with popularity)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.1
    users, items = [], []
    for u in range(n_users):
        group = u % 2
        p = pop * np.where(np.arange(n_items) % 2 == group, 3.0, 1.0)
        bought = rng.choice(n_items, size=int(rng.integers(3, 25)), replace=False, p=p / p.sum())
        users += [f"u{u}"] * len(bought)
        items += [f"i{j}" for j in bought]
    return InteractionDataset.from_arrays(users, items, timestamps=np.arange(len(users)))


CONFIGS = {
    "ials": {"factors": 16, "regularization": 1.0, "alpha": 5.0, "epochs": 4},
    "bpr": {"factors": 8, "lr": 0.05, "epochs": 3, "batch_size": 256},
    "sansa": {"l2": 5.0, "neighbors": 20},
    "itemknn": {"neighbors": 30, "shrink": 1.0},
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    ds = _power_law_log()
    return get_model_class(request.param)(**CONFIGS[request.param]).fit(ds, TrainingOptions(seed=0))


def _same(fast_recs, dense_recs) -> None:
    assert fast_recs.item_idx.tolist() == dense_recs.item_idx.tolist()
    np.testing.assert_allclose(fast_recs.scores, dense_recs.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", [1 << 22, 700])
def test_model_top_k_equals_recommend(model, block, monkeypatch):
    monkeypatch.setattr(fast, "MIN_PREFIX", 8)  # prefixes of a small catalogue are tried too
    monkeypatch.setattr(base, "SCORE_BLOCK_ELEMENTS", block)
    users = [f"u{u}" for u in range(0, 300, 2)] + ["ghost"]
    rng = np.random.default_rng(1)
    per_user = [[f"i{j}" for j in rng.integers(0, 40, 5)] for _ in users]
    for kwargs in (
        dict(k=10),
        dict(k=7, exclude_seen=False),
        dict(k=5, exclude=per_user),
        dict(k=4, exclude=["i0", "i1", "nope"]),
        dict(k=6, candidates=list(model.items.ids[::7])),
        dict(k=3, candidates=list(model.items.ids[[3, -1]])),
    ):
        fast_recs = model.top_k(users, **kwargs)
        _same(fast_recs, model.recommend(users, **kwargs))
        if kwargs.get("exclude_seen", True):
            seen = model.seen[model.users.index(users[:-1])]
            for r in range(len(users) - 1):
                assert not set(fast_recs.item_idx[r]) & set(seen[r].indices)


def test_prefixes_settle_most_customers_on_power_law_norms(monkeypatch):
    """The bound actually skips work on norms that fall with popularity (and stays exact)."""
    rng = np.random.default_rng(0)
    m, f = 8192, 16
    V = (rng.standard_normal((m, f)) * (3.0 / np.arange(1, m + 1) ** 0.5)[:, None]).astype(np.float32)
    Q = (rng.standard_normal((500, f)) + 2 * V[:20].mean(0) / np.linalg.norm(V[:20].mean(0))).astype(np.float32)
    items = fast.FactorItems.build(V)
    banned = sp.random(500, m, density=0.002, format="csr", random_state=0)
    prefixes: list[int] = []
    partition_top = base._partition_top

    def spy(s, k):
        prefixes.append(s.shape[1])
        return partition_top(s, k)

    monkeypatch.setattr(base, "_partition_top", spy)
    monkeypatch.setattr(base, "select_top_k", lambda *a: pytest.fail("the whole catalogue was scored"))
    top, scores = fast.factor_top_k(Q, items, 10, banned, None)
    dense = Q @ V.T
    dense[banned.nonzero()] = -np.inf
    monkeypatch.undo()
    want, want_scores = select_top_k(dense, 10)
    assert top.tolist() == want.tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    assert prefixes[0] == m // 16  # the first prefix of at least MIN_PREFIX items
    assert max(prefixes) < m  # nobody needed the whole catalogue


@pytest.mark.parametrize("bias", [False, True])
def test_factor_top_k_ties_by_item_index(bias, monkeypatch):
    """Duplicated item vectors tie exactly: the lower item index wins, also at the k-th place."""
    monkeypatch.setattr(fast, "MIN_PREFIX", 4)
    rng = np.random.default_rng(3)
    base_v = rng.standard_normal((60, 4)).astype(np.float32) * np.linspace(3, 0.1, 60)[:, None].astype(np.float32)
    V = np.repeat(base_v, 5, axis=0)[rng.permutation(300)]
    b = np.repeat(rng.standard_normal(60).astype(np.float32), 5)[rng.permutation(300)] if bias else None
    Q = rng.standard_normal((40, 4)).astype(np.float32)
    banned = sp.random(40, 300, density=0.05, format="csr", random_state=1)
    top, _ = fast.factor_top_k(Q, fast.FactorItems.build(V, b), 7, banned, None)
    dense = Q @ V.T + (0 if b is None else b[None, :])
    dense[banned.nonzero()] = -np.inf
    assert top.tolist() == select_top_k(dense, 7)[0].tolist()


def test_sparse_item_rows_with_few_positive_scores_take_the_dense_path():
    history = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 1, 0]], np.float32))
    W = sp.csr_matrix(np.array([[0, 2, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1], [1, 0, 0, 0]], np.float32))
    asked: list[list[int]] = []

    def dense(rows):
        asked.append(rows.tolist())
        return np.full((len(rows), 2), -1), np.full((len(rows), 2), -np.inf)

    top, scores = fast.sparse_item_top_k(history, W, 2, sp.csr_matrix((2, 4)), None, dense)
    assert asked == [[0]]  # user 0 has one positive score (item 1), user 1 two
    assert top[1].tolist() == [3, 2] and scores[1].tolist() == [4.0, 1.0]


@pytest.mark.parametrize("name", ["ials", "bpr"])
def test_early_stopping_check_through_top_k_equals_evaluate(name, monkeypatch):
    """Validation ranks with the exact fast path; the metric equals the dense evaluate() one."""
    monkeypatch.setattr(fast, "MIN_PREFIX", 8)
    full = _power_law_log(seed=1)
    held = np.random.default_rng(0).random(len(full)) < 0.2
    ds, validation = full.subset(~held), full.subset(held)
    model = get_model_class(name)(**CONFIGS[name]).fit(ds, TrainingOptions(seed=0))
    for users in (None, np.arange(0, ds.n_users, 3)):
        for metric in ("ndcg@20", "recall@10"):
            fast_value = model.validation_score(validation, metric, users=users)
            with monkeypatch.context() as m:
                m.setattr(type(model), "exact_top_k", False)
                dense_value = model.validation_score(validation, metric, users=users)
            assert fast_value == pytest.approx(dense_value, rel=1e-9, abs=1e-12)


def test_early_stopping_history_is_the_same_through_top_k(monkeypatch):
    """Every epoch's check sees that epoch's weights (ials updates its factors in place)."""
    monkeypatch.setattr(fast, "MIN_PREFIX", 8)
    full = _power_law_log(n_users=1500, n_items=3000, seed=3)
    held = np.random.default_rng(1).random(len(full)) < 0.2
    ds, validation = full.subset(~held), full.subset(held)
    name, cfg = "ials", {**CONFIGS["ials"], "epochs": 4, "patience": 4}

    def history() -> list[float]:
        model = get_model_class(name)(**cfg).fit(ds, TrainingOptions(seed=0, validation=validation))
        return [h["val_ndcg@20"] for h in model.history]

    fast_history = history()
    monkeypatch.setattr(get_model_class(name), "exact_top_k", False)
    assert fast_history == pytest.approx(history(), rel=1e-9, abs=1e-12)


# -- approximate index for factor models (Recommender.use_index) ------------------------------------

@pytest.fixture(scope="module", params=["ials", "bpr"])
def factor_model(request):
    pytest.importorskip("faiss")
    return get_model_class(request.param)(**CONFIGS[request.param]).fit(_power_law_log(), TrainingOptions(seed=0))


def test_ivf_searching_every_cell_equals_the_exact_lists(factor_model):
    """nprobe = nlist is an exhaustive search: the exact lists, exclusions included."""
    users = [f"u{u}" for u in range(300)] + ["ghost"]
    rng = np.random.default_rng(2)
    exclude = [[f"i{j}" for j in rng.choice(800, int(rng.integers(0, 40)), replace=False)] for _ in users]
    factor_model.use_index("exact")
    exact = factor_model.top_k(users, 10, exclude=exclude)
    factor_model.use_index("ivf", nlist=8, nprobe=8)
    try:
        approx = factor_model.top_k(users, 10, exclude=exclude)
    finally:
        factor_model.use_index("exact")
    _same(approx, exact)


def test_a_coarse_index_never_returns_an_excluded_item_and_fills_the_list(factor_model):
    """Over-fetch and filter: seen and excluded products never appear, even for the customers
    with the most of them, and every list is full (the catalogue is larger than any exclusion)."""
    users = [f"u{u}" for u in range(300)]
    uidx = factor_model.users.index(users)
    heavy = {f"u{u}": [f"i{j}" for j in range(0, 600, 2)] for u in range(0, 300, 50)}  # 300 excluded
    exclude = [heavy.get(u, []) for u in users]
    factor_model.use_index("ivf", nlist=16, nprobe=2)
    try:
        recs = factor_model.top_k(users, 10, exclude=exclude)
    finally:
        factor_model.use_index("exact")
    for r, u in enumerate(users):
        got = recs.item_idx[r]
        assert (got >= 0).all(), u
        excluded = factor_model.items.index(exclude[r], missing="negative")
        banned = set(factor_model.seen[uidx[r]].indices.tolist()) | set(excluded.tolist())
        assert not banned & set(got.tolist()), u
        assert (np.diff(recs.scores[r]) <= 0).all()


def test_the_index_is_deterministic(factor_model):
    users = [f"u{u}" for u in range(300)]
    lists = []
    for _ in range(2):
        factor_model.use_index("ivf", nlist=16, nprobe=3)
        lists.append(factor_model.top_k(users, 10).item_idx)
    factor_model.use_index("exact")
    assert lists[0].tolist() == lists[1].tolist()


def test_models_without_a_retrieval_space_refuse_an_approximate_index():
    model = get_model_class("itemknn")(**CONFIGS["itemknn"]).fit(_power_law_log(), TrainingOptions(seed=0))
    model.use_index("exact")
    with pytest.raises(base.ConfigError, match="no approximate index"):
        model.use_index("ivf")
