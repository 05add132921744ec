"""Splits: disjoint, complete, seeded, and shaped as each protocol promises."""

from __future__ import annotations

import numpy as np
import pytest

from retailgan.data.dataset import InteractionDataset
from retailgan.data.splits import PROTOCOLS, split
from retailgan.errors import ConfigError


def random_dataset(seed: int = 0, n_users: int = 60, n_items: int = 40, n: int = 900) -> InteractionDataset:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    t = rng.integers(0, 10_000, n)
    return InteractionDataset.from_arrays([f"u{x}" for x in u], [f"i{x}" for x in i], timestamps=t)


def pairs(ds: InteractionDataset) -> set[tuple[int, int]]:
    return set(zip(ds.user_idx.tolist(), ds.item_idx.tolist(), strict=True))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_parts_are_disjoint_and_complete(protocol):
    ds = random_dataset()
    s = split(ds, protocol, seed=3)
    assert not pairs(s.train) & pairs(s.test)
    assert pairs(s.train) | pairs(s.test) == pairs(ds)
    assert not pairs(s.train_inner) & pairs(s.validation)
    assert pairs(s.train_inner) | pairs(s.validation) == pairs(s.train)
    assert len(s.test) > 0 and len(s.validation) > 0
    for part in (s.train, s.test, s.train_inner, s.validation):
        assert part.users is ds.users and part.items is ds.items
        assert part.matrix().shape == (ds.n_users, ds.n_items)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_seeded(protocol):
    ds = random_dataset()
    a, b = split(ds, protocol, seed=7), split(ds, protocol, seed=7)
    assert pairs(a.test) == pairs(b.test) and pairs(a.validation) == pairs(b.validation)


def test_random_split_differs_by_seed_and_keeps_training_items():
    ds = random_dataset()
    a, b = split(ds, "random", seed=1), split(ds, "random", seed=2)
    assert pairs(a.test) != pairs(b.test)
    per_user = np.bincount(ds.user_idx, minlength=ds.n_users)
    train_per_user = np.bincount(a.train.user_idx, minlength=ds.n_users)
    assert np.all(train_per_user[per_user >= 1] >= 1)


def test_cfgan_paper_is_80_20_per_user():
    ds = random_dataset(n=3000)
    s = split(ds, "cfgan-paper", seed=0)
    n_u = np.bincount(ds.user_idx, minlength=ds.n_users)
    t_u = np.bincount(s.test.user_idx, minlength=ds.n_users)
    assert np.all(t_u == np.clip(np.rint(n_u * 0.2), 1, n_u - 1))


def test_temporal_split_is_a_cutoff_in_time():
    ds = random_dataset()
    s = split(ds, "temporal", seed=0)
    assert s.train.timestamp.max() < s.test.timestamp.min()
    assert s.train_inner.timestamp.max() < s.validation.timestamp.min()
    assert abs(len(s.test) / len(ds) - 0.2) < 0.05


def test_leave_last_holds_out_each_users_latest():
    ds = random_dataset()
    s = split(ds, "leave-last", seed=0, n_last=2)
    for u in np.unique(s.test.user_idx):
        test_t = s.test.timestamp[s.test.user_idx == u]
        train_t = s.train.timestamp[s.train.user_idx == u]
        assert len(test_t) == 2
        assert train_t.max() <= test_t.min()


def test_bad_arguments():
    ds = random_dataset()
    with pytest.raises(ConfigError, match="unknown protocol"):
        split(ds, "nope")
    with pytest.raises(ConfigError, match="test_fraction"):
        split(ds, "random", test_fraction=1.5)
    flat = InteractionDataset.from_arrays(["a", "b"], ["x", "y"], timestamps=[5, 5])
    with pytest.raises(ConfigError, match="share one timestamp"):
        split(flat, "temporal")


def test_cold_items_holds_out_every_pair_of_the_new_products():
    ds = random_dataset(n_items=50)
    s = split(ds, "cold-items", seed=4)
    present = np.unique(ds.item_idx)
    cv, ct = set(s.cold_validation_items.tolist()), set(s.cold_test_items.tolist())
    assert not cv & ct and len(cv) + len(ct) == round(0.2 * len(present)) and abs(len(cv) - len(ct)) <= 1
    inner_items = set(s.train_inner.item_idx.tolist())
    assert not inner_items & (cv | ct)  # the inner training part holds no new product
    assert not set(s.train.item_idx.tolist()) & ct  # the final training part no test product
    assert ct <= set(s.test.item_idx.tolist()) and cv <= set(s.validation.item_idx.tolist())
    on_cold = np.isin(ds.item_idx, list(cv | ct))
    assert len(s.test) + len(s.validation) - on_cold.sum() == pytest.approx(0.2 * (~on_cold).sum(), abs=2)
    again = split(ds, "cold-items", seed=4)
    assert np.array_equal(again.cold_test_items, s.cold_test_items)
    assert not np.array_equal(split(ds, "cold-items", seed=5).cold_test_items, s.cold_test_items)


def test_cold_items_needs_enough_products():
    ds = InteractionDataset.from_arrays(["a", "b"], ["x", "y"], timestamps=[0, 1])
    with pytest.raises(ConfigError, match="cold-items split"):
        split(ds, "cold-items")
