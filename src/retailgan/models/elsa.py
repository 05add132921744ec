"""ELSA: a scalable linear shallow autoencoder (Vancura et al., RecSys 2022).

The item-item weights are low rank, ``W = A A^T - I`` with ``A`` an ``n_items x factors`` matrix
of unit-norm rows, so a history ``x`` scores ``x A A^T - x`` and no ``n_items x n_items`` array is
ever formed: memory is ``n_items * factors`` where EASE^R needs ``12 * n_items**2`` bytes.

Training follows the paper's objective, the normalised squared error between each customer's
history and its reconstruction (NAdam, rows in random minibatches). The reconstruction is never
materialised either: with ``z = x A`` and ``G = A^T A`` (factors x factors),

* ``<x A A^T - x, x> = |z|^2 - |x|^2`` and
* ``|x A A^T - x|^2 = z G z^T - 2 |z|^2 + |x|^2``,

so the cosine between history and reconstruction (the loss is ``1 - cosine``) costs
``O(nnz * factors + n_items * factors^2)`` per step instead of ``O(batch * n_items * factors)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from retailgan.data.dataset import InteractionDataset
from retailgan.models.base import IterativeRecommender, ModelConfig, TrainingOptions
from retailgan.models.fast_topk import FactorItems, factor_top_k
from retailgan.persistence import take


@dataclass(frozen=True)
class ELSAConfig(ModelConfig):
    factors: int = 128
    """Rank of the item-item weights (the paper's ``r``)."""
    lr: float = 0.05
    """NAdam's learning rate (the paper uses NAdam too)."""
    batch_size: int = 1024
    """Customers per step."""
    epochs: int = 30
    """At most this many passes; early stopping on validation usually ends sooner."""
    patience: int = 3
    eval_every: int = 1

    def validate(self) -> None:
        self.require(
            "elsa",
            [
                (self.factors >= 1, "factors >= 1"),
                (self.lr > 0, "lr > 0"),
                (self.batch_size >= 1, "batch_size >= 1"),
                (self.epochs >= 1 and self.patience >= 1 and self.eval_every >= 1, "epochs, patience, eval_every >= 1"),
            ],
        )


def _torch_rows(X: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Rows of a CSR matrix as a torch sparse COO tensor (float32)."""
    sub = X[rows].tocoo()
    idx = torch.from_numpy(np.vstack([sub.row, sub.col]).astype(np.int64))
    values = torch.from_numpy(sub.data.astype(np.float32))
    return torch.sparse_coo_tensor(idx, values, sub.shape, check_invariants=False).coalesce()


def reconstruction_cosine(x: torch.Tensor, x_sq: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Cosine between each row of sparse ``x`` and ``x A A^T - x`` (``A`` with unit rows),
    computed through ``A^T A`` without forming the reconstruction (see the module docstring)."""
    z = torch.sparse.mm(x, A)
    zz = (z * z).sum(1)
    zGz = ((z @ (A.T @ A)) * z).sum(1)
    dot = zz - x_sq
    norm_sq = (zGz - 2 * zz + x_sq).clamp_min(1e-12)
    return dot / torch.sqrt(norm_sq * x_sq)


class ELSA(IterativeRecommender):
    """Low-rank linear item-item autoencoder; scores ``x A A^T - x`` for a history ``x``."""

    exact_top_k = True

    name = "elsa"
    config_class = ELSAConfig

    A: np.ndarray
    """(n_items, factors) item factors with unit rows."""

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "factors": trial.suggest_categorical("factors", [128, 256, 512, 1024]),
            "lr": trial.suggest_float("lr", 5e-3, 0.2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [256, 1024, 4096]),
        }

    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg: ELSAConfig = self.config  # type: ignore[assignment]
        cfg.validate()
        self._gen = torch.Generator().manual_seed(options.seed)
        self._X = dataset.matrix().astype(np.float32)
        self._X.data[:] = 1.0
        self._X_sq = np.diff(self._X.indptr).astype(np.float32)
        # Customers without a purchase have nothing to reconstruct.
        self._rows = np.flatnonzero(self._X_sq > 0)
        W = torch.empty(self.n_items, cfg.factors)
        torch.nn.init.xavier_uniform_(W, generator=self._gen)
        self._W = torch.nn.Parameter(W)
        self._opt = torch.optim.NAdam([self._W], lr=cfg.lr)
        self._sync()

    def _sync(self) -> None:
        with torch.no_grad():
            self.A = torch.nn.functional.normalize(self._W, dim=1).numpy().copy()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg: ELSAConfig = self.config  # type: ignore[assignment]
        perm = self._rows[torch.randperm(len(self._rows), generator=self._gen).numpy()]
        total = 0.0
        for s in range(0, len(perm), cfg.batch_size):
            rows = perm[s : s + cfg.batch_size]
            x = _torch_rows(self._X, rows)
            x_sq = torch.from_numpy(self._X_sq[rows])
            A = torch.nn.functional.normalize(self._W, dim=1)
            loss = (1.0 - reconstruction_cosine(x, x_sq, A)).mean()
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._opt.step()
            total += float(loss.detach()) * len(rows)
        self._sync()
        return {"loss": total / max(len(perm), 1)}

    def finish_training(self) -> None:
        self._opt = None
        self._W = None
        self._X = None

    # -- scoring ------------------------------------------------------------------------------

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        assert self.seen is not None
        return self.score_histories(self.seen[np.asarray(user_idx, dtype=np.int64)])

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        if history.shape[1] != self.n_items:
            raise ValueError(f"history has {history.shape[1]} item columns, model has {self.n_items}")
        x = sp.csr_matrix(history, dtype=np.float32)
        x.data[:] = 1.0  # fitted on binary histories
        # float64: a float32 product's rounding depends on the block's shape (BLAS kernels), and
        # a customer's scores must not change with who else is scored in the same block.
        A = np.asarray(self.A, dtype=np.float64)
        out = np.asarray(x @ A) @ A.T
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        out[rows, x.indices] -= 1.0
        return out.astype(np.float32, copy=False)

    def _top_k_known(
        self, user_idx: np.ndarray, k: int, banned: sp.csr_matrix, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Float32 blocks of ``(x A) A^T`` with ``-x`` added sparsely
        (:func:`~retailgan.models.fast_topk.factor_top_k`); no items x items array."""
        assert self.seen is not None
        x = sp.csr_matrix(self.seen[np.asarray(user_idx, dtype=np.int64)], dtype=np.float32)
        x.data[:] = 1.0
        z = np.asarray(x @ np.asarray(self.A, dtype=np.float64), dtype=np.float32)
        cached = getattr(self, "_items_cache", None)
        if cached is None or cached[0] is not self.A:
            cached = self._items_cache = (self.A, FactorItems.build(self.A))
        return factor_top_k(z, cached[1], k, banned, allowed, adjust=-x)

    # -- persistence --------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        return {"A": np.asarray(self.A, dtype=np.float32)}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.A = take(arrays, "A", np.float32, (self.n_items, self.config.factors))  # type: ignore[attr-defined]
