"""featgan's networks: item tower, history encoder, generator, and the discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retailgan.models.gan.featgan.config import FeatureGANConfig


class Nets(nn.Module):
    """Item tower, history encoder and generator (what inference needs), plus the head of the
    learned weights on recent sales (``trend_days``)."""

    def __init__(self, d_feat: int, cfg: FeatureGANConfig) -> None:
        super().__init__()
        self.tower = nn.Linear(d_feat, cfg.emb_dim)
        self.encoder = nn.Linear(2 * d_feat + 1, cfg.hidden)
        self.generator = nn.Sequential(
            nn.Linear(cfg.hidden + cfg.noise_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.emb_dim)
        )
        self.noise_dim = cfg.noise_dim
        self.has_trend = bool(cfg.trend_days)
        if cfg.trend_days:  # the customer's weight on recent sales (priors module)
            self.trend = nn.Linear(cfg.hidden, 2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit vectors in the retrieval space of products with features ``x``."""
        return F.normalize(self.tower(x), dim=-1)

    def encode(self, hist: torch.Tensor) -> torch.Tensor:
        """History encodings ``h`` of encoder inputs (history means and size)."""
        return F.relu(self.encoder(hist))

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
        self, hist: torch.Tensor, x: torch.Tensor, z: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One training step's pass: ``(h, E, g, beta)``: history encodings, candidate product
        vectors (features ``x``), generated vectors (noise ``z``) and trend weights (None without
        ``trend_days``). One call, so that DistributedDataParallel sees every parameter used."""
        h = self.encode(hist)
        return h, self.embed(x), self.generate(h, z), self.trend_weight(h) if self.has_trend else None


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
            nn.init.zeros_(layer.bias)
