"""Leak-free train / validation / test splits, all seeded.

Every split returns four parts that share the dataset's vocabularies:

* ``train``: what the final model is fitted on;
* ``test``: held out, touched once, after hyperparameters are fixed;
* ``train_inner`` + ``validation``: ``train`` cut once more the same way, for tuning and early
  stopping. Nothing is ever tuned on ``test``.

Protocols:

* ``random``: per user, a random ``test_fraction`` of the user's items (users with >= 2 items keep
  at least one training item).
* ``temporal``: one global cut-off time; pairs first seen at or after it are test. Validation is
  the same cut applied to the training part. Test users without training history cannot be ranked
  by collaborative models and are left out of evaluation by the evaluator (it only scores users
  with training items); their count is reported.
* ``leave-last``: per user, the last ``n`` items in time are test, the ``n`` before validation.
* ``cfgan-paper``: random 80/20 per user, as in CFGAN's ML-100K experiments (all ratings
  positive). The published tables have no validation part; here tuning uses a random 20 % slice
  of each user's training part.
* ``cold-items``: the standard cold-start item protocol (DropoutNet, Heater, CLCRec, GAR): a
  seeded ``test_fraction`` of the products (default 20 %) is declared new and every interaction
  of theirs is held out; half of them are the validation products, half the test products. The
  other products' interactions are split at random 80 / 10 / 10 (``test_fraction / 2`` each for
  validation and test). ``train_inner`` holds no new product; ``train`` (= ``train_inner`` +
  ``validation``) holds the validation products but no test product.
  :mod:`retailgan.evaluation.cold` scores three views of it: cold-only, warm-only and hybrid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retailgan.data.dataset import InteractionDataset
from retailgan.errors import ConfigError

PROTOCOLS = ("random", "temporal", "leave-last", "cfgan-paper", "cold-items")


@dataclass(frozen=True)
class Split:
    """A leak-free split. ``train = train_inner + validation``; ``test`` is disjoint from it."""

    protocol: str
    seed: int
    train: InteractionDataset
    test: InteractionDataset
    train_inner: InteractionDataset
    validation: InteractionDataset
    cold_validation_items: np.ndarray | None = None
    """``cold-items``: indices of the new products held out for validation (else None)."""
    cold_test_items: np.ndarray | None = None
    """``cold-items``: indices of the new products held out for test (else None)."""

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {
            "protocol": self.protocol,
            "seed": self.seed,
            "train": self.train.stats(),
            "test": self.test.stats(),
            "train_inner": self.train_inner.stats(),
            "validation": self.validation.stats(),
        }
        if self.cold_test_items is not None and self.cold_validation_items is not None:
            out["cold_validation_items"] = len(self.cold_validation_items)
            out["cold_test_items"] = len(self.cold_test_items)
        return out


def split(
    dataset: InteractionDataset,
    protocol: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float | None = None,
    n_last: int = 1,
) -> Split:
    """Split ``dataset`` by ``protocol`` (see module docstring)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    val_fraction = test_fraction if validation_fraction is None else validation_fraction
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {val_fraction}")
    if n_last < 1:
        raise ConfigError(f"n_last must be >= 1, got {n_last}")
    rng = np.random.default_rng(seed)
    if protocol == "cold-items":
        return _cold_items(dataset, seed, test_fraction, rng)
    if protocol in ("random", "cfgan-paper"):
        frac = 0.2 if protocol == "cfgan-paper" else test_fraction
        vfrac = 0.2 if protocol == "cfgan-paper" and validation_fraction is None else val_fraction
        test_mask = _random_per_user(dataset, np.ones(len(dataset), bool), frac, rng)
        val_mask = _random_per_user(dataset, ~test_mask, vfrac, rng)
    elif protocol == "temporal":
        test_mask = _temporal(dataset, np.ones(len(dataset), bool), test_fraction)
        val_mask = _temporal(dataset, ~test_mask, val_fraction)
    else:
        test_mask = _last_n(dataset, np.ones(len(dataset), bool), n_last)
        val_mask = _last_n(dataset, ~test_mask, n_last)
    train_mask = ~test_mask
    inner_mask = train_mask & ~val_mask
    return Split(
        protocol=protocol,
        seed=seed,
        train=dataset.subset(train_mask),
        test=dataset.subset(test_mask),
        train_inner=dataset.subset(inner_mask),
        validation=dataset.subset(val_mask),
    )


