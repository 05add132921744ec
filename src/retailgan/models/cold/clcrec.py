"""CLCRec (Wei et al., ACM MM 2021): contrastive learning for cold-start items, after weiyinwei/CLCRec.

Customer and product id vectors (here initialised from the backbone, then trained) and a content
encoder (two layers, leaky ReLU, 256 hidden units as released). Two InfoNCE losses over rows of
one positive and ``num_neg`` uniformly drawn warm products, temperature ``temperature``:

* item - content: the positive product's normalised id vector against the normalised encodings
  of the row's products (its own encoding is the positive);
* customer - item: the customer vector against the row's product vectors, of which a random
  ``num_sample`` share is replaced by their content encodings.

Loss = ``lam`` x first + (1 - ``lam``) x second + ``reg`` x mean vector norms. New products are
scored with their content encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from retailgan.models.base import TrainingOptions
from retailgan.models.cold.common import ColdConfig, ColdStartRecommender, common_space, mean_losses, mlp


@dataclass(frozen=True)
class CLCRecConfig(ColdConfig):
    num_neg: int = 64
    temperature: float = 0.2
    lam: float = 0.5
    """Weight of the item - content contrastive loss (``lr_lambda`` in the release)."""
    num_sample: float = 0.5
    """Share of product vectors replaced by content encodings in the customer - item loss."""
    reg: float = 1e-3

    def check(self, model: str) -> None:
        super().check(model)
        self.require(model, [
            (self.num_neg >= 1 and self.temperature > 0, "num_neg >= 1 and temperature > 0"),
            (0.0 <= self.lam <= 1.0 and 0.0 <= self.num_sample <= 1.0 and self.reg >= 0,
             "lam, num_sample in [0, 1] and reg >= 0"),
        ])


class CLCRec(ColdStartRecommender):
    """CLCRec on the BPR-MF backbone (module docstring)."""

    name = "clcrec"
    config_class = CLCRecConfig

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            **common_space(trial),
            "temperature": trial.suggest_float("temperature", 0.05, 2.0, log=True),
            "lam": trial.suggest_float("lam", 0.1, 0.9),
            "num_sample": trial.suggest_float("num_sample", 0.1, 0.9),
        }

    def build(self, options: TrainingOptions) -> None:
        cfg: CLCRecConfig = self.config  # type: ignore[assignment]
        self._ue = torch.nn.Parameter(self._U.clone())
        self._ie = torch.nn.Parameter(self._V.clone())
        self._enc = mlp([self._X.shape[1], 256, self._U.shape[1]], act=lambda: torch.nn.LeakyReLU(0.01))
        self._opt = torch.optim.Adam([self._ue, self._ie, *self._enc.parameters()], lr=cfg.lr)

    def networks(self) -> list[torch.nn.Module]:
        return [self._enc]

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        items = torch.where(self._is_warm[:, None], self._ie, self._enc(self._X))
        return self._ue, items

    def content_vectors(self, X: torch.Tensor) -> torch.Tensor:
        return self._enc(X)

    @staticmethod
    def _info_nce(anchor: torch.Tensor, rows: torch.Tensor, temperature: float) -> torch.Tensor:
        """-log softmax of column 0 of ``anchor . rows`` / temperature (rows: (b, 1 + k, d))."""
        logits = torch.einsum("bd,bkd->bk", anchor, rows) / temperature
        return (torch.logsumexp(logits, 1) - logits[:, 0]).mean()

    def train_batches(self) -> dict[str, float]:
        cfg: CLCRecConfig = self.config  # type: ignore[assignment]
        totals, n = {"loss": 0.0, "item_content": 0.0, "user_item": 0.0}, 0
        for u, i, _ in self.batches():
            b = len(u)
            neg = self._warm_items[torch.randint(0, len(self._warm_items), (b, cfg.num_neg), generator=self._gen)]
            items = torch.cat([i[:, None], neg], 1)
            # Each distinct product is encoded once per batch (rows repeat products many times).
            uniq, inv = torch.unique(items, return_inverse=True)
            feat = self._enc(self._X[uniq])[inv]
            emb = self._ie[items]
            l_ic = self._info_nce(F.normalize(self._ie[i], dim=1), F.normalize(feat, dim=2), cfg.temperature)
            swap = torch.rand(b, 1 + cfg.num_neg, generator=self._gen) < cfg.num_sample
            mixed = torch.where(swap[:, :, None], feat, emb)
            l_ui = self._info_nce(self._ue[u], mixed, cfg.temperature)
            reg = (self._ue[u].norm(dim=1).mean() + emb.norm(dim=2).mean()) / 2
            loss = cfg.lam * l_ic + (1 - cfg.lam) * l_ui + cfg.reg * reg
            self._opt.zero_grad(set_to_none=True)
            loss.backward()
            self._opt.step()
            totals["loss"] += float(loss.detach()) * b
            totals["item_content"] += float(l_ic.detach()) * b
            totals["user_item"] += float(l_ui.detach()) * b
            n += b
        return mean_losses(totals, n)

    def finish_training(self) -> None:
        super().finish_training()
        self._opt = None
