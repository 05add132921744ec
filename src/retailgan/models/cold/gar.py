"""GAR (Chen et al., SIGIR 2022): generative adversarial cold-start recommendation, after zfnWong/GAR (GAR-MLP).

A generator G maps a product's content to a vector in the backbone's item space; the recommender
R (a customer tower and an item tower over backbone vectors) scores ``R_u(u') . R_i(v)``. They
are trained in turn on each mini-batch of (customer, positive, negative) triples:

* R: ``-log sigmoid(s(u, v'_pos) - alpha s(u, v'_neg) - (1 - alpha) s(u, G(c_pos)))``: rank the
  real positive above negatives and above the generated vector of the same product;
* G: ``(1 - sim_weight) x -log sigmoid(s(u, G(c_pos)) - s(u, v'_pos))`` (fool R: generated scored
  as high as real) ``+ sim_weight x ||G(c_pos) - v'_pos||_1``;

both with an L2 penalty ``reg`` on their weights, Adam at ``lr``. Warm products are scored through
R's item tower from their backbone vectors, new ones from G(content): hybrid lists compare the two
on one scale, which is what the adversarial term is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from retailgan.models.base import TrainingOptions
from retailgan.models.cold.common import ColdConfig, ColdStartRecommender, common_space, mean_losses, mlp


@dataclass(frozen=True)
class GARConfig(ColdConfig):
    alpha: float = 0.9
    """Share of the negative (rest: the generated vector) in R's loss."""
    sim_weight: float = 0.1
    """Weight of G's L1 similarity to the real vector (``sim_coe``)."""
    reg: float = 1e-3
    g_dropout: float = 0.1
    r_dropout: float = 0.5

    def check(self, model: str) -> None:
        super().check(model)
        self.require(model, [
            (0.0 <= self.alpha <= 1.0 and 0.0 <= self.sim_weight <= 1.0, "alpha and sim_weight in [0, 1]"),
            (self.reg >= 0 and 0.0 <= self.g_dropout < 1.0 and 0.0 <= self.r_dropout < 1.0,
             "reg >= 0 and dropouts in [0, 1)"),
        ])


def _l2(module: torch.nn.Module) -> torch.Tensor:
    return sum(p.pow(2).sum() for name, p in module.named_parameters() if name.endswith("weight")) / 2


class GAR(ColdStartRecommender):
    """GAR on the BPR-MF backbone (module docstring)."""

    name = "gar"
    config_class = GARConfig

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            **common_space(trial),
            "alpha": trial.suggest_float("alpha", 0.5, 1.0),
            "sim_weight": trial.suggest_float("sim_weight", 0.01, 0.9, log=True),
        }

    def build(self, options: TrainingOptions) -> None:
        cfg: GARConfig = self.config  # type: ignore[assignment]
        d, c = self._U.shape[1], self._X.shape[1]
        self._g = mlp([c, cfg.hidden, d], dropout=cfg.g_dropout)
        self._ru = mlp([d, cfg.hidden, cfg.hidden], dropout=cfg.r_dropout)
        self._ri = mlp([d, cfg.hidden, cfg.hidden], dropout=cfg.r_dropout)
        self._opt_g = torch.optim.Adam(self._g.parameters(), lr=cfg.lr)
        self._opt_r = torch.optim.Adam([*self._ru.parameters(), *self._ri.parameters()], lr=cfg.lr)

    def networks(self) -> list[torch.nn.Module]:
        return [self._g, self._ru, self._ri]

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        v_in = torch.where(self._is_warm[:, None], self._V, self._g(self._X))
        return self._ru(self._U), self._ri(v_in)

    def content_vectors(self, X: torch.Tensor) -> torch.Tensor:
        return self._ri(self._g(X))

    def _score(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (self._ru(u) * self._ri(v)).sum(1)

    def train_batches(self) -> dict[str, float]:
        cfg: GARConfig = self.config  # type: ignore[assignment]
        totals, n = {"r_loss": 0.0, "g_loss": 0.0, "sim": 0.0}, 0
        for u, i, j in self.batches():
            uu, vi, vj, ci = self._U[u], self._V[i], self._V[j], self._X[i]
            # R step (G fixed): real above negative and above generated.
            with torch.no_grad():
                self._g.eval()
                fake = self._g(ci)
                self._g.train()
            b = len(u)
            s = self._score(uu.repeat(3, 1), torch.cat([vi, vj, fake])).view(3, b)
            r_loss = F.softplus(-(s[0] - cfg.alpha * s[1] - (1 - cfg.alpha) * s[2])).mean()
            r_loss = r_loss + cfg.reg * (_l2(self._ru) + _l2(self._ri))
            self._opt_r.zero_grad(set_to_none=True)
            r_loss.backward()
            self._opt_r.step()
            # G step (R fixed, in eval mode as released): generated scored as high as real.
            self._ru.eval()
            self._ri.eval()
            gen = self._g(ci)
            s = self._score(torch.cat([uu, uu]), torch.cat([gen, vi])).view(2, b)
            sim = (gen - vi).abs().sum(1).mean()
            g_loss = (1 - cfg.sim_weight) * F.softplus(-(s[0] - s[1])).mean() + cfg.sim_weight * sim
            g_loss = g_loss + cfg.reg * _l2(self._g)
            self._opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self._opt_g.step()
            self._ru.train()
            self._ri.train()
            totals["r_loss"] += float(r_loss.detach()) * b
            totals["g_loss"] += float(g_loss.detach()) * b
            totals["sim"] += float(sim.detach()) * b
            n += b
        return mean_losses(totals, n)

    def finish_training(self) -> None:
        super().finish_training()
        self._opt_g = self._opt_r = None