def _random_per_user(ds: InteractionDataset, pool: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mask holding out round(fraction * n_u) random items of each user in ``pool``.

    Users with a single item in the pool keep it for training. Vectorised: a random key per pair,
    ranked within the user.
    """
    idx = np.flatnonzero(pool)
    users = ds.user_idx[idx]
    keys = rng.random(len(idx))
    order = np.lexsort((keys, users))
    sorted_users = users[order]
    counts = np.bincount(sorted_users, minlength=ds.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - starts[sorted_users]
    n_out = np.where(counts >= 2, np.clip(np.rint(counts * fraction), 1, counts - 1), 0)
    out = np.zeros(len(ds), dtype=bool)
    out[idx[order[rank < n_out[sorted_users]]]] = True
    return out


def _temporal(ds: InteractionDataset, pool: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the pairs in ``pool`` first seen at or after the global ``1 - fraction`` time quantile."""
    ts = ds.timestamp[pool]
    if len(ts) == 0:
        return np.zeros(len(ds), dtype=bool)
    cutoff = np.quantile(ts, 1.0 - fraction, method="higher")
    out = pool & (ds.timestamp >= cutoff)
    if out.sum() == pool.sum():  # every pair at the same time: nothing left to train on
        raise ConfigError("temporal split: all interactions share one timestamp; use --protocol random")
    return out


def _last_n(ds: InteractionDataset, pool: np.ndarray, n: int) -> np.ndarray:
    """Mask of each user's last ``n`` pairs in ``pool`` by time (users with <= n pairs keep all)."""
    idx = np.flatnonzero(pool)
    users = ds.user_idx[idx]
    # Latest first; ties in time broken by item index so the split is deterministic.
    order = np.lexsort((-ds.item_idx[idx].astype(np.int64), -ds.timestamp[idx], users))
    sorted_users = users[order]
    counts = np.bincount(sorted_users, minlength=ds.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - starts[sorted_users]
    take = (rank < n) & (counts[sorted_users] > n)
    out = np.zeros(len(ds), dtype=bool)
    out[idx[order[take]]] = True
    return out


def _cold_items(ds: InteractionDataset, seed: int, cold_fraction: float, rng: np.random.Generator) -> Split:
    """The ``cold-items`` split (module docstring): products new at random, warm pairs 80/10/10."""
    present = np.unique(ds.item_idx)
    n_cold = round(cold_fraction * len(present))
    if n_cold < 2 or n_cold >= len(present):
        raise ConfigError(
            f"cold-items split: {len(present)} products with interactions cannot give "
            f"{n_cold} new ones (need at least 2 new and 1 known product)"
        )
    cold = rng.permutation(present)[:n_cold]
    cold_val, cold_test = np.sort(cold[: n_cold // 2]), np.sort(cold[n_cold // 2 :])
    is_cold_val, is_cold_test = np.isin(ds.item_idx, cold_val), np.isin(ds.item_idx, cold_test)
    warm = np.flatnonzero(~(is_cold_val | is_cold_test))
    order = warm[rng.permutation(len(warm))]
    n_out = round(cold_fraction / 2 * len(warm))
    warm_test, warm_val = np.zeros(len(ds), bool), np.zeros(len(ds), bool)
    warm_test[order[:n_out]] = True
    warm_val[order[n_out : 2 * n_out]] = True
    test_mask = warm_test | is_cold_test
    val_mask = warm_val | is_cold_val
    return Split(
        protocol="cold-items",
        seed=seed,
        train=ds.subset(~test_mask),
        test=ds.subset(test_mask),
        train_inner=ds.subset(~test_mask & ~val_mask),
        validation=ds.subset(val_mask),
        cold_validation_items=cold_val.astype(np.int64),
        cold_test_items=cold_test.astype(np.int64),
    )
