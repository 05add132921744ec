"""``FeatureGAN``: the modules of this package put together, new products, and model files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.features.space import FeatureSpace
from retailgan.models.base import IterativeRecommender
from retailgan.models.catalogue import extend_catalogue, new_products
from retailgan.models.gan.featgan.config import FeatureGANConfig
from retailgan.models.gan.featgan.networks import Nets
from retailgan.models.gan.featgan.priors import PriorsMixin
from retailgan.models.gan.featgan.scoring import ScoringMixin
from retailgan.models.gan.featgan.slates import SlatesMixin
from retailgan.models.gan.featgan.training import TrainingMixin
from retailgan.models.gan.state import load_module_arrays
from retailgan.persistence import check_indices, check_nonnegative, check_offsets, take


class FeatureGAN(SlatesMixin, ScoringMixin, PriorsMixin, TrainingMixin, IterativeRecommender):
    """Feature-space conditional GAN recommender (see :mod:`retailgan.models.gan.featgan`)."""

    name = "featgan"
    config_class = FeatureGANConfig
    supports_distributed = True

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "emb_dim": trial.suggest_categorical("emb_dim", [32, 64, 128]),
            "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
            "temperature": trial.suggest_float("temperature", 0.03, 0.3, log=True),
            "lr_g": trial.suggest_float("lr_g", 3e-4, 3e-3, log=True),
            "adv_weight": trial.suggest_float("adv_weight", 0.01, 1.0, log=True),
            "w_collab": trial.suggest_float("w_collab", 0.5, 2.0),
            "recent": trial.suggest_int("recent", 1, 20, log=True),
            "collab_dim": trial.suggest_categorical("collab_dim", [32, 64, 128]),
            "targets": trial.suggest_categorical("targets", ["next", "held-out"]),
        }

    @property
    def _cfg(self) -> FeatureGANConfig:
        return self.config  # type: ignore[return-value]

    # -- new products ---------------------------------------------------------------------------

    def add_products(
        self,
        item_ids: Sequence[object],
        titles: Sequence[object],
        categories: Sequence[object] | None = None,
        prices: Sequence[float | None] | None = None,
    ) -> None:
        """Add products to the catalogue without retraining: their features come from their
        records (collaborative block imputed from text), and they are recommendable at once."""
        new = new_products(self, item_ids, titles, categories, prices)
        assert self.space is not None and self.X is not None
        n = len(new.ids)
        feats = self.space.transform(new.titles, new.categories, new.prices)
        self.X = np.concatenate([self.X, feats]).astype(np.float32)
        extend_catalogue(self, new)
        if self._prior_counts is not None:
            self._prior_counts = np.concatenate([self._prior_counts, np.zeros(n)])
        if self._recent is not None and self._cold_items is not None:
            self._recent = np.concatenate([self._recent, np.zeros(n)])
            self._cold_items = np.concatenate([self._cold_items, np.ones(n, bool)])
        if self._prior_sales is not None:
            self._prior_sales = sp.csr_matrix(
                (self._prior_sales.data, self._prior_sales.indices, self._prior_sales.indptr),
                shape=(self._prior_sales.shape[0], len(self.X)),
            )
        self._invalidate()

    # -- persistence ----------------------------------------------------------------------------

    def _extra_meta(self) -> dict[str, Any]:
        assert self.space is not None
        return {"feature_space": self.space.meta()}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._space_meta = extra.get("feature_space")

    def _forget_rows(self, user_idx: np.ndarray) -> None:
        # The ordered purchase histories the generator is conditioned on: drop these customers' rows.
        lengths = np.diff(self._hist_indptr)
        drop = np.zeros(len(lengths), dtype=bool)
        drop[user_idx] = True
        self._hist_items = self._hist_items[~np.repeat(drop, lengths)]
        lengths[drop] = 0
        self._hist_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._invalidate()

    def _state(self) -> dict[str, np.ndarray]:
        assert self.nets is not None and self.X is not None and self.space is not None
        state = {f"nets.{k}": v.detach().cpu().numpy().copy() for k, v in self.nets.state_dict().items()}
        state.update(self.space.arrays("features"))
        state["X"] = self.X.copy()
        state["hist.indptr"] = self._hist_indptr.copy()
        state["hist.items"] = self._hist_items.copy()
        if self._cfg.trend_days:
            assert self._recent is not None
            assert self._cold_items is not None
            state["trend.recent"] = self._recent.copy()
            state["trend.cold"] = self._cold_items.astype(np.uint8)
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        cfg = self._cfg
        cfg.validate()
        meta = getattr(self, "_space_meta", None)
        if meta is not None:  # loading from files; during training the fitted space is kept
            self.space = FeatureSpace.restore(meta, arrays, "features")
        self.X = take(arrays, "X", np.float32, (self.n_items, None))
        # Time-ordered histories: offsets and product indices checked like any sparse matrix.
        self._hist_indptr = take(arrays, "hist.indptr", np.int64, (self.n_users + 1,))
        self._hist_items = take(arrays, "hist.items", np.int64, (None,))
        check_offsets(self._hist_indptr, "hist.indptr", len(self._hist_items))
        check_indices(self._hist_items, "hist.items", self.n_items)
        if cfg.trend_days:
            self._recent = take(arrays, "trend.recent", np.float64, (self.n_items,))
            check_nonnegative(self._recent, "trend.recent")
            self._cold_items = take(arrays, "trend.cold", np.uint8, (self.n_items,)).astype(bool)
        nets = load_module_arrays(Nets(self.X.shape[1], cfg), arrays, "nets", "featgan")
        nets.eval()
        self.nets = nets
        self._invalidate()
