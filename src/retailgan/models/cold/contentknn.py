"""Content-kNN: a product's score is its largest content cosine to the customer's history.

The reference every cold-start method must beat: no learning beyond the content space of
:func:`retailgan.models.cold.common.content_features` (TF-IDF + SVD of titles, category, price
band), so new products are scored exactly like known ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retailgan.data.dataset import InteractionDataset
from retailgan.models.base import ModelConfig, Recommender, TrainingOptions
from retailgan.models.cold.common import NewProductsMixin, content_features
from retailgan.persistence import take


@dataclass(frozen=True)
class ContentKNNConfig(ModelConfig):
    text_dim: int = 64

    def check(self) -> None:
        self.require("contentknn", [(self.text_dim >= 1, "text_dim >= 1")])


class ContentKNN(NewProductsMixin, Recommender):
    """Max content cosine to the history (module docstring); ties broken by popularity."""

    name = "contentknn"
    config_class = ContentKNNConfig

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"text_dim": trial.suggest_categorical("text_dim", [16, 32, 64, 128])}

    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg: ContentKNNConfig = self.config  # type: ignore[assignment]
        cfg.check()
        self.space, X = content_features(dataset, cfg.text_dim, options.seed)
        self.X = _unit_rows(X[:, :-1])  # the constant adds nothing to a cosine

    def _add_content(self, content: np.ndarray) -> None:
        self.X = np.concatenate([self.X, _unit_rows(content)]).astype(np.float32)

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        assert self.seen is not None and self.popularity is not None
        hist = self.seen[np.asarray(user_idx, dtype=np.int64)]
        out = np.zeros((len(user_idx), self.n_items), np.float32)
        sims = self.X[hist.indices] @ self.X.T if hist.nnz else np.zeros((0, self.n_items), np.float32)
        for r in range(len(user_idx)):
            a, b = hist.indptr[r], hist.indptr[r + 1]
            if b > a:
                out[r] = sims[a:b].max(axis=0)
        # A small popularity term orders products of equal content (an empty title ties with all).
        return out + (1e-4 * np.log1p(self.popularity) / np.log1p(max(self.popularity.max(), 1.0)))[None, :]

    def _state(self) -> dict[str, np.ndarray]:
        return {"X": np.asarray(self.X, np.float32), **self._space_arrays()}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.X = take(arrays, "X", np.float32, (self.n_items, None))
        self._restore_space(arrays, self.X.shape[1])


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0).astype(np.float32)
