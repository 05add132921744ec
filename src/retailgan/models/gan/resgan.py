"""ResGAN: a conditional GAN recommender whose generator starts from a closed-form item-item model.

CFGAN's generator must learn everything from scratch and, in practice, ends up below a tuned
EASE^R (see docs/benchmarks-cfgan.md). ResGAN keeps what works and lets the adversary add to it:

* **Generator** G(x, z) for a customer's purchase row x (the condition) and noise z::

      logits = s * (x @ B) + W2 tanh(W1 x / ||x|| + Wz z + b1) + b2

  ``B`` is the EASE^R item-item matrix (Steck, WWW 2019) computed in closed form on the training
  data, frozen (``base="frozen"``), fine-tuned (``"finetune"``) or absent (``"none"``); the
  residual MLP starts at zero (W2 = 0), so training starts exactly at EASE's ranking.
* **Denoising conditioning**: in training a random share ``dropout`` of each history is hidden;
  G sees the rest and must generate the hidden part (the targets), as a recommender must
  generate what a customer buys next from what they bought before. The reconstruction term is a
  multinomial log-likelihood of the hidden items (Liang et al., WWW 2018), with the visible items
  excluded from the softmax exactly as recommendations exclude seen items.
* **Discriminator** D(c, v), conditioned on the visible history c, scores purchase vectors v:
  real v = the hidden items (0/1); generated v = G's expected purchases (softmax times the number
  of hidden items) masked CFGAN-style to the hidden items plus a random share ``pm_ratio`` of the
  never-bought ones, so real and fake differ in values, not in support. D is a projection
  discriminator (Miyato & Koyama, ICLR 2018) with spectral norm, trained with the hinge loss
  and its own, larger learning rate (TTUR, Heusel et al., 2017).
* G's loss = reconstruction + ``adv_weight`` x the non-saturating hinge generator loss (-D).
  ``adv_weight=0`` is the reconstruction-only ablation of the same model.

Scores use z = 0 (the noise's mean), so rankings are deterministic; ``score_histories`` folds in
ad-hoc histories without retraining (the generator is a function of the history alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from retailgan import distributed
from retailgan.data.dataset import InteractionDataset
from retailgan.errors import ConfigError, ModelFileError
from retailgan.models.base import IterativeRecommender, ModelConfig, TrainingOptions
from retailgan.models.baselines import ease_bytes, ease_weights
from retailgan.models.gan.cfgan import _torch_settings, sample_unobserved
from retailgan.models.gan.state import load_module_arrays, module_arrays
from retailgan.models.memory import require_memory

BASES = ("frozen", "finetune", "none")
LOSSES = ("hinge", "bce")
SCORE_BATCH = 1024
MAX_LOG_SCALE = 80.0
"""exp(88.7) overflows float32; a trained scale is near exp(0)."""


@dataclass(frozen=True)
class ResGANConfig(ModelConfig):
    """ResGAN hyperparameters (see the module docstring)."""

    l2: float = 300.0
    """L2 penalty of the closed-form EASE^R base."""
    base: str = "frozen"
    hidden: int = 256
    noise_dim: int = 32
    dropout: float = 0.5
    """Share of each training history hidden from G and used as its targets."""
    adv_weight: float = 0.1
    d_hidden: int = 256
    pm_ratio: float = 0.3
    loss: str = "hinge"
    spectral_norm: bool = True
    lr_g: float = 1e-3
    lr_d: float = 2e-3
    l2_g: float = 0.0
    batch_size: int = 128
    d_steps: int = 1
    scale: float = 10.0
    """Initial scale s of the base scores inside the softmax (learned)."""
    crossfit: int = 5
    """Folds of customers for the frozen base during training: a customer's base scores come from
    an EASE^R fitted without that customer, so the residual learns to correct out-of-sample base
    predictions rather than the base's in-sample fit (0: one base fitted on everyone)."""
    epochs: int = 60
    patience: int = 8
    eval_every: int = 1

    def validate(self) -> None:
        checks = [
            (self.base in BASES, f"base must be one of {BASES}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (self.l2 > 0, "l2 must be > 0"),
            (self.hidden >= 1 and self.d_hidden >= 1 and self.noise_dim >= 0, "hidden, d_hidden >= 1, noise_dim >= 0"),
            (0.0 < self.dropout < 1.0, "dropout must be in (0, 1)"),
            (0.0 <= self.pm_ratio <= 1.0, "pm_ratio must be in [0, 1]"),
            (self.adv_weight >= 0, "adv_weight must be >= 0"),
            (self.lr_g > 0 and self.lr_d > 0 and self.l2_g >= 0, "lr > 0, l2_g >= 0"),
            (self.batch_size >= 1 and self.d_steps >= 1 and self.scale > 0, "batch_size, d_steps >= 1, scale > 0"),
            (self.crossfit == 0 or self.crossfit >= 2, "crossfit must be 0 or >= 2"),
            (self.epochs >= 1 and self.patience >= 1 and self.eval_every >= 1, "epochs, patience, eval_every >= 1"),
        ]
        self.require("resgan", checks)


def resgan_bytes(cfg: ResGANConfig, n_users: int, n_items: int) -> int:
    """Peak bytes of ResGAN's training state: the dense float32 customer x product history, the
    base matrix (with gradient and Adam's two moments when fine-tuned), one base per cross-fit
    fold, the EASE^R solve of the last of them, and the product-wide layers of G and D."""
    square = 4 * n_items * n_items
    base = {"none": 0, "frozen": square, "finetune": 4 * square}[cfg.base]
    folds = cfg.crossfit * square if cfg.base == "frozen" else 0
    solve = ease_bytes(n_items) if cfg.base != "none" else 0
    layers = 4 * n_items * (2 * cfg.hidden + 2 * cfg.d_hidden) * 4  # weights, grads, Adam moments
    return 4 * n_users * n_items + base + folds + solve + layers


class Generator(nn.Module):
    """logits = s * (x @ B) + residual MLP(x / ||x||, z); the residual starts at zero."""

    def __init__(self, n_items: int, hidden: int, noise_dim: int, base: str) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.base = base
        if base == "finetune":
            self.B = nn.Parameter(torch.zeros(n_items, n_items))
        else:
            self.register_buffer("B", torch.zeros(n_items if base == "frozen" else 0, n_items))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.inp = nn.Linear(n_items, hidden)
        self.noise = nn.Linear(noise_dim, hidden, bias=False) if noise_dim else None
        self.out = nn.Linear(hidden, n_items)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None, base: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for histories ``x``; ``base`` replaces ``x @ B`` (cross-fitted base scores)."""
        h = self.inp(F.normalize(x, dim=1))
        if self.noise is not None and z is not None:
            h = h + self.noise(z)
        logits = self.out(torch.tanh(h))
        if self.base != "none":
            logits = logits + self.log_scale.exp() * (x @ self.B if base is None else base)
        return logits


class Discriminator(nn.Module):
    """Projection discriminator: D(c, v) = w . phi(v) + <E c, phi(v)>, spectrally normalised."""

    def __init__(self, n_items: int, hidden: int, spectral_norm: bool) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.phi = sn(nn.Linear(n_items, hidden))
        self.phi2 = sn(nn.Linear(hidden, hidden))
        self.head = sn(nn.Linear(hidden, 1))
        self.embed = sn(nn.Linear(n_items, hidden, bias=False))

    def forward(self, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.phi2(F.leaky_relu(self.phi(v), 0.2)), 0.2)
        return self.head(h).squeeze(1) + (self.embed(F.normalize(c, dim=1)) * h).sum(dim=1)


class ResGAN(IterativeRecommender):
    """A conditional GAN with an EASE^R-initialised generator (see the module docstring)."""

    name = "resgan"
    config_class = ResGANConfig
    supports_distributed = True

    G: Generator | None = None
    D: Discriminator | None = None
    _device: torch.device = torch.device("cpu")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "l2": trial.suggest_float("l2", 50.0, 2000.0, log=True),
            "base": trial.suggest_categorical("base", ["frozen", "finetune"]),
            "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
            "dropout": trial.suggest_float("dropout", 0.2, 0.8),
            "adv_weight": trial.suggest_categorical("adv_weight", [0.0, 0.01, 0.03, 0.1, 0.3, 1.0]),
            "pm_ratio": trial.suggest_float("pm_ratio", 0.05, 0.7),
            "lr_g": trial.suggest_float("lr_g", 1e-4, 3e-3, log=True),
            "lr_d": trial.suggest_float("lr_d", 2e-4, 6e-3, log=True),
            "l2_g": trial.suggest_float("l2_g", 1e-7, 1e-3, log=True),
            "scale": trial.suggest_float("scale", 2.0, 50.0, log=True),
        }

    @property
    def _cfg(self) -> ResGANConfig:
        return self.config  # type: ignore[return-value]

    def _build(self) -> Generator:
        cfg = self._cfg
        return Generator(self.n_items, cfg.hidden, cfg.noise_dim, cfg.base)

    # -- training -------------------------------------------------------------------------------

    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg = self._cfg
        cfg.validate()
        self._device = torch.device(options.device)
        self._threads = options.num_threads
        init_gen = torch.Generator().manual_seed(options.seed)
        self._order_gen, self._gen = distributed.generators(options.seed + 1, self._device)
        require_memory(
            "resgan",
            resgan_bytes(cfg, self.n_users, self.n_items),
            "its dense customer x product and product x product arrays",
            "sansa, ials or featgan",
        )
        X = dataset.matrix().astype(np.float32)
        X.data[:] = 1.0
        self._X = torch.from_numpy(X.toarray()).to(self._device)
        # Users with a single item cannot be split into visible and hidden parts.
        self._trainable = torch.from_numpy(np.flatnonzero(np.diff(X.indptr) >= 2)).to(self._device)
        if len(self._trainable) == 0:
            raise ConfigError("resgan: no customer has two or more items to learn from")

        # Parameters are drawn from a seeded fork of the global RNG (nn.Linear's default init and
        # spectral norm's power-iteration vectors both use it).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=init_gen)))
            self.G = self._build()
            nn.init.zeros_(self.G.out.weight)
            nn.init.zeros_(self.G.out.bias)
            self.D = Discriminator(self.n_items, cfg.d_hidden, cfg.spectral_norm) if cfg.adv_weight > 0 else None
        with torch.no_grad():
            self.G.log_scale.fill_(float(np.log(cfg.scale)))
            if cfg.base != "none":
                self.G.B.copy_(torch.from_numpy(ease_weights(X, cfg.l2)))
        self._folds = self._fold_bases = None
        if cfg.base == "frozen" and cfg.crossfit:
            fold = torch.randperm(X.shape[0], generator=init_gen) % cfg.crossfit
            self._folds = fold.to(self._device)
            keep = fold.numpy()
            self._fold_bases = [
                torch.from_numpy(ease_weights(X[keep != k], cfg.l2)).to(self._device) for k in range(cfg.crossfit)
            ]
        self.G.to(self._device)
        self._opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, weight_decay=cfg.l2_g)
        if self.D is not None:
            self.D.to(self._device)
            self._opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
        # Updates go through DDP wrappers under torch.distributed (gradients averaged across processes).
        self._G_train = distributed.wrap(self.G, self._device)
        self._D_train = None if self.D is None else distributed.wrap(self.D, self._device)

    def _split_history(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible and hidden parts of each row; every row keeps >= 1 visible and >= 1 hidden item."""
        u = torch.rand(x.shape, generator=self._gen, device=x.device)
        u = torch.where(x > 0, u, torch.full_like(u, 2.0))
        hidden = (u < self._cfg.dropout) & (x > 0)
        # Guarantee one visible item (the row's smallest draw) and one hidden item (the largest).
        first = u.argmin(dim=1, keepdim=True)
        last = torch.where(x > 0, u, torch.full_like(u, -1.0)).argmax(dim=1, keepdim=True)
        hidden.scatter_(1, first, False)
        hidden.scatter_(1, last, True)
        x_out = hidden.to(x.dtype)
        return x - x_out, x_out

    def _noise(self, n: int) -> torch.Tensor | None:
        nd = self._cfg.noise_dim
        return torch.randn(n, nd, generator=self._gen, device=self._device) if nd else None

    def _expected(self, logits: torch.Tensor, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        """Generated purchase vector: softmax over not-yet-bought items times the hidden count."""
        p = torch.softmax(logits.masked_fill(x_in > 0, float("-inf")), dim=1)
        return p * x_out.sum(dim=1, keepdim=True)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self._cfg
        assert self.G is not None
        order = self._trainable[torch.randperm(len(self._trainable), generator=self._order_gen, device=self._device)]
        rec_losses, adv_losses, d_losses = [], [], []
        with _torch_settings(self._threads):
            self.G.train()
            for batch in order.split(cfg.batch_size):
                idx = distributed.shard(batch)
                x = self._X[idx]
                self._batch_folds = None if self._folds is None else self._folds[idx]
                if self.D is not None:
                    d_losses.append(self._d_step(x))
                rec, adv = self._g_step(x)
                rec_losses.append(rec)
                if adv is not None:
                    adv_losses.append(adv)
        logged = {"loss_rec": float(torch.stack(rec_losses).mean())}
        if d_losses:
            logged["loss_d"] = float(torch.stack(d_losses).mean())
            logged["loss_adv"] = float(torch.stack(adv_losses).mean())
        return logged

    def _base(self, x_in: torch.Tensor) -> torch.Tensor | None:
        """Cross-fitted base scores of a training batch (None: use G's own base)."""
        if self._fold_bases is None:
            return None
        base = torch.empty_like(x_in)
        for k, B in enumerate(self._fold_bases):
            rows = self._batch_folds == k
            base[rows] = x_in[rows] @ B
        return base

    def _fake(
        self, x_in: torch.Tensor, x_out: torch.Tensor, net: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.G is not None
        logits = (net or self.G)(x_in, self._noise(len(x_in)), self._base(x_in))
        judged = x_out + sample_unobserved(x_in + x_out, self._cfg.pm_ratio, self._gen)
        return logits, self._expected(logits, x_in, x_out) * judged

    def _d_step(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self._cfg
        assert self.D is not None
        self.D.requires_grad_(True)
        losses = []
        for _ in range(cfg.d_steps):
            x_in, x_out = self._split_history(x)
            with torch.no_grad():
                _, fake = self._fake(x_in, x_out)
            d = self._D_train(torch.cat([x_in, x_in]), torch.cat([x_out, fake]))
            d_real, d_fake = d.split(len(x))
            if cfg.loss == "hinge":
                loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            else:
                loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            self._opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self._opt_d.step()
            losses.append(loss.detach())
        self.D.requires_grad_(False)
        return torch.stack(losses).mean()

    def _g_step(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self._cfg
        x_in, x_out = self._split_history(x)
        logits, fake = self._fake(x_in, x_out, self._G_train)
        logp = torch.log_softmax(logits.masked_fill(x_in > 0, float("-inf")), dim=1)
        rec = -(logp.masked_fill(x_out == 0, 0.0) * x_out).sum(dim=1).div(x_out.sum(dim=1)).mean()
        loss, adv = rec, None
        if self.D is not None:
            d_fake = self.D(x_in, fake)
            adv = -d_fake.mean() if cfg.loss == "hinge" else F.softplus(-d_fake).mean()
            loss = rec + cfg.adv_weight * adv
        self._opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self._opt_g.step()
        return rec.detach(), None if adv is None else adv.detach()

    def finish_training(self) -> None:
        self.D = self._D_train = self._G_train = None
        self._opt_g = self._opt_d = None
        self._X = self._trainable = None
        self._folds = self._fold_bases = self._batch_folds = None
        self._gen = self._order_gen = None

    # -- scoring --------------------------------------------------------------------------------

    @torch.no_grad()
    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        assert self.G is not None
        self.G.eval()
        out = np.empty((rows.shape[0], self.n_items), dtype=np.float32)
        for s in range(0, rows.shape[0], SCORE_BATCH):
            x = torch.from_numpy(rows[s : s + SCORE_BATCH].toarray().astype(np.float32)).to(self._device)
            z = x.new_zeros(len(x), self._cfg.noise_dim) if self._cfg.noise_dim else None
            out[s : s + SCORE_BATCH] = self.G(x, z).cpu().numpy()
        return out

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        assert self.seen is not None
        rows = self.seen[np.asarray(user_idx, dtype=np.int64)].astype(np.float32)
        rows.data[:] = 1.0
        return self._score_rows(rows)

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        """Fold-in: G applied to ad-hoc purchase rows (binarised), no retraining."""
        if history.shape[1] != self.n_items:
            raise ValueError(f"history has {history.shape[1]} item columns, model has {self.n_items}")
        rows = sp.csr_matrix(history, dtype=np.float32)
        rows.data[:] = 1.0
        return self._score_rows(rows)

    # -- persistence ----------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        assert self.G is not None
        return module_arrays(self.G, "G")

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._cfg.validate()
        G = load_module_arrays(self._build(), arrays, "G", "resgan")
        log_scale = float(G.log_scale.detach())
        if log_scale > MAX_LOG_SCALE:  # exp() of it would overflow float32: every score inf
            raise ModelFileError(f"G.log_scale: {log_scale:g} is over {MAX_LOG_SCALE:g} (exp overflows)")
        self.G = G.to(self._device)
