"""Heater (Zhu, Wang, Caverlee, SIGIR 2020): randomized training and mixture-of-experts transformation.

Content goes through ``n_experts`` linear experts mixed by a softmax gate (the mixture of
experts) to a vector ``psi`` in the backbone's space, pulled towards the product's backbone vector
``v'`` (the similarity constraint, weight ``sim_weight``). Randomized training: each pair's item
input is ``psi`` instead of ``v'`` with probability ``dropout``. Both inputs then pass a tanh
transformation per side; the inner product regresses the backbone score (squared error), as in
DropoutNet, whose training framework Heater's release builds on. New products use ``psi``. Pairs
as in :mod:`retailgan.models.cold.dropoutnet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from retailgan.models.base import TrainingOptions
from retailgan.models.cold.common import ColdConfig, ColdStartRecommender, common_space, mean_losses, mlp


@dataclass(frozen=True)
class HeaterConfig(ColdConfig):
    n_experts: int = 5
    dropout: float = 0.5
    """Probability that a pair's item input is the content vector ``psi`` (randomized training)."""
    sim_weight: float = 0.1
    """Weight of the similarity constraint ``||psi - v'||^2``."""
    out_dim: int = 100

    def check(self, model: str) -> None:
        super().check(model)
        self.require(model, [
            (self.n_experts >= 1 and self.out_dim >= 1, "n_experts, out_dim >= 1"),
            (0.0 <= self.dropout <= 1.0 and self.sim_weight >= 0, "dropout in [0, 1], sim_weight >= 0"),
        ])


class Heater(ColdStartRecommender):
    """Heater on the BPR-MF backbone (module docstring)."""

    name = "heater"
    config_class = HeaterConfig

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            **common_space(trial),
            "dropout": trial.suggest_float("dropout", 0.1, 0.9),
            "sim_weight": trial.suggest_float("sim_weight", 1e-3, 10.0, log=True),
            "n_experts": trial.suggest_categorical("n_experts", [1, 3, 5, 10]),
        }

    def build(self, options: TrainingOptions) -> None:
        cfg: HeaterConfig = self.config  # type: ignore[assignment]
        d, c = self._U.shape[1], self._X.shape[1]
        self._experts = torch.nn.Linear(c, d * cfg.n_experts)
        self._gate = torch.nn.Linear(c, cfg.n_experts)
        self._fu = mlp([d, cfg.hidden, cfg.out_dim])
        self._fv = mlp([d, cfg.hidden, cfg.out_dim])
        params = [p for m in self.networks() for p in m.parameters()]
        self._opt = torch.optim.Adam(params, lr=cfg.lr)

    def networks(self) -> list[torch.nn.Module]:
        return [self._experts, self._gate, self._fu, self._fv]

    def _psi(self, x: torch.Tensor) -> torch.Tensor:
        cfg: HeaterConfig = self.config  # type: ignore[assignment]
        experts = self._experts(x).view(len(x), cfg.n_experts, -1)
        gate = torch.softmax(self._gate(x), dim=1)
        return (gate[:, :, None] * experts).sum(1)

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        v_in = torch.where(self._is_warm[:, None], self._V, self._psi(self._X))
        return self._fu(self._U), self._fv(v_in)

    def content_vectors(self, X: torch.Tensor) -> torch.Tensor:
        return self._fv(self._psi(X))

    def train_batches(self) -> dict[str, float]:
        cfg: HeaterConfig = self.config  # type: ignore[assignment]
        totals, n = {"loss": 0.0, "sim": 0.0}, 0
        for u, i, j in self.batches():
            users, items = torch.cat([u, u]), torch.cat([i, j])
            v = self._V[items]
            target = (self._U[users] * v).sum(1)
            psi = self._psi(self._X[items])
            swap = torch.rand(len(items), generator=self._gen) < cfg.dropout
            v_in = torch.where(swap[:, None], psi, v)
            pred = (self._fu(self._U[users]) * self._fv(v_in)).sum(1)
            sim = (psi - v).pow(2).sum(1).mean()
            loss = torch.nn.functional.mse_loss(pred, target) + cfg.sim_weight * sim
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._opt.step()
            totals["loss"] += float(loss.detach()) * len(u)
            totals["sim"] += float(sim.detach()) * len(u)
            n += len(u)
        return mean_losses(totals, n)

    def finish_training(self) -> None:
        super().finish_training()
        self._opt = None
