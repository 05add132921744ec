"""featgan's networks: item tower, history encoder, generator, and the discriminator."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retailgan.models.gan.featgan.config import FeatureGANConfig


class Nets(nn.Module):
    """Item tower, history encoder and generator (what inference needs), plus the head of the
    learned weights on recent sales (``trend_days``)."""

    def __init__(self, d_feat: int, cfg: FeatureGANConfig, n_ids: int = 0) -> None:
        super().__init__()
        self.tower = nn.Linear(d_feat, cfg.emb_dim)
        self.encoder = nn.Linear(2 * d_feat + 1, cfg.hidden)
        self.n_ids = n_ids
        if n_ids:  # ``id_vectors``: a learned vector per product with interactions (``has_id``)
            self.ids = nn.Embedding(n_ids, cfg.emb_dim)
            self.id_encoder = nn.Linear(cfg.emb_dim, cfg.hidden, bias=False)
            self.register_buffer("has_id", torch.zeros(n_ids))
        self.generator = nn.Sequential(
            nn.Linear(cfg.hidden + cfg.noise_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.emb_dim)
        )
        self.noise_dim = cfg.noise_dim
        self.has_trend = bool(cfg.trend_days)
        if cfg.trend_days:  # the customer's weight on recent sales (priors module)
            self.trend = nn.Linear(cfg.hidden, 2)

    def id_rows(self, rows: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor | None:
        """Learned vectors of products ``rows`` (zero for products without one, and where ``keep``,
        a 0/1 weight per product of the catalogue, is 0); None without ``id_vectors``."""
        if not self.n_ids:
            return None
        weight = self.has_id if keep is None else self.has_id * keep[: self.n_ids]
        inside = rows < self.n_ids  # products added after training have none
        r = torch.where(inside, rows, torch.zeros_like(rows))
        return self.ids(r) * (weight[r] * inside)[:, None]

    def id_history(self, bag: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None) -> torch.Tensor | None:
        """Mean learned vector of each history: ``bag`` = (products, offsets, weights) of
        ``F.embedding_bag``."""
        if not self.n_ids or bag is None:
            return None
        items, offsets, weights = bag
        inside = items < self.n_ids
        items = torch.where(inside, items, torch.zeros_like(items))
        weights = weights * inside * self.has_id[items]
        return F.embedding_bag(items, self.ids.weight, offsets, mode="sum", per_sample_weights=weights)

    def embed(self, x: torch.Tensor, q: torch.Tensor | None = None) -> torch.Tensor:
        """Unit vectors in the retrieval space of products with features ``x`` (plus their
        learned vectors ``q``)."""
        t = self.tower(x)
        return F.normalize(t if q is None else t + q, dim=-1)

    def encode(self, hist: torch.Tensor, q_mean: torch.Tensor | None = None) -> torch.Tensor:
        """History encodings ``h`` of encoder inputs (history means and size; the mean learned
        vector ``q_mean`` of the history with ``id_vectors``)."""
        z = self.encoder(hist)
        return F.relu(z if q_mean is None else z + self.id_encoder(q_mean))

    def trend_weight(self, h: torch.Tensor) -> torch.Tensor:
        """``(n, 2)`` weights on ``log(1 + recent sales)`` of history encodings ``h``: for every
        product, and added for products placed by their record alone."""
        return self.trend(h)

    def generate(self, h: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if self.noise_dim:
            z = h.new_zeros(len(h), self.noise_dim) if z is None else z
            h = torch.cat([h, z], dim=1)
        return F.normalize(self.generator(h), dim=-1)

    def forward(
        self,
        hist: torch.Tensor,
        x: torch.Tensor,
        z: torch.Tensor | None,
        ids: tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One training step's pass: ``(h, E, g, beta)``: history encodings, candidate product
        vectors (features ``x``; with ``id_vectors``, ``ids`` = (candidate rows, 0/1 weight per
        product, history bag)), generated vectors (noise ``z``) and trend weights (None without
        ``trend_days``). One call, so that DistributedDataParallel sees every parameter used."""
        q_items = q_hist = None
        if ids is not None:
            q_items, q_hist = self.id_rows(ids[0], ids[1]), self.id_history(ids[2])
        h = self.encode(hist, q_hist)
        E = self.embed(x, q_items)
        return h, E, self.generate(h, z), self.trend_weight(h) if self.has_trend else None


def history_bags(
    indptr_start: np.ndarray, length: np.ndarray, items: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F.embedding_bag`` inputs averaging ``items[start : start + length]`` per row, without the
    position ``exclude`` of each row (a held-out target) when given."""
    lens = np.asarray(length, np.int64)
    pos = np.repeat(indptr_start - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
    row = np.repeat(np.arange(len(lens)), lens)
    if exclude is not None:
        keep = pos != exclude[row]
        pos, row = pos[keep], row[keep]
    counts = np.bincount(row, minlength=len(lens))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    weights = 1.0 / np.maximum(counts, 1)[row]
    return (
        torch.from_numpy(items[pos].astype(np.int64)),
        torch.from_numpy(offsets.astype(np.int64)),
        torch.from_numpy(weights.astype(np.float32)),
    )


def discriminator(hidden: int, emb_dim: int, generator: torch.Generator) -> nn.Sequential:
    """``D(h, e)``: a spectral-normalised MLP scoring (history encoding, product vector) pairs."""
    layers = [nn.Linear(hidden + emb_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden // 2), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(hidden // 2, 1))
    net = nn.Sequential(*layers)
    init_linear(net, generator)  # before spectral_norm: afterwards ``weight`` is a computed tensor
    # spectral_norm draws its power-iteration vectors from the global RNG: seed a fork.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        for i, layer in enumerate(net):
            if isinstance(layer, nn.Linear):
                net[i] = nn.utils.parametrizations.spectral_norm(layer)
    return net


def init_linear(module: nn.Module, generator: torch.Generator) -> None:
    """Xavier-uniform weights and zero biases for every linear layer, from ``generator``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
