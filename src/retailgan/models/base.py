"""The recommender protocol every model follows, and the trainer loop iterative models share.

A model is configured by a frozen, typed config (hyperparameters only) and fitted with
:class:`TrainingOptions` (seed, device, progress, validation data, checkpoints). Everything is
batch-first and users x items:

* ``score_users(user_idx) -> (len(user_idx), n_items)`` dense scores, the one method evaluation
  needs;
* ``recommend(user_ids, k, exclude_seen=..., exclude=..., candidates=...)`` for raw ids;
* ``top_k(...)``, same arguments and lists, for batches of any size: no dense float64 (users x
  items) matrix, row blocks of bounded size; a model with a faster path than scoring every item
  (a retrieval index) overrides ``_top_k_known``.

Lists are ordered by score, ties by item index (also at the k-th place: :func:`select_top_k`).

Users unknown to the model, and known users without any training interaction, get the popularity
ranking (flagged ``known=False``), in ``recommend`` and in evaluation alike: a model can only
personalise for users it has seen buy (fold-in of ad-hoc histories is offered by models that support
``score_histories``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from retailgan import progress
from retailgan.data.dataset import InteractionDataset, ItemInfo, Vocabulary
from retailgan.errors import ConfigError

FORGOTTEN_PREFIX = "forgotten:"
"""Customer ids erased with :meth:`Recommender.forget_users` become this plus random hex."""


def clear_rows(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``m`` with these rows emptied (same shape; no stored zeros)."""
    keep = np.ones(m.shape[0], dtype=m.dtype)
    keep[rows] = 0
    out = sp.csr_matrix(sp.diags(keep) @ m)
    out.eliminate_zeros()
    return out

log = logging.getLogger(__name__)


SCORE_BLOCK_ELEMENTS = 1 << 22
"""(user, item) scores :meth:`Recommender.top_k` holds at once (16 MiB as float32)."""


def _row_blocks(n_rows: int, n_items: int) -> Iterator[tuple[int, int]]:
    """[a, b) row ranges of at most :data:`SCORE_BLOCK_ELEMENTS` scores (at least one row)."""
    step = max(1, SCORE_BLOCK_ELEMENTS // max(n_items, 1))
    for a in range(0, n_rows, step):
        yield a, min(a + step, n_rows)


def mask_scores(scores: np.ndarray, banned: sp.csr_matrix, allowed: np.ndarray | None) -> np.ndarray:
    """``scores`` (modified in place) with banned (row, item) pairs and items outside
    ``allowed`` (None: all allowed) set to -inf."""
    if banned.nnz:
        scores[np.repeat(np.arange(banned.shape[0]), np.diff(banned.indptr)), banned.indices] = -np.inf
    if allowed is not None:
        keep = np.zeros(scores.shape[1], dtype=bool)
        keep[allowed] = True
        scores[:, ~keep] = -np.inf
    return scores


def select_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) indices and scores of each row's k best, best first, ties by lower index, also at
    the k-th place; padded with -1 / -inf (and -inf scores count as missing)."""
    n, m = scores.shape
    kk = min(k, m)
    if m >= SAMPLE_STRIDE * 4 * kk:
        found = _candidates(scores, kk)
        if found is not None:
            values, cols = found
            return _finish_top_k(scores, np.take_along_axis(cols, _partition_top(values, kk), axis=1), k)
    return _finish_top_k(scores, _partition_top(scores, kk), k)


def _partition_top(scores: np.ndarray, kk: int) -> np.ndarray:
    """(n, kk) indices of each row's kk best (unordered), ties at the kk-th place by lower index."""
    n, m = scores.shape
    if kk >= m:
        return np.tile(np.arange(m), (n, 1))
    top = np.argpartition(scores, m - kk, axis=1)[:, m - kk :]
    kth = np.take_along_axis(scores, top, axis=1).min(axis=1, keepdims=True)
    # argpartition picks arbitrary members of a tie at the k-th place: take the lowest indices.
    over = np.flatnonzero(np.count_nonzero(scores >= kth, axis=1) > kk)
    if len(over):
        sub, t = scores[over], kth[over]
        above, tied = sub > t, sub == t
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= kk - above.sum(axis=1, keepdims=True)))
        top[over] = np.nonzero(chosen)[1].reshape(len(over), kk)
    return top


