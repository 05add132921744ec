"""What the cold-start recommenders share: the warm backbone, the content features, the base class.

* **Backbone**: BPR-MF (:class:`retailgan.models.baselines.BPR`), the pretrained preference model
  of DropoutNet, Heater and GAR's released code, fitted once on the training part and cached per
  (data, parameters, seed) within a process, so tuning trials and the four methods reuse one fit.
  Its item bias is folded into the vectors (``u' = [u, 1]``, ``v' = [v, b]``), so ``u'.v'`` is
  exactly its score.
* **Content**: the product feature space of :mod:`retailgan.features.space` without its
  collaborative block (TF-IDF + SVD of titles, category one-hot, price band), fitted on the
  products with training interactions, plus a constant column, so a product without any content
  still has an input.
* **Base class**: :class:`ColdStartRecommender` computes one vector per customer and one per
  product (new products from content) at the end of every epoch; scores are their inner products.
* **Products added after fitting** (:class:`NewProductsMixin`, the same ``add_products`` as
  featgan's): the fitted content space and the content networks are saved with the model, so a
  product first seen in the catalogue after training is embedded from its record, as the cold
  products of the training vocabulary are.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from retailgan.data.dataset import InteractionDataset
from retailgan.errors import ModelFileError
from retailgan.features.space import FeatureSpace, FeatureSpaceConfig
from retailgan.models.base import IterativeRecommender, ModelConfig, TrainingOptions
from retailgan.models.catalogue import extend_catalogue, new_products
from retailgan.models.gan.state import load_module_arrays, module_arrays
from retailgan.persistence import take


@dataclass(frozen=True)
class ColdConfig(ModelConfig):
    """Backbone, content and training settings every cold-start model has."""

    factors: int = 64
    """BPR-MF backbone: embedding size."""
    bpr_lr: float = 0.01
    bpr_reg: float = 1e-4
    bpr_epochs: int = 30
    text_dim: int = 64
    """Content: TF-IDF + SVD size of the titles."""
    hidden: int = 200
    lr: float = 1e-3
    batch_size: int = 1024
    epochs: int = 20
    patience: int = 3
    eval_every: int = 1
    cold_shift: float = 0.0
    """Added to the products without training interactions (new ones included) after each
    customer's scores are centred and divided by their standard deviation: in a list where new and
    established products compete, the new ones get a boost the training pairs do not teach. 0 (the
    default) leaves the scores as they are; choose it on validation
    (``benchmarks/cold_calibration.py --units z``, docs/benchmarks-cold.md)."""

    def check(self, model: str) -> None:
        self.require(model, [
            (self.factors >= 1 and self.bpr_epochs >= 1 and self.text_dim >= 1, "factors, bpr_epochs, text_dim >= 1"),
            (self.bpr_lr > 0 and self.lr > 0 and self.bpr_reg >= 0, "bpr_lr, lr > 0 and bpr_reg >= 0"),
            (self.hidden >= 1 and self.batch_size >= 1, "hidden and batch_size >= 1"),
            (math.isfinite(self.cold_shift), "cold_shift must be a finite number"),
        ])


_BACKBONES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_CACHE_SIZE = 4


def _fingerprint(dataset: InteractionDataset) -> str:
    h = hashlib.sha1()
    for a in (dataset.user_idx, dataset.item_idx):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(f"{dataset.n_users},{dataset.n_items}".encode())
    return h.hexdigest()


def backbone(dataset: InteractionDataset, cfg: ColdConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """BPR-MF user and item vectors with the item bias folded in: ``(users, f + 1)``, ``(items, f + 1)``."""
    from retailgan.models.baselines import BPR

    key = (_fingerprint(dataset), cfg.factors, cfg.bpr_lr, cfg.bpr_reg, cfg.bpr_epochs, seed)
    if key not in _BACKBONES:
        bpr = BPR(factors=cfg.factors, lr=cfg.bpr_lr, reg=cfg.bpr_reg, epochs=cfg.bpr_epochs)
        bpr.fit(dataset, TrainingOptions(seed=seed))
        U = np.hstack([bpr.user_factors, np.ones((dataset.n_users, 1), np.float32)])
        V = np.hstack([bpr.item_factors, bpr.item_bias[:, None]])
        while len(_BACKBONES) >= _CACHE_SIZE:
            _BACKBONES.pop(next(iter(_BACKBONES)))
        _BACKBONES[key] = (U.astype(np.float32), V.astype(np.float32))
    U, V = _BACKBONES[key]
    return U.copy(), V.copy()


def content_features(dataset: InteractionDataset, text_dim: int, seed: int) -> tuple[FeatureSpace, np.ndarray]:
    """The fitted content space and the ``(items, d + 1)`` content vectors (module docstring):
    text, category, price band, constant."""
    info = dataset.item_info
    space = FeatureSpace(FeatureSpaceConfig(text_dim=text_dim, collab_dim=0))
    X = space.fit(info.titles, info.categories, info.prices, dataset.matrix().T.tocsr(), seed=seed)
    return space, with_constant(X)


def with_constant(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((len(X), 1), np.float32)]).astype(np.float32)


class NewProductsMixin:
    """``add_products`` and the saved content space, for models that embed a product from content.

    A subclass sets ``self.space`` when fitting and implements :meth:`_add_content` (what it keeps
    per product, from the new products' content rows)."""

    space: FeatureSpace | None = None
    _space_meta: dict[str, Any] | None = None

    def _add_content(self, content: np.ndarray) -> None:
        """Extend the per-product arrays with products of these ``(n, d)`` content rows (no constant)."""
        raise NotImplementedError

    def add_products(
        self,
        item_ids: Sequence[object],
        titles: Sequence[object],
        categories: Sequence[object] | None = None,
        prices: Sequence[float | None] | None = None,
    ) -> None:
        """Add products to the catalogue without retraining: they are embedded from their records
        through the fitted content space and networks, and are recommendable at once."""
        new = new_products(self, item_ids, titles, categories, prices)
        if not new.ids:
            return
        assert self.space is not None
        # The content first: a record the space cannot embed leaves the catalogue unchanged.
        self._add_content(self.space.transform(new.titles, new.categories, new.prices).astype(np.float32))
        extend_catalogue(self, new)

    def _extra_meta(self) -> dict[str, Any]:
        assert self.space is not None
        return {"content_space": self.space.meta()}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._space_meta = extra.get("content_space")

    def _space_arrays(self) -> dict[str, np.ndarray]:
        assert self.space is not None
        return self.space.arrays("content")

    def _restore_space(self, arrays: dict[str, np.ndarray], dim: int | None = None) -> None:
        """Restore the saved content space and check that it embeds a record into ``dim`` values
        (the width of the model's content rows; default: the space's own); a damaged space is refused."""
        if self._space_meta is None:
            if self.space is not None:  # during training the fitted space is kept
                return
            raise ModelFileError("content_space: missing from model.json (needed to embed new products)")
        space = FeatureSpace.restore(self._space_meta, arrays, "content")
        edges = space.price_edges
        if edges.ndim != 1 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) < 0):
            raise ModelFileError("content.price_edges: not an increasing 1-d array")
        try:
            probe = space.transform(np.asarray(["probe"], object), np.asarray([None], object), np.asarray([1.0]))
        except Exception as exc:  # a damaged text basis fails in numpy / scipy
            raise ModelFileError(f"content space: arrays inconsistent ({type(exc).__name__}: {exc})") from None
        dim = space.dim if dim is None else dim
        if probe.shape != (1, dim) or not np.isfinite(probe).all():
            raise ModelFileError(f"content space: embeds a product into {probe.shape[1]} values, the model takes {dim}")
        self.space = space


