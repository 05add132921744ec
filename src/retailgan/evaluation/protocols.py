"""Leak-free full-ranking evaluation protocol.

For every evaluated user the model scores **all** items, the user's training
items are removed from the candidates, and the top-``max(ks)`` list is compared
with the user's held-out test items. Work is done per batch of users with
numpy / sparse operations only (no per-user Python loops).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from retailgan.evaluation.metrics import (
    _ild_normalised,
    _normalise_features,
    novelty,
    rank_metrics,
    revenue,
    topk,
)

__all__ = ["EvaluationResult", "ScoringModel", "evaluate"]


class ScoringModel(Protocol):
    """What :func:`evaluate` needs from a recommender."""

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of ``user_idx`` (int64, shape ``(b,)``) for all items: ``(b, n_items)``."""
        ...


@dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate`.

    Attributes:
        user_idx: ``int64`` indices of the evaluated users, ascending; row ``j``
            of every per-user array refers to user ``user_idx[j]``.
        per_user: metric name -> ``float64`` array aligned with ``user_idx``
            (``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``mrr@k``,
            ``hitrate@k``, ``novelty@k``, and when their inputs are given
            ``revenue@k`` and ``ild@k``).
        aggregate: catalogue-level metrics (``coverage@k``).
        ks: the cut-offs.
        n_users: number of evaluated users.
        eval_seconds: wall-clock time of the evaluation (scoring included).
    """

    user_idx: np.ndarray
    per_user: dict[str, np.ndarray]
    aggregate: dict[str, float] = field(default_factory=dict)
    ks: tuple[int, ...] = ()
    n_users: int = 0
    eval_seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        """Mean of every per-user metric (``NaN`` entries, e.g. the ILD of a
        list with < 2 items, are ignored) plus the aggregate metrics."""
        out: dict[str, float] = {}
        for name, values in self.per_user.items():
            finite = values[~np.isnan(values)]
            out[name] = float(finite.mean()) if finite.size else float("nan")
        out.update(self.aggregate)
        return out


def _scored_batches(
    score: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray], prefetch: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(users, scores)`` per batch; with ``prefetch`` the next batch is
    scored in a single worker thread while the caller processes the current one."""
    if not prefetch or len(batches) < 2:
        for u in batches:
            yield u, np.asarray(score(u))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="retailgan-eval") as pool:
        future = pool.submit(score, batches[0])
        for i, u in enumerate(batches):
            scores = np.asarray(future.result())
            if i + 1 < len(batches):
                future = pool.submit(score, batches[i + 1])
            yield u, scores


def _as_csr(m: Any, name: str) -> sp.csr_matrix:
    if not sp.issparse(m):
        raise TypeError(f"{name} must be a scipy.sparse matrix (users x items), got {type(m)!r}")
    out = sp.csr_matrix(m, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def evaluate(
    model: ScoringModel | None,
    train: sp.spmatrix,
    test: sp.spmatrix,
    ks: Sequence[int] = (10, 20),
    *,
    users: np.ndarray | Sequence[int] | None = None,
    batch_size: int = 1024,
    item_prices: np.ndarray | None = None,
    item_features: np.ndarray | sp.spmatrix | None = None,
    item_popularity: np.ndarray | None = None,
    scores_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    remove_train_from_test: bool = True,
    prefetch: bool = True,
) -> EvaluationResult:
    """Full-ranking top-K evaluation of ``model`` on ``test``, excluding ``train`` items.

    Args:
        model: object with ``score_users(user_idx) -> (len(user_idx), n_items)``
            scores; pass ``None`` and give ``scores_fn`` instead to evaluate a
            plain callable with the same signature.
        train: ``(n_users, n_items)`` sparse training interactions; a user's
            non-zero training items are never recommended to that user.
        test: ``(n_users, n_items)`` sparse held-out interactions (relevance is
            binary: any non-zero entry is relevant).
        ks: cut-offs; lists of length ``max(ks)`` are produced.
        users: optional subset of user indices to evaluate. Only users with at
            least one relevant test item are evaluated (others are dropped
            silently, whether or not ``users`` is given).
        batch_size: users scored per call of the model.
        item_prices: ``(n_items,)`` unit prices -> adds ``revenue@k``.
        item_features: ``(n_items, d)`` dense or sparse -> adds ``ild@k``.
        item_popularity: ``(n_items,)`` counts for ``novelty@k``; default: the
            number of distinct training users per item (``n_users`` = rows of
            ``train``).
        scores_fn: alternative to ``model``.
        remove_train_from_test: if True (default), test items the user already
            has in ``train`` are not counted as relevant, since they can never
            be recommended (repeat purchases); this matters only when the split
            lets a (user, item) pair occur in both matrices.
        prefetch: if True (default), the next batch is scored in one background
            thread while the current batch is ranked, overlapping model compute
            with top-K/metrics. The model is still called sequentially, one
            batch at a time, in user order. Use False for models that must be
            called from the main thread.

    Returns:
        :class:`EvaluationResult`; results do not depend on ``batch_size``.
    """
    if (model is None) == (scores_fn is None):
        raise ValueError("give exactly one of model or scores_fn")
    score = scores_fn if scores_fn is not None else model.score_users  # type: ignore[union-attr]
    train_c = _as_csr(train, "train")
    test_c = _as_csr(test, "test")
    if train_c.shape != test_c.shape:
        raise ValueError(
            f"train has shape {train_c.shape} but test has shape {test_c.shape}; "
            "both must be (n_users, n_items) over the same users and items"
        )
    n_users, n_items = train_c.shape
    ks_t = tuple(sorted({int(k) for k in ks}))
    if not ks_t or ks_t[0] < 1:
        raise ValueError(f"ks must be non-empty positive integers, got {ks!r}")
    k_max = ks_t[-1]
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    batch_size = int(batch_size)

    if item_prices is not None:
        item_prices = np.asarray(item_prices, dtype=np.float64)
        if item_prices.shape != (n_items,):
            raise ValueError(f"item_prices must have shape ({n_items},), got {item_prices.shape}")
    features = _normalise_features(item_features) if item_features is not None else None
    if features is not None and features[0].shape[0] != n_items:
        raise ValueError(
            f"item_features must have {n_items} rows (items), got shape {features[0].shape}"
        )
    if item_popularity is None:
        item_popularity = np.diff(train_c.tocsc().indptr).astype(np.float64)
    else:
        item_popularity = np.asarray(item_popularity, dtype=np.float64)
        if item_popularity.shape != (n_items,):
            raise ValueError(
                f"item_popularity must have shape ({n_items},), got {item_popularity.shape}"
            )

    relevant = test_c
    if remove_train_from_test:
        relevant = test_c - test_c.multiply(train_c.astype(bool))
        relevant = sp.csr_matrix(relevant)
        relevant.eliminate_zeros()
    has_test = np.diff(relevant.indptr) > 0
    if users is None:
        user_idx = np.flatnonzero(has_test).astype(np.int64)
    else:
        u = np.unique(np.asarray(users, dtype=np.int64).ravel())
        if u.size and (u[0] < 0 or u[-1] >= n_users):
            raise ValueError(f"users must be in [0, {n_users}), got range [{u[0]}, {u[-1]}]")
        user_idx = u[has_test[u]]

    def batch_metrics(top: np.ndarray, rel_b: sp.csr_matrix) -> dict[str, np.ndarray]:
        out = rank_metrics(top, rel_b, ks_t)
        for k in ks_t:
            out[f"novelty@{k}"] = novelty(top, item_popularity, n_users, k)
            if item_prices is not None:
                out[f"revenue@{k}"] = revenue(top, rel_b, item_prices, k)
            if features is not None:
                out[f"ild@{k}"] = _ild_normalised(top, features[0], features[1], k)
        return out

    # Users without any training interaction get the model's fallback ranking (popularity), as
    # they do from ``Recommender.recommend``; a model's raw scores for an empty history are often
    # all equal, which would rank items in arbitrary (index) order.
    fallback = getattr(model, "fallback_scores", None) if model is not None else None
    cold_user = np.diff(train_c.indptr) == 0

    t0 = time.perf_counter()
    chunks: dict[str, list[np.ndarray]] = {}
    seen = np.zeros((len(ks_t), n_items), dtype=bool)
    batches = [user_idx[s : s + batch_size] for s in range(0, user_idx.size, batch_size)]
    for u, scores in _scored_batches(score, batches, prefetch):
        if scores.shape != (u.size, n_items):
            raise ValueError(
                f"scores for {u.size} users must have shape ({u.size}, {n_items}), "
                f"got {scores.shape}"
            )
        if fallback is not None and cold_user[u].any():
            scores = np.array(scores, dtype=np.float64)
            scores[cold_user[u]] = fallback()
        top, _ = topk(scores, k_max, exclude=train_c[u])
        del scores
        for j, k in enumerate(ks_t):
            tk = top[:, :k]
            seen[j, tk[tk >= 0]] = True
        for name, arr in batch_metrics(top, relevant[u]).items():
            chunks.setdefault(name, []).append(arr)
    if not chunks:  # nobody to evaluate: same keys, empty arrays
        empty = batch_metrics(np.empty((0, k_max), dtype=np.int64), relevant[:0])
        chunks = {name: [arr] for name, arr in empty.items()}
    per_user = {name: np.concatenate(parts) for name, parts in chunks.items()}
    elapsed = time.perf_counter() - t0

    aggregate = {
        f"coverage@{k}": float(seen[j].sum()) / n_items if n_items else 0.0
        for j, k in enumerate(ks_t)
    }
    return EvaluationResult(
        user_idx=user_idx,
        per_user=per_user,
        aggregate=aggregate,
        ks=ks_t,
        n_users=int(user_idx.size),
        eval_seconds=elapsed,
    )
