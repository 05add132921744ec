"""The cold-items views: candidates and targets of each, and a content model beating popularity on new products."""

from __future__ import annotations

import numpy as np
import pytest

from retailgan.data.dataset import InteractionDataset
from retailgan.data.splits import split
from retailgan.errors import ConfigError
from retailgan.evaluation.cold import evaluate_views, view_parts
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class


def grouped(seed: int = 0, n_users: int = 80, per_group: int = 15) -> InteractionDataset:
    """Two customer groups, each buying products of its own category, titled by group."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        g = u % 2
        for j in rng.choice(per_group, size=6, replace=False):
            users.append(f"u{u}")
            items.append(f"g{g}_{j}")
    info = {f"g{g}_{j}": {"title": f"{'red wool' if g else 'blue steel'} item {j}", "category": f"c{g}",
                          "price": 1.0 + g} for g in range(2) for j in range(per_group)}
    return InteractionDataset.from_arrays(users, items, timestamps=np.arange(len(users)), item_info=info)


def test_views_split_candidates_and_targets():
    s = split(grouped(), "cold-items", seed=1)
    parts = view_parts(s)
    cold, warm, hybrid = (parts[v][2] for v in ("cold", "warm", "hybrid"))
    assert set(cold.tolist()) == set(s.cold_test_items.tolist())
    assert not set(cold.tolist()) & set(warm.tolist())
    assert set(hybrid.tolist()) == set(cold.tolist()) | set(warm.tolist())
    assert set(parts["cold"][1].tocoo().col.tolist()) <= set(cold.tolist())
    assert parts["hybrid"][1].nnz == s.test.matrix().nnz
    assert parts["cold"][1].nnz + parts["warm"][1].nnz == parts["hybrid"][1].nnz
    val = view_parts(s, "validation")
    assert set(val["cold"][2].tolist()) == set(s.cold_validation_items.tolist())
    with pytest.raises(ConfigError, match="cold-items"):
        view_parts(split(grouped(), "random"))


def test_content_scores_new_products_popularity_cannot():
    s = split(grouped(), "cold-items", seed=1)
    pop = get_model_class("pop")().fit(s.train)
    knn = get_model_class("contentknn")(text_dim=8).fit(s.train, TrainingOptions(seed=0))
    r_pop, r_knn = evaluate_views(pop, s), evaluate_views(knn, s)
    assert r_knn["cold"].summary()["ndcg@20"] > r_pop["cold"].summary()["ndcg@20"] + 0.1
    # The same customers in every model's view: paired statistics apply.
    for v in ("cold", "warm", "hybrid"):
        assert np.array_equal(r_pop[v].user_idx, r_knn[v].user_idx)


def test_cold_start_model_scores_new_products_from_content():
    s = split(grouped(), "cold-items", seed=1)
    model = get_model_class("heater")(factors=8, bpr_epochs=20, bpr_lr=0.05, text_dim=8, hidden=16, out_dim=8,
                                      batch_size=64, epochs=5, lr=0.01)
    model.fit(s.train, TrainingOptions(seed=0))
    res = evaluate_views(model, s)
    assert res["cold"].summary()["ndcg@20"] > 0.3  # new products of the customer's own group come first