def mlp(dims: list[int], act: type[torch.nn.Module] = torch.nn.Tanh, dropout: float = 0.0) -> torch.nn.Sequential:
    """Linear layers of sizes ``dims`` with ``act`` (and dropout) between them, none after the last."""
    layers: list[torch.nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(act())
            if dropout > 0:
                layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers)


class ColdStartRecommender(NewProductsMixin, IterativeRecommender):
    """Scores = customer vector . product vector, both recomputed after every epoch
    (:meth:`embed`); products without training interactions get theirs from content."""

    config_class: ClassVar[type[ModelConfig]] = ColdConfig
    user_emb: np.ndarray
    item_emb: np.ndarray

    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg: ColdConfig = self.config  # type: ignore[assignment]
        cfg.check(self.name)
        torch.manual_seed(options.seed)
        self._gen = torch.Generator().manual_seed(options.seed)
        self._rng = np.random.default_rng(options.seed)
        U, V = backbone(dataset, cfg, options.seed)
        self.space, X = content_features(dataset, cfg.text_dim, options.seed)
        self._warm_mask = np.diff(dataset.matrix().tocsc().indptr) > 0
        self._warm_items = torch.from_numpy(np.flatnonzero(self._warm_mask))
        self._is_warm = torch.from_numpy(self._warm_mask)
        self._U, self._V, self._X = torch.from_numpy(U), torch.from_numpy(V), torch.from_numpy(X)
        X_pairs = dataset.matrix()
        self._pos_u = torch.from_numpy(np.repeat(np.arange(X_pairs.shape[0]), np.diff(X_pairs.indptr)).astype(np.int64))
        self._pos_i = torch.from_numpy(X_pairs.indices.astype(np.int64))
        self.build(options)
        self._built = True
        self._sync()

    def build(self, options: TrainingOptions) -> None:
        """Create the networks and optimisers (``self._U``, ``_V``, ``_X`` are set)."""
        raise NotImplementedError

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Customer and product vectors for scoring (eval mode, no gradient)."""
        raise NotImplementedError

    def networks(self) -> list[torch.nn.Module]:
        """The networks (switched between train and eval mode around :meth:`embed`; saved)."""
        return []

    def content_vectors(self, X: torch.Tensor) -> torch.Tensor:
        """Product vectors of products known by their content rows ``X`` alone (with the constant),
        as :meth:`embed` computes them for the cold products of the training vocabulary."""
        raise NotImplementedError

    def _add_content(self, content: np.ndarray) -> None:
        for m in self.networks():
            m.eval()
        with torch.no_grad():
            new = self.content_vectors(torch.from_numpy(with_constant(content))).numpy().astype(np.float32)
        self.item_emb = np.concatenate([self.item_emb, new]).astype(np.float32)

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch of (user, positive item, uniform negative warm item) mini-batches."""
        cfg: ColdConfig = self.config  # type: ignore[assignment]
        n = len(self._pos_u)
        perm = torch.randperm(n, generator=self._gen)
        neg = self._warm_items[torch.randint(0, len(self._warm_items), (n,), generator=self._gen)]
        return [
            (self._pos_u[perm[s : s + cfg.batch_size]], self._pos_i[perm[s : s + cfg.batch_size]],
             neg[s : s + cfg.batch_size])
            for s in range(0, n, cfg.batch_size)
        ]

    def _sync(self) -> None:
        for m in self.networks():
            m.eval()
        with torch.no_grad():
            users, items = self.embed()
        for m in self.networks():
            m.train()
        self.user_emb = users.detach().numpy().astype(np.float32).copy()
        self.item_emb = items.detach().numpy().astype(np.float32).copy()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        logged = self.train_batches()
        self._sync()
        return logged

    def train_batches(self) -> dict[str, float]:
        """One pass over the training pairs; returns mean losses."""
        raise NotImplementedError

    def finish_training(self) -> None:
        self._U = self._V = self._X = None  # type: ignore[assignment]
        self._pos_u = self._pos_i = None  # type: ignore[assignment]

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        scores = self.user_emb[np.asarray(user_idx, dtype=np.int64)] @ self.item_emb.T
        shift = self.config.cold_shift  # type: ignore[attr-defined]
        if not shift:
            return scores
        assert self.popularity is not None
        return standardise_rows(scores) + np.float32(shift) * (self.popularity == 0)[None, :]

    def _forget_rows(self, user_idx: np.ndarray) -> None:
        self.user_emb = np.array(self.user_emb)
        self.user_emb[user_idx] = 0.0

    def _state(self) -> dict[str, np.ndarray]:
        state = {"user_emb": np.array(self.user_emb, np.float32), "item_emb": np.array(self.item_emb, np.float32)}
        for k, m in enumerate(self.networks()):
            state.update(module_arrays(m, f"net{k}"))
        return {**state, **self._space_arrays()}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_emb = take(arrays, "user_emb", np.float32, (self.n_users, None))
        self.item_emb = take(arrays, "item_emb", np.float32, (self.n_items, self.user_emb.shape[1]))
        self._restore_space(arrays)
        assert self.space is not None
        if not getattr(self, "_built", False):
            # Loading from files: networks of the saved shapes (backbone factors + bias, content +
            # constant), filled from the saved arrays whose shapes load_module_arrays checks.
            cfg: ColdConfig = self.config  # type: ignore[assignment]
            cfg.check(self.name)
            self._U = self._V = torch.zeros(1, cfg.factors + 1)
            self._X = torch.zeros(1, self.space.dim + 1)
            self.build(TrainingOptions())
            self._built = True
            self.finish_training()
        for k, m in enumerate(self.networks()):
            load_module_arrays(m, arrays, f"net{k}", self.name)
            m.eval()


def standardise_rows(scores: np.ndarray) -> np.ndarray:
    """Each customer's scores centred on their mean, in units of their standard deviation (the
    scale ``cold_shift`` is given in)."""
    scores = scores - scores.mean(axis=1, keepdims=True)
    return scores / np.maximum(scores.std(axis=1, keepdims=True), 1e-12)


def mean_losses(totals: dict[str, float], n: int) -> dict[str, float]:
    return {k: v / max(n, 1) for k, v in totals.items()}


def common_space(trial: Any) -> dict[str, Any]:
    """The search space every cold-start model shares (backbone size, network width, step size)."""
    return {
        "factors": trial.suggest_categorical("factors", [32, 64, 128]),
        "hidden": trial.suggest_categorical("hidden", [100, 200, 400]),
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
    }
