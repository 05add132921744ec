"""Any recommender plus what is selling now: ``score + weight * log(1 + r_i)``.

``r_i`` is the number of customers whose first purchase of product ``i`` falls in the last
``trend_days`` calendar days (UTC) of the training data, the same count featgan's ``trend_days``
learns from and :meth:`retailgan.data.store.Store.recent_buyers` reads from a store. On a seasonal
log this is the strongest simple signal measured (docs/benchmarks-featgan.md, section 1: EASE
plus the sales of the last 7 days is level with featgan's learned trend-following), so it is a
deployable model of its own: ``retailgan train --model recent --params '{"base": "ease",
"base_params": {"l2": 490}, "trend_days": 7, "weight": 0.3}'``. The base model is fitted on the
same data and saved inside the model directory; :meth:`RecentSalesBlend.set_recent_sales`
replaces the counts without refitting (the service and campaign builds do it from the store).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.data.dataset import InteractionDataset, Vocabulary
from retailgan.errors import ConfigError, ModelFileError
from retailgan.models.base import ModelConfig, Recommender, TrainingOptions
from retailgan.persistence import check_nonnegative, take

BASE_PREFIX = "base."


@dataclass(frozen=True)
class RecentSalesConfig(ModelConfig):
    base: str = "ease"
    """The registered model whose scores are blended."""
    base_params: dict[str, Any] = field(default_factory=dict)
    """Its parameters."""
    trend_days: int = 7
    """Window of the recent sales, in calendar days."""
    weight: float = 0.3
    """Weight of ``log(1 + recent sales)``, in the base model's score units."""

    def validate(self) -> None:
        self.require(
            "recent",
            [
                (self.base != "recent", "base must be another model"),
                (isinstance(self.base_params, dict), "base_params must be a JSON object"),
                (self.trend_days >= 1, "trend_days >= 1"),
                (np.isfinite(self.weight) and self.weight >= 0, "weight must be finite and >= 0"),
            ],
        )


def item_counts(
    items: Vocabulary, item_ids: Sequence[object], counts: Sequence[float] | np.ndarray, what: str
) -> np.ndarray:
    """A full per-product vector from counts of some products (others 0), checked: one finite
    count >= 0 per known, distinct id (errors name ``what``)."""
    counts = np.asarray(counts, np.float64)
    if counts.shape != (len(item_ids),):
        raise ConfigError(f"{what}: {len(item_ids)} ids but counts of shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ConfigError(f"{what}: counts must be finite and >= 0")
    idx = items.index(item_ids, kind="item")
    if len(np.unique(idx)) != len(idx):
        raise ConfigError(f"{what}: repeated product ids")
    full = np.zeros(len(items), np.float64)
    full[idx] = counts
    return full


def recent_buyers(dataset: InteractionDataset, days: int) -> np.ndarray:
    """Per product, the pairs whose (first) time falls in the last ``days`` calendar days (UTC)."""
    day = dataset.timestamp.astype(np.int64) // 86400
    keep = day > day.max() - days
    return np.bincount(dataset.item_idx[keep], minlength=dataset.n_items).astype(np.float64)


class RecentSalesBlend(Recommender):
    """A base recommender's scores plus ``weight * log(1 + recent sales)`` (module docstring)."""

    name = "recent"
    config_class = RecentSalesConfig

    base_model: Recommender | None = None
    _recent: np.ndarray | None = None

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        # The base model and its parameters are given (``--params``); the window and the weight
        # are searched (the weight in the base's score units, hence the wide log range).
        return {
            "trend_days": trial.suggest_categorical("trend_days", [3, 7, 14, 28]),
            "weight": trial.suggest_float("weight", 1e-3, 3.0, log=True),
        }

    @property
    def _cfg(self) -> RecentSalesConfig:
        assert isinstance(self.config, RecentSalesConfig)
        return self.config

    def _base(self) -> Recommender:
        from retailgan.models.registry import get_model_class

        cfg = self._cfg
        cfg.validate()
        return get_model_class(cfg.base)(**cfg.base_params)

    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        self.base_model = self._base().fit(dataset, options)
        self.history = self.base_model.history
        self._recent = recent_buyers(dataset, self._cfg.trend_days)

    def _bonus(self) -> np.ndarray:
        assert self._recent is not None
        return (self._cfg.weight * np.log1p(self._recent)).astype(np.float32)

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        assert self.base_model is not None
        return self.base_model.score_users(user_idx) + self._bonus()

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        assert self.base_model is not None
        return self.base_model.score_histories(history) + self._bonus()

    def fallback_scores(self) -> np.ndarray:
        assert self.base_model is not None
        return self.base_model.fallback_scores()

    def _forget_rows(self, user_idx: np.ndarray) -> None:
        assert self.base_model is not None
        self.base_model.seen = self.seen
        self.base_model._forget_rows(user_idx)

    def forget_users(self, user_ids: Sequence[object]) -> int:
        n = super().forget_users(user_ids)
        assert self.base_model is not None
        self.base_model.users = self.users  # the base shares the wrapper's vocabulary
        return n

    def set_recent_sales(self, item_ids: Sequence[object], counts: Sequence[float] | np.ndarray) -> None:
        """Replace the recent sales (customers per product; products not listed count 0)."""
        self._check_fitted()
        assert self.items is not None
        self._recent = item_counts(self.items, item_ids, counts, "set_recent_sales")

    # -- persistence ----------------------------------------------------------------------------

    def _extra_meta(self) -> dict[str, Any]:
        assert self.base_model is not None
        inner = self.base_model._extra_meta() if hasattr(self.base_model, "_extra_meta") else {}
        return {"base": inner}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._base_extra = extra.get("base", {})

    def _state(self) -> dict[str, np.ndarray]:
        assert self.base_model is not None and self._recent is not None
        state = {BASE_PREFIX + k: v for k, v in self.base_model._state().items()}
        state["recent"] = self._recent.copy()
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        base = self._base()
        # The base model shares the wrapper's vocabularies, catalogue, history and popularity.
        base.users, base.items, base.item_info = self.users, self.items, self.item_info
        base.seen, base.popularity, base.fit_seconds = self.seen, self.popularity, self.fit_seconds
        if hasattr(base, "_load_extra_meta"):
            base._load_extra_meta(getattr(self, "_base_extra", {}))
        try:
            base._load_state({k[len(BASE_PREFIX) :]: v for k, v in arrays.items() if k.startswith(BASE_PREFIX)})
        except ModelFileError as exc:  # name the array as it is in the file
            raise ModelFileError(f"{BASE_PREFIX}{exc}") from None
        self._recent = take(arrays, "recent", np.float64, (self.n_items,))
        check_nonnegative(self._recent, "recent")
        self.base_model = base
