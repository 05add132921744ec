"""The three evaluations of the ``cold-items`` protocol (:mod:`retailgan.data.splits`).

Each view ranks all of its candidate products (full ranking, the customer's training products
excluded) and compares the list with the customer's held-out purchases among those candidates:

* ``cold``: candidates = the new products of the part (warm products masked); targets = their
  held-out interactions;
* ``warm``: candidates = the products with training interactions; targets = their held-out
  interactions;
* ``hybrid``: candidates = both together; targets = all held-out interactions of the part.

A model scores new products through its ordinary ``score_users``: the split keeps them in the
vocabulary (with no training interaction), so a content-based model gives them scores from their
catalogue record, as ``recommend`` does for products without sales.

Ties are broken in a seeded random order of the products, not by product index: every new product
has the same popularity (none), and the index order of a vocabulary built from a log carries
information (when a product first appeared), which would reward a model for giving up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.data.splits import Split
from retailgan.errors import ConfigError
from retailgan.evaluation.protocols import EvaluationResult, evaluate

VIEWS = ("cold", "warm", "hybrid")


def view_parts(split: Split, part: str = "test") -> dict[str, tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]]:
    """view -> (training matrix, held-out matrix restricted to the view, candidate item indices),
    for ``part`` "test" (models fitted on ``split.train``) or "validation" (on ``train_inner``)."""
    if split.cold_test_items is None or split.cold_validation_items is None:
        raise ConfigError(f"the {split.protocol} split has no new products; use --protocol cold-items")
    if part == "test":
        train, held, cold = split.train.matrix(), split.test.matrix(), split.cold_test_items
    elif part == "validation":
        train, held, cold = split.train_inner.matrix(), split.validation.matrix(), split.cold_validation_items
    else:
        raise ConfigError(f"part must be 'test' or 'validation', got {part!r}")
    n_items = train.shape[1]
    warm = np.flatnonzero(np.diff(train.tocsc().indptr) > 0)
    hybrid = np.union1d(warm, cold)
    out = {}
    for view, items in (("cold", cold), ("warm", warm), ("hybrid", hybrid)):
        keep = np.zeros(n_items, np.float32)
        keep[items] = 1.0
        restricted = sp.csr_matrix(held @ sp.diags(keep))
        restricted.eliminate_zeros()
        out[view] = (train, restricted, np.asarray(items, np.int64))
    return out


def _masked_scores(model: Any, train: sp.csr_matrix, allowed: np.ndarray, order: np.ndarray):
    """``model.score_users`` with non-candidates at -inf, columns in ``order``; customers without
    training interactions get the model's fallback ranking (popularity), as in :func:`evaluate`."""
    n_items = train.shape[1]
    banned = np.ones(n_items, bool)
    banned[allowed] = False
    no_history = np.diff(train.indptr) == 0
    fallback = getattr(model, "fallback_scores", None)

    def score(users: np.ndarray) -> np.ndarray:
        s = np.array(model.score_users(users), dtype=np.float64)
        if fallback is not None and no_history[users].any():
            s[no_history[users]] = fallback()
        s[:, banned] = -np.inf
        return s[:, order]

    return score


def evaluate_views(
    model: Any, split: Split, ks: Sequence[int] = (20,), *, part: str = "test", views: Sequence[str] = VIEWS
) -> dict[str, EvaluationResult]:
    """Full-ranking evaluation of a fitted ``model`` in each view (module docstring)."""
    out = {}
    for view, (train, held, allowed) in view_parts(split, part).items():
        if view in views:
            order = np.random.default_rng(split.seed).permutation(train.shape[1])
            out[view] = evaluate(
                None, train[:, order], held[:, order], ks=ks,
                scores_fn=_masked_scores(model, train, allowed, order), prefetch=False,
            )
    return out