SAMPLE_STRIDE = 16
"""Every SAMPLE_STRIDE-th column gives each row a threshold that its k best scores pass."""


def _candidates(scores: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray] | None:
    """For wide rows: the scores that can be among a row's kk best, as (n, c) values (-inf
    padded) and their columns (ascending in a row). The kk-th best score of a column sample is a
    lower bound of the row's kk-th best, so only about SAMPLE_STRIDE x kk scores a row pass it.
    None when far more pass (heavy ties), for the plain partition."""
    n, m = scores.shape
    sample = scores[:, ::SAMPLE_STRIDE]
    thr = np.partition(sample, sample.shape[1] - kk, axis=1)[:, sample.shape[1] - kk]
    # Compare into a row width padded to 8 bytes: nonzero() then scans 8 columns per uint64 word.
    passed = np.zeros((n, m + (-m) % 8), dtype=bool)
    np.greater_equal(scores, thr[:, None], out=passed[:, :m])
    words_r, words_c = np.nonzero(passed.view(np.uint64))
    rows = np.repeat(words_r, 8)
    cols = (words_c[:, None] * 8 + np.arange(8)).ravel()
    keep = passed[rows, cols]
    rows, cols = rows[keep], cols[keep]  # row-major: columns ascending within a row
    counts = np.bincount(rows, minlength=n)
    width = int(counts.max()) if n else 0
    if width > max(64 * kk, m // 8):
        return None
    pos = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    values = np.full((n, width), -np.inf, dtype=scores.dtype)
    out_cols = np.full((n, width), m, dtype=np.int64)  # pads sort after every real column
    values[rows, pos] = scores[rows, cols]
    out_cols[rows, pos] = cols
    return values, out_cols


def _finish_top_k(scores: np.ndarray, top: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort the chosen ``top`` indices by score then index; pad to k; -1 / -inf where missing."""
    kk = top.shape[1]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    if kk < k:
        top = np.pad(top, ((0, 0), (0, k - kk)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    valid = np.isfinite(top_scores)
    return np.where(valid, top, -1), np.where(valid, top_scores, -np.inf)



@dataclass(frozen=True)
class ModelConfig:
    """Base of the typed per-model hyperparameter configs (frozen dataclasses)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown parameter(s) {unknown}; known: {sorted(names)}")
        typed: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values:
                continue
            v = values[f.name]
            default = getattr(cls, f.name, None)
            # JSON and Optuna give floats for ints and vice versa; coerce to the field's type.
            if isinstance(default, bool):
                typed[f.name] = bool(v)
            elif isinstance(default, int) and not isinstance(v, bool):
                if float(v) != int(float(v)):
                    raise ConfigError(f"{cls.__name__}.{f.name} must be an integer, got {v!r}")
                typed[f.name] = int(v)
            elif isinstance(default, float):
                typed[f.name] = float(v)
            else:
                typed[f.name] = v
        return cls(**typed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def require(model: str, checks: Sequence[tuple[bool, str]]) -> None:
        """Raise :class:`ConfigError` ("<model>: <message>") for the first failed (ok, message) check."""
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{model}: {message}")


ProgressFn = Callable[[int, dict[str, float]], None]


@dataclass
class TrainingOptions:
    """How to train, as opposed to what to train (the config)."""

    seed: int = 0
    device: str = "cpu"
    progress: bool = False
    """Report every epoch on stderr even when :func:`retailgan.progress.enable` was not called."""
    callback: ProgressFn | None = None
    """Called after every epoch with (epoch, logged values)."""
    validation: InteractionDataset | None = None
    """Held-out pairs for early stopping (iterative models); never the test set."""
    validation_metric: str = "ndcg@20"
    validation_users: int = 2000
    """Early stopping scores at most this many validation customers, a sample drawn once from
    ``seed`` and reused every epoch (0: all of them). 2,000 users put the standard error of a
    mean NDCG@20 near 0.005, and epochs are compared on the same users (paired), so the noise
    in their difference is smaller still; the cost per check is then independent of the customer
    count."""
    checkpoint_dir: Path | None = None
    """Where the best model so far is saved during training (optional)."""
    num_threads: int | None = None
    """Intra-op threads for torch and numpy's BLAS during training (default 1: the small dense ops
    of these models gain little from more, and spinning OpenMP threads collapse throughput on a
    busy machine)."""


@dataclass(frozen=True)
class Recommendations:
    """Top-k lists for a batch of users: ``item_ids`` and ``scores`` are (n_users, k).

    Lists shorter than k (too few candidates) are padded with ``None`` ids and ``-inf`` scores.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    scores: np.ndarray
    known: np.ndarray
    item_idx: np.ndarray = field(repr=False)

    def to_lists(self) -> list[list[tuple[str, float]]]:
        out = []
        for ids, sc in zip(self.item_ids, self.scores, strict=True):
            out.append([(str(i), float(s)) for i, s in zip(ids, sc, strict=True) if i is not None])
        return out


class Recommender(ABC):
    """Base class of every recommender."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    supports_distributed: ClassVar[bool] = False
    """Trains data-parallel under torch.distributed (see :mod:`retailgan.distributed`)."""

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise ConfigError("give either a config object or keyword parameters, not both")
        if config is None:
            config = self.config_class.from_dict(params)
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.config = config
        self.users: Vocabulary | None = None
        self.items: Vocabulary | None = None
        self.item_info: ItemInfo | None = None
        self.seen: sp.csr_matrix | None = None
        self.popularity: np.ndarray | None = None
        self.fit_seconds: float = 0.0
        self.history: list[dict[str, float]] = []

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Hyperparameters to tune with Optuna (``trial.suggest_*``); empty: nothing to tune."""
        return {}

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, dataset: InteractionDataset, options: TrainingOptions | None = None) -> Recommender:
        """Fit on ``dataset`` (its vocabularies become the model's)."""
        options = options or TrainingOptions()
        if len(dataset) == 0:
            raise ConfigError("cannot fit on an empty dataset")
        self.users, self.items, self.item_info = dataset.users, dataset.items, dataset.item_info
        self.seen = dataset.matrix()
        self.popularity = dataset.item_popularity().astype(np.float32)
        start = time.perf_counter()
        self._fit(dataset, options)
        self.fit_seconds = time.perf_counter() - start
        return self

    @abstractmethod
    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        """Model-specific fitting (vocabularies, ``seen`` and ``popularity`` are already set)."""

    # -- scoring ------------------------------------------------------------------------------

    @abstractmethod
    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense scores (len(user_idx), n_items) for known user indices."""

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores for ad-hoc histories (rows of a users x items matrix) without retraining.

        Models whose scores are a function of the history alone (item-item models) override this.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot score ad-hoc histories")

    def _check_fitted(self) -> None:
        if self.items is None or self.users is None or self.seen is None:
            raise ConfigError(f"{type(self).__name__} is not fitted")

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.items)  # type: ignore[arg-type]

    @property
    def n_users(self) -> int:
        self._check_fitted()
        return len(self.users)  # type: ignore[arg-type]

    def recommend(
        self,
        user_ids: Sequence[object],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Sequence[object] | Sequence[Sequence[object]] | None = None,
        candidates: Sequence[object] | None = None,
    ) -> Recommendations:
        """Top-``k`` items for each raw user id.

        ``exclude``: item ids never to recommend, for every user (a flat list) or per user (a list
        of lists, one per user). Unknown ids there are ignored (they cannot be recommended anyway).
        ``candidates``: restrict recommendations to these items; an unknown candidate id is an
        error. Unknown users, and users without training interactions, get the popularity ranking
        with ``known=False``.
        """
        self._check_fitted()
        assert self.users is not None and self.items is not None and self.seen is not None
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        user_ids = [str(u) for u in user_ids]
        uidx = self.users.index(user_ids, missing="negative")
        known = uidx >= 0
        # A user in the vocabulary with no training interaction has nothing to personalise from.
        known[known] = np.diff(self.seen.indptr)[uidx[known]] > 0
        n, m = len(user_ids), self.n_items
        scores = np.empty((n, m), dtype=np.float64)
        if known.any():
            s = np.asarray(self.score_users(uidx[known]), dtype=np.float64)
            if s.shape != (int(known.sum()), m):
                raise AssertionError(f"{type(self).__name__}.score_users returned {s.shape}")
            scores[known] = s
        if (~known).any():
            scores[~known] = self.fallback_scores()
        banned = self._exclusions(uidx, known, exclude_seen, exclude)
        allowed = None if candidates is None else self.items.index(candidates, kind="candidate item")
        mask_scores(scores, banned, allowed)
        top, top_scores = select_top_k(scores, k)
        return self._package(user_ids, top, top_scores, known)

    def _package(self, user_ids: list[str], top: np.ndarray, top_scores: np.ndarray,
                 known: np.ndarray) -> Recommendations:
        """Recommendations from (n, k) item indices and scores (-1 / -inf where a list is short)."""
        assert self.items is not None
        valid = np.isfinite(top_scores) & (top >= 0)
        top = np.where(valid, top, -1)
        ids = np.full(top.shape, None, dtype=object)
        ids[valid] = self.items.decode(top[valid])
        return Recommendations(
            user_ids=np.asarray(user_ids, dtype=object),
            item_ids=ids,
            scores=np.where(valid, top_scores, -np.inf).astype(np.float32),
            known=known,
            item_idx=top,
        )

    def top_k(
        self,
        user_ids: Sequence[object],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Sequence[object] | Sequence[Sequence[object]] | None = None,
        candidates: Sequence[object] | None = None,
    ) -> Recommendations:
        """The lists of :meth:`recommend` (same items, same order; scores equal up to float32
        rounding) without its dense float64 (users x items) matrix: the batch path.

        Exclusions become a sparse (users x items) mask; known users are ranked by
        :meth:`_top_k_known`, which scores at most :data:`SCORE_BLOCK_ELEMENTS` (user, item) pairs
        at once in the generic path (row blocks of ``score_users``, kept in its float32) and which
        models with a retrieval index override.
        """
        self._check_fitted()
        assert self.users is not None and self.items is not None and self.seen is not None
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        user_ids = [str(u) for u in user_ids]
        n, m = len(user_ids), self.n_items
        uidx = self.users.index(user_ids, missing="negative")
        known = uidx >= 0
        known[known] = np.diff(self.seen.indptr)[uidx[known]] > 0
        banned = self._exclusions(uidx, known, exclude_seen, exclude)
        allowed = None if candidates is None else np.unique(self.items.index(candidates, kind="candidate item"))
        top = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float64)
        rows = np.flatnonzero(known)
        if len(rows):
            top[rows], scores[rows] = self._top_k_known(uidx[rows], k, banned[rows], allowed)
        rows = np.flatnonzero(~known)
        if len(rows):
            fallback = self.fallback_scores()
            for a, b in _row_blocks(len(rows), m):
                block = np.tile(fallback, (b - a, 1))
                top[rows[a:b]], scores[rows[a:b]] = select_top_k(mask_scores(block, banned[rows[a:b]], allowed), k)
        return self._package(user_ids, top, scores, known)

    def _exclusions(
        self, uidx: np.ndarray, known: np.ndarray, exclude_seen: bool,
        exclude: Sequence[object] | Sequence[Sequence[object]] | None,
    ) -> sp.csr_matrix:
        """(users x items) boolean CSR of what each row must not get, as :meth:`recommend` bans it."""
        assert self.items is not None and self.seen is not None
        n, m = len(uidx), self.n_items
        rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        if exclude_seen and known.any():
            seen = self.seen[uidx[known]]
            rows.append(np.repeat(np.flatnonzero(known), np.diff(seen.indptr)))
            cols.append(seen.indices)
        if exclude is not None and len(exclude) > 0:
            if all(isinstance(e, list | tuple | np.ndarray) for e in exclude):
                if len(exclude) != n:
                    raise ConfigError(f"per-user exclude has {len(exclude)} lists for {n} users")
                idx = [self.items.index(ex, missing="negative") for ex in exclude]  # type: ignore[arg-type]
                idx = [i[i >= 0] for i in idx]
                rows.append(np.repeat(np.arange(n), [len(i) for i in idx]))
                cols.extend(idx)
            else:
                i = self.items.index(exclude, missing="negative")
                i = i[i >= 0]
                rows.append(np.repeat(np.arange(n), len(i)))
                cols.append(np.tile(i, n))
        r, c = np.concatenate(rows), np.concatenate(cols)
        out = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n, m))
        out.sum_duplicates()
        return out

    def _top_k_known(
        self, user_idx: np.ndarray, k: int, banned: sp.csr_matrix, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) item indices and scores of :meth:`top_k` for users with a history; ``banned``:
        their (n x items) exclusion rows, ``allowed``: the candidate item indices (None: all).

        Generic path: :meth:`score_users` in row blocks of at most :data:`SCORE_BLOCK_ELEMENTS`
        scores, masked, then :func:`select_top_k`. For factor models that block is one float32
        GEMM, for item-item models one sparse history x W product.
        """
        top = np.full((len(user_idx), k), -1, np.int64)
        scores = np.full((len(user_idx), k), -np.inf, np.float64)
        for a, b in _row_blocks(len(user_idx), self.n_items):
            s = np.array(self.score_users(user_idx[a:b]), copy=True)
            if s.shape != (b - a, self.n_items):
                raise AssertionError(f"{type(self).__name__}.score_users returned {s.shape}")
            top[a:b], scores[a:b] = select_top_k(mask_scores(s, banned[a:b], allowed), k)
        return top, scores

    def use_index(self, kind: str, **params: Any) -> None:
        """Rank :meth:`top_k` (plain lists over the whole catalogue) through a product index of
        ``kind`` (:data:`retailgan.index.topk.KINDS`; ``params`` go to it): "exact" restores the
        exact path, "ivf" and "hnsw" are approximate (faiss). Models with a retrieval space
        override this; the others raise :class:`ConfigError`."""
        if kind != "exact":
            raise ConfigError(f"{self.name}: no approximate index (index={kind!r}); the models with one are "
                              "ials, bpr and featgan")

    def fallback_scores(self) -> np.ndarray:
        """Scores for users the model cannot personalise for: item popularity (ties by index)."""
        assert self.popularity is not None
        return self.popularity.astype(np.float64)

    # -- erasure (retailgan.forget) --------------------------------------------------------------

    def forget_users(self, user_ids: Sequence[object]) -> int:
        """Erase these customers from the fitted model; returns how many it knew.

        Their history rows are emptied, their per-customer parameters blanked
        (:meth:`_forget_rows`) and their ids replaced by random tombstones (shapes are unchanged),
        so the model neither holds nor recognises them: they get the popularity ranking, like a
        new customer. Parameters shared by all customers (item-item weights, item factors,
        networks, popularity) keep what they learned from their data until the next retraining.
        """
        self._check_fitted()
        assert self.users is not None and self.seen is not None
        idx = self.users.index([str(u) for u in user_ids], missing="negative")
        idx = np.unique(idx[idx >= 0])
        if not len(idx):
            return 0
        self.seen = clear_rows(self.seen, idx)
        self._forget_rows(idx)
        ids = self.users.ids.copy()
        ids[idx] = [f"{FORGOTTEN_PREFIX}{secrets.token_hex(8)}" for _ in idx]
        self.users = Vocabulary(ids)
        return len(idx)

    def _forget_rows(self, user_idx: np.ndarray) -> None:
        """Blank the per-customer state of these user indices (``seen`` is already cleared).
        Models holding per-customer arrays (factors, histories) override this."""

    # -- persistence --------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save (numeric numpy arrays only)."""
        return {}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore learned arrays saved by :meth:`_state`."""

    def save(self, path: str | Path) -> Path:
        from retailgan.persistence import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        from retailgan.persistence import load_model

        model = load_model(path)
        if not isinstance(model, cls):
            raise ConfigError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Set torch's intra-op thread count for a block, restoring it afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(int(n), 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


VALIDATION_BLOCK_SCORES = 1 << 24
"""Scores per block when validating (users per block = this // n_items, at most 1024)."""


def validation_sample(train: sp.csr_matrix, validation: sp.csr_matrix, cap: int, seed: int) -> np.ndarray | None:
    """The validation users early stopping scores: at most ``cap`` of those with a held-out item
    not already in ``train``, drawn without replacement from ``seed`` (sorted); ``None`` (all)
    when they number ``cap`` or fewer, or ``cap`` is 0."""
    relevant = validation - validation.multiply(train.astype(bool))
    relevant = sp.csr_matrix(relevant)
    relevant.eliminate_zeros()
    candidates = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if cap <= 0 or len(candidates) <= cap:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=cap, replace=False)).astype(np.int64)


class _SampledRows:
    """A model seen through a subset of its users: row ``r`` is user ``users[r]``."""

    def __init__(self, model: Recommender, users: np.ndarray) -> None:
        self.model, self.users = model, users
        self.fallback_scores = model.fallback_scores

    def score_users(self, rows: np.ndarray) -> np.ndarray:
        return self.model.score_users(self.users[rows])


class IterativeRecommender(Recommender):
    """A model trained in epochs by the shared trainer loop.

    Subclasses implement :meth:`init_training` and :meth:`train_epoch`; the loop provides the
    progress lines, validation-based early stopping (restoring the best epoch) and checkpoints.
    Their config must have ``epochs``, ``patience`` and ``eval_every`` fields.
    """

    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        from threadpoolctl import threadpool_limits

        # numpy / scipy BLAS too (feature spaces' SVDs, validation scoring): an OpenBLAS pool of
        # every core spins as OpenMP does, and on a busy 2-core machine ran a QR 30x slower.
        n = options.num_threads or 1
        with torch_threads(n), threadpool_limits(n, user_api="blas"):
            self._train_loop(dataset, options)

    def _train_loop(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        epochs: int = self.config.epochs  # type: ignore[attr-defined]
        self.init_training(dataset, options)
        self.history = []
        validation = options.validation
        if validation is not None and (validation.users != dataset.users or validation.items != dataset.items):
            raise ConfigError("the validation data must share the training data's vocabularies")
        from retailgan import distributed

        main_process = distributed.rank() == 0
        with progress.steps(
            f"fit {self.name}", epochs, "epoch", every_s=5.0, upper_bound=validation is not None,
            enabled=(True if options.progress else None) if main_process else False,
        ) as steps:
            self._epochs(options, steps)
        self.finish_training()

    def _epochs(self, options: TrainingOptions, steps: progress.Steps) -> None:
        """The epochs of :meth:`_train_loop`: train, validate, stop early, restore the best."""
        from retailgan import distributed

        cfg = self.config
        epochs: int = cfg.epochs  # type: ignore[attr-defined]
        patience: int = cfg.patience  # type: ignore[attr-defined]
        eval_every: int = cfg.eval_every  # type: ignore[attr-defined]
        validation = options.validation
        main_process = distributed.rank() == 0
        best_value, best_state, best_epoch = -math.inf, None, -1
        bad_epochs = 0
        val_users = (
            validation_sample(self.seen, validation.matrix(), options.validation_users, options.seed)
            if validation is not None and len(validation)
            else None
        )
        for epoch in range(1, epochs + 1):
            logged = dict(self.train_epoch(epoch))
            self._items_cache = None  # the item side of the top_k path, rebuilt from the new weights
            logged["epoch"] = epoch
            if validation is not None and len(validation) and (epoch % eval_every == 0 or epoch == epochs):
                # Rank 0 scores and broadcasts, so every process takes the same early-stopping path.
                value = (
                    self.validation_score(validation, options.validation_metric, users=val_users)
                    if main_process
                    else 0.0
                )
                value = distributed.broadcast_float(value)
                logged[f"val_{options.validation_metric}"] = value
                if value > best_value:
                    best_value, best_epoch, bad_epochs = value, epoch, 0
                    best_state = copy.deepcopy(self._state())
                    if options.checkpoint_dir is not None and main_process:
                        self.save(options.checkpoint_dir)
                else:
                    bad_epochs += 1
            self.history.append(logged)
            if options.callback is not None:
                options.callback(epoch, logged)
            score = logged.get(f"val_{options.validation_metric}")
            steps.done(epoch, "" if score is None else f"validation {options.validation_metric} {score:.4f}")
            if validation is not None and bad_epochs >= patience:
                log.info("%s: early stop at epoch %d (best %d)", self.name, epoch, best_epoch)
                steps.stop(epoch, f"early stop (best epoch {best_epoch})")
                break
        if best_state is not None:
            self._load_state(best_state)
        self.best_epoch = best_epoch if best_state is not None else len(self.history)

    exact_top_k: ClassVar[bool] = False
    """:meth:`top_k` is exact and cheaper than dense scores (a fast path): early stopping ranks
    with it instead of scoring every item."""

    def validation_score(
        self, validation: InteractionDataset, metric: str, users: np.ndarray | None = None
    ) -> float:
        """Mean ``metric`` over ``users`` (default: every validation user), scored in blocks."""
        from retailgan.evaluation.metrics import RANK_METRICS
        from retailgan.evaluation.protocols import evaluate

        name, _, k = metric.partition("@")
        if self.exact_top_k and name in RANK_METRICS:
            return self._validation_by_top_k(validation, name, int(k or 20), users)
        # Blocks of ~16M scores (128 MiB of float64) whatever the catalogue size.
        batch = int(min(1024, max(1, VALIDATION_BLOCK_SCORES // max(self.n_items, 1))))
        assert self.seen is not None and self.popularity is not None
        train, held_out, scorer = self.seen, validation.matrix(), self
        if users is not None:
            # Only the sampled rows: no per-check work grows with the whole log.
            train, held_out, scorer = train[users], held_out[users], _SampledRows(self, users)
        result = evaluate(
            scorer, train, held_out, ks=(int(k or 20),), batch_size=batch, item_popularity=self.popularity
        )
        return float(result.summary()[f"{name}@{int(k or 20)}"])

    def _validation_by_top_k(self, validation: InteractionDataset, name: str, k: int,
                             users: np.ndarray | None) -> float:
        """:meth:`validation_score` through :meth:`top_k`: the lists ``evaluate`` ranks (training
        items excluded, ties by index, popularity for customers without a history), not a dense
        (users x items) matrix."""
        from retailgan.evaluation.metrics import rank_metrics

        assert self.seen is not None and self.users is not None
        held_out = validation.matrix()
        relevant = sp.csr_matrix(held_out - held_out.multiply(self.seen.astype(bool)))
        relevant.eliminate_zeros()
        rows = np.flatnonzero(np.diff(relevant.indptr) > 0) if users is None else np.asarray(users, np.int64)
        rows = rows[np.diff(relevant.indptr)[rows] > 0]
        if not len(rows):
            return float("nan")
        values = []
        for a in range(0, len(rows), 2000):
            r = rows[a : a + 2000]
            top = self.top_k(self.users.ids[r].tolist(), k).item_idx
            values.append(rank_metrics(top, relevant[r], (k,))[f"{name}@{k}"])
        v = np.concatenate(values)
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else float("nan")

    @abstractmethod
    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        """Set up parameters and optimisers (seeded from ``options.seed``)."""

    @abstractmethod
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data; returns values to log (losses)."""

    def finish_training(self) -> None:
        """Release training-only state (optimisers, samplers)."""
