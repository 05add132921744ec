"""DropoutNet (Volkovs, Yu, Poutanen, NeurIPS 2017), after layer6ai-labs/DropoutNet.

Two towers map [preference vector, content] to output vectors whose inner product regresses the
backbone's score ``u'.v'`` (squared error). During training the item's preference input is set
to zero for a ``dropout`` share of the pairs, so the item tower learns to score from content
alone, which is how it scores new products (their preference input is zero). Pairs: each
training (customer, product) pair and one uniformly drawn warm product for the same customer
(the released code samples from each customer's top 2,500 backbone scores plus random ones; one
random product per positive keeps an epoch linear in the log). Adam instead of momentum SGD;
tanh towers of sizes [hidden, hidden / 2] then ``out_dim``, without batch normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from retailgan.models.base import TrainingOptions
from retailgan.models.cold.common import ColdConfig, ColdStartRecommender, common_space, mean_losses, mlp


@dataclass(frozen=True)
class DropoutNetConfig(ColdConfig):
    dropout: float = 0.5
    """Share of training pairs whose item preference input is zeroed."""
    out_dim: int = 100

    def check(self, model: str) -> None:
        super().check(model)
        self.require(model, [(0.0 <= self.dropout <= 1.0, "dropout in [0, 1]"), (self.out_dim >= 1, "out_dim >= 1")])


class DropoutNet(ColdStartRecommender):
    """DropoutNet on the BPR-MF backbone (module docstring)."""

    name = "dropoutnet"
    config_class = DropoutNetConfig

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {**common_space(trial), "dropout": trial.suggest_float("dropout", 0.1, 0.9)}

    def build(self, options: TrainingOptions) -> None:
        cfg: DropoutNetConfig = self.config  # type: ignore[assignment]
        d, c = self._U.shape[1], self._X.shape[1]
        self._fu = mlp([d, cfg.hidden, max(cfg.hidden // 2, 1), cfg.out_dim])
        self._fv = mlp([d + c, cfg.hidden, max(cfg.hidden // 2, 1), cfg.out_dim])
        self._opt = torch.optim.Adam([*self._fu.parameters(), *self._fv.parameters()], lr=cfg.lr)

    def networks(self) -> list[torch.nn.Module]:
        return [self._fu, self._fv]

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        v_in = self._V * self._is_warm[:, None].float()
        return self._fu(self._U), self._fv(torch.cat([v_in, self._X], 1))

    def content_vectors(self, X: torch.Tensor) -> torch.Tensor:
        cfg: DropoutNetConfig = self.config  # type: ignore[assignment]
        return self._fv(torch.cat([torch.zeros(len(X), cfg.factors + 1), X], 1))

    def train_batches(self) -> dict[str, float]:
        cfg: DropoutNetConfig = self.config  # type: ignore[assignment]
        total, n = 0.0, 0
        for u, i, j in self.batches():
            users, items = torch.cat([u, u]), torch.cat([i, j])
            target = (self._U[users] * self._V[items]).sum(1)
            keep = (torch.rand(len(items), generator=self._gen) >= cfg.dropout).float()[:, None]
            v_in = self._V[items] * keep
            pred = (self._fu(self._U[users]) * self._fv(torch.cat([v_in, self._X[items]], 1))).sum(1)
            loss = torch.nn.functional.mse_loss(pred, target)
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._opt.step()
            total, n = total + float(loss.detach()) * len(u), n + len(u)
        return mean_losses({"loss": total}, n)

    def finish_training(self) -> None:
        super().finish_training()
        self._opt = None
