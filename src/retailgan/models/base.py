"""The recommender protocol every model follows, and the trainer loop iterative models share.

A model is configured by a frozen, typed config (hyperparameters only) and fitted with
:class:`TrainingOptions` (seed, device, progress, validation data, checkpoints). Everything is
batch-first and users x items:

* ``score_users(user_idx) -> (len(user_idx), n_items)`` dense scores, the one method evaluation
  needs;
* ``recommend(user_ids, k, exclude_seen=..., exclude=..., candidates=...)`` for raw ids.

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
    """Show a progress bar over epochs."""
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
    """Intra-op threads for torch during training (default 1: the small dense ops of these models
    gain little from more, and spinning OpenMP threads collapse throughput on a busy machine)."""


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
        if exclude_seen and known.any():
            seen = self.seen[uidx[known]]
            rows = np.repeat(np.flatnonzero(known), np.diff(seen.indptr))
            scores[rows, seen.indices] = -np.inf
        if exclude is not None and len(exclude) > 0:
            if all(isinstance(e, list | tuple | np.ndarray) for e in exclude):
                if len(exclude) != n:
                    raise ConfigError(f"per-user exclude has {len(exclude)} lists for {n} users")
                for r, ex in enumerate(exclude):
                    idx = self.items.index(ex, missing="negative")  # type: ignore[arg-type]
                    scores[r, idx[idx >= 0]] = -np.inf
            else:
                idx = self.items.index(exclude, missing="negative")
                scores[:, idx[idx >= 0]] = -np.inf
        if candidates is not None:
            cidx = self.items.index(candidates, kind="candidate item")
            allowed = np.zeros(m, dtype=bool)
            allowed[cidx] = True
            scores[:, ~allowed] = -np.inf
        kk = min(k, m)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < m else np.tile(np.arange(m), (n, 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        # Sort by score descending, ties by item index (deterministic).
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        if kk < k:
            top = np.pad(top, ((0, 0), (0, k - kk)), constant_values=-1)
            top_scores = np.pad(top_scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
        valid = np.isfinite(top_scores)
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
    progress bar, validation-based early stopping (restoring the best epoch) and checkpoints.
    Their config must have ``epochs``, ``patience`` and ``eval_every`` fields.
    """

    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        with torch_threads(options.num_threads or 1):
            self._train_loop(dataset, options)

    def _train_loop(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg = self.config
        epochs: int = cfg.epochs  # type: ignore[attr-defined]
        patience: int = cfg.patience  # type: ignore[attr-defined]
        eval_every: int = cfg.eval_every  # type: ignore[attr-defined]
        self.init_training(dataset, options)
        self.history = []
        best_value, best_state, best_epoch = -math.inf, None, -1
        validation = options.validation
        if validation is not None and (validation.users != dataset.users or validation.items != dataset.items):
            raise ConfigError("the validation data must share the training data's vocabularies")
        from retailgan import distributed

        main_process = distributed.rank() == 0
        bar = None
        if options.progress and main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, desc=f"fit {self.name}", unit="epoch", leave=False)
        bad_epochs = 0
        val_users = (
            validation_sample(self.seen, validation.matrix(), options.validation_users, options.seed)
            if validation is not None and len(validation)
            else None
        )
        for epoch in range(1, epochs + 1):
            logged = dict(self.train_epoch(epoch))
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
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in logged.items() if k != "epoch"})
                bar.update(1)
            if validation is not None and bad_epochs >= patience:
                log.info("%s: early stop at epoch %d (best %d)", self.name, epoch, best_epoch)
                break
        if bar is not None:
            bar.close()
        if best_state is not None:
            self._load_state(best_state)
        self.best_epoch = best_epoch if best_state is not None else len(self.history)
        self.finish_training()

    def validation_score(
        self, validation: InteractionDataset, metric: str, users: np.ndarray | None = None
    ) -> float:
        """Mean ``metric`` over ``users`` (default: every validation user), scored in blocks."""
        from retailgan.evaluation.protocols import evaluate

        name, _, k = metric.partition("@")
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

    @abstractmethod
    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        """Set up parameters and optimisers (seeded from ``options.seed``)."""

    @abstractmethod
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data; returns values to log (losses)."""

    def finish_training(self) -> None:
        """Release training-only state (optimisers, samplers)."""
