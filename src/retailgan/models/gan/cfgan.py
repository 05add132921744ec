"""CFGAN (Chae, Kang, Kim, Lee; CIKM 2018): a vector-wise conditional GAN for top-N recommendation.

The generator G maps a conditioning vector ``c`` (a user's purchase row, or in item mode an
item's column of buyers) to a whole purchase vector. The discriminator D sees ``[c, x]`` where
``x`` is either the real vector or G's output masked element-wise by ``e + k``: ``e`` is the real
vector's indicator (so G is only judged on purchased entries) and ``k`` is the partial-masking
(PM) sample, a random share of the *unobserved* entries on which G's output is kept as well, so D
can punish G for predicting purchases there. Zero-reconstruction (ZR) adds
``zr_alpha * sum_j G(c)_j^2`` over another random share of the unobserved entries to G's loss.
Scores are G's output for the user's (or, in item mode, every item's) training vector.

Faithful to the authors' TensorFlow code (github.com/Bigdasgit/CFGAN), which fixes details the
paper leaves open:

* no noise input by default (``noise_dim=0``); G and D are MLPs with sigmoid hidden units and a
  linear output layer (``g_output="identity"``; ``"sigmoid"`` squashes G's output instead);
  weights Glorot-uniform, biases uniform in [-0.01, 0.01];
* losses: D minimises BCE(D(real), 1) + BCE(D(fake), 0); G minimises the non-saturating
  BCE(D(fake), 1) + ZR term; L2 penalties ``l2_g``/``l2_d`` times half the squared norm of every
  weight and bias, which is exactly Adam's (coupled) ``weight_decay``;
* one epoch = ``d_steps`` passes of D over all rows, then ``g_steps`` passes of G (the code's
  ML-100K setting 1000 "epochs" with ``g_steps=4`` is 250 of these);
* ML-100K defaults: item mode, G 400 hidden units, D 125, one hidden layer each, Adam lr 1e-4,
  batches 32 (G) / 64 (D), ``l2_g=1e-3``, ``l2_d=0``, ``d_steps=2``, ``g_steps=4``, ZR and PM on
  70 % of the unobserved entries, ``zr_alpha=0.03`` (the paper text says 0.1).

Deliberate differences: PM/ZR entries are drawn independently per entry (probability
``pm_ratio``/``zr_ratio``, only among unobserved entries) for every mini-batch, instead of an
exact count per row drawn once per epoch and shared by the D and G passes; the expected share is
the same and the draw stays vectorised. Noise, when enabled, is N(0, 1) during training and its
mean (zeros) at inference, so scores are deterministic.

Ablation switches: ``adversarial=False`` trains G without D on a masked reconstruction loss
(squared error on the observed and PM entries) plus ZR; ``use_zr`` / ``use_pm`` turn the two
negative-sampling schemes off. ``loss="wgan-gp"`` swaps in the Wasserstein loss with gradient
penalty; ``spectral_norm`` normalises D's layers.

The defaults are the authors' settings (about 3 min per ML-100K fit on one CPU thread); a
configuration tuned on ML-100K validation data that trains in about 25 s is documented in
docs/benchmarks-cfgan.md with its results. G and D are as wide as the catalogue (user mode) or
the customer base (item mode), so their cost grows with it: before training, the model times a
few steps and says what an epoch and the whole schedule will cost (:meth:`CFGAN.cost_estimate`,
a progress line under the ``retailgan`` command), and it refuses in one line, before allocating,
when its estimated memory exceeds what the machine has (:func:`memory_estimate`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from retailgan import distributed, progress
from retailgan.data.dataset import InteractionDataset
from retailgan.models.base import IterativeRecommender, ModelConfig, TrainingOptions
from retailgan.models.gan.state import load_module_arrays, module_arrays
from retailgan.models.memory import require_memory

log = logging.getLogger(__name__)

MODES = ("user", "item")
LOSSES = ("bce", "wgan-gp")
ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
G_OUTPUTS = ("identity", "sigmoid")
# Training rows are kept as one dense tensor up to this many entries (256 MB of float32);
# larger problems densify each mini-batch from the sparse matrix instead.
DENSE_LIMIT = 1 << 26
SCORE_BATCH = 1024
# Passes of G or D over the training rows per tuning trial (see CFGAN.search_space).
PASS_BUDGET = 300
COST_PROBE_STEPS = 3
"""G and D steps timed (after one warm-up step each) for the cost estimate before training."""


@dataclass(frozen=True)
class CFGANConfig(ModelConfig):
    """CFGAN hyperparameters; the defaults are the authors' ML-100K settings."""

    mode: str = "item"
    """Conditioning vectors: users' purchase rows ("user") or items' buyer columns ("item")."""
    g_hidden: int = 400
    g_layers: int = 1
    d_hidden: int = 125
    d_layers: int = 1
    activation: str = "sigmoid"
    """Hidden-unit activation of G and D."""
    g_output: str = "identity"
    zr_ratio: float = 0.7
    """Share of each row's unobserved entries in the zero-reconstruction term."""
    pm_ratio: float = 0.7
    """Share of each row's unobserved entries kept unmasked in G's output (partial masking)."""
    zr_alpha: float = 0.03
    noise_dim: int = 0
    d_steps: int = 2
    g_steps: int = 4
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    batch_size: int = 32
    """Mini-batch of G (rows: users, or items in item mode)."""
    batch_size_d: int = 64
    l2_g: float = 1e-3
    l2_d: float = 0.0
    loss: str = "bce"
    gp_weight: float = 10.0
    """Gradient-penalty weight (``loss="wgan-gp"`` only)."""
    spectral_norm: bool = False
    adversarial: bool = True
    use_zr: bool = True
    use_pm: bool = True
    epochs: int = 250
    patience: int = 10
    eval_every: int = 1

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values the model cannot train with."""
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (self.activation in ACTIVATIONS, f"activation must be one of {tuple(ACTIVATIONS)}"),
            (self.g_output in G_OUTPUTS, f"g_output must be one of {G_OUTPUTS}"),
            (min(self.g_hidden, self.g_layers, self.d_hidden, self.d_layers) >= 1, "hidden sizes/layers >= 1"),
            (0.0 <= self.zr_ratio <= 1.0 and 0.0 <= self.pm_ratio <= 1.0, "zr_ratio and pm_ratio in [0, 1]"),
            (self.zr_alpha >= 0 and self.gp_weight >= 0, "zr_alpha and gp_weight >= 0"),
            (self.noise_dim >= 0, "noise_dim >= 0"),
            (min(self.d_steps, self.g_steps, self.batch_size, self.batch_size_d) >= 1, "steps, batch sizes >= 1"),
            (self.lr_g > 0 and self.lr_d > 0 and self.l2_g >= 0 and self.l2_d >= 0, "lr > 0, l2 >= 0"),
            (self.epochs >= 1 and self.patience >= 1 and self.eval_every >= 1, "epochs, patience, eval_every >= 1"),
            # Without D, PM or ZR, G only ever sees purchased entries and learns "all ones".
            (self.adversarial or self.use_zr or self.use_pm, "adversarial=False needs use_zr or use_pm"),
        ]
        self.require("cfgan", checks)


def _mlp_params(n_in: int, hidden: int, layers: int, n_out: int) -> int:
    dims = [n_in] + [hidden] * layers + [n_out]
    return sum(a * b + b for a, b in itertools.pairwise(dims))


def memory_estimate(cfg: CFGANConfig, n_users: int, n_items: int) -> int:
    """Bytes a fit needs beyond the data: G's and D's weights, gradients and Adam's two moments
    (float32), the dense training rows when they are kept whole, a mini-batch's working tensors,
    and in item mode the customers x products scores every validation check builds (and their
    transpose)."""
    m, rows = (n_items, n_users) if cfg.mode == "user" else (n_users, n_items)
    params = _mlp_params(m + cfg.noise_dim, cfg.g_hidden, cfg.g_layers, m)
    if cfg.adversarial:
        params += _mlp_params(2 * m, cfg.d_hidden, cfg.d_layers, 1)
    dense_rows = rows * m if rows * m <= DENSE_LIMIT else 0
    batch = 12 * max(cfg.batch_size, 2 * cfg.batch_size_d) * m  # rows, masks, outputs, gradients
    scores = 2 * n_users * n_items if cfg.mode == "item" else SCORE_BATCH * n_items
    return 4 * (4 * params + dense_rows + batch + scores)


def sample_unobserved(observed: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A 0/1 mask holding each unobserved (zero) entry of ``observed`` with probability ``ratio``.

    Observed entries are never selected, so PM/ZR can only push G down on items the row did not
    buy. Same shape and dtype as ``observed``; every draw goes through ``generator``.
    """
    keep = torch.rand(observed.shape, generator=generator, device=observed.device) < ratio
    return (keep & (observed == 0)).to(observed.dtype)


def _mlp(n_in: int, hidden: int, layers: int, n_out: int, activation: str) -> nn.Sequential:
    """Uninitialised MLP (allocated without touching the global RNG; see :func:`_init_mlp`)."""
    dims = [n_in] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        modules += [nn.Linear(a, b, device="meta"), ACTIVATIONS[activation]()]
    modules.append(nn.Linear(dims[-1], n_out, device="meta"))
    return nn.Sequential(*modules).to_empty(device="cpu")


def _init_mlp(net: nn.Sequential, generator: torch.Generator) -> None:
    # The authors' initialisation: Glorot-uniform weights, biases uniform in [-0.01, 0.01].
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.uniform_(layer.bias, -0.01, 0.01, generator=generator)


def _adam(net: nn.Module, lr: float, l2: float) -> torch.optim.Adam:
    # Coupled weight decay = the authors' L2 term l2 * ||w||^2 / 2. The fused kernel is several
    # times faster than the per-tensor loop on CPU, where Adam otherwise dominates a step.
    return torch.optim.Adam(net.parameters(), lr=lr, weight_decay=l2, fused=True)


@contextlib.contextmanager
def _torch_settings(num_threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and (optionally) a fixed thread count, restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


class CFGAN(IterativeRecommender):
    """CFGAN with zero-reconstruction and partial masking (see the module docstring)."""

    name = "cfgan"
    config_class = CFGANConfig
    supports_distributed = True

    G: nn.Sequential | None = None
    D: nn.Sequential | None = None
    _device: torch.device = torch.device("cpu")
    _item_scores: np.ndarray | None = None

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """The sensitive knobs. Every trial gets the same budget of passes over the rows
        (``epochs = PASS_BUDGET // (g_steps + d_steps)``), so cheap and costly schedules compete
        on equal compute; early stopping on validation still picks the epoch."""
        g_steps = trial.suggest_int("g_steps", 1, 2)
        d_steps = trial.suggest_int("d_steps", 1, 2)
        return {
            "mode": trial.suggest_categorical("mode", ["user", "item"]),
            "g_hidden": trial.suggest_categorical("g_hidden", [100, 200, 400]),
            "d_hidden": trial.suggest_categorical("d_hidden", [125, 250]),
            "zr_ratio": trial.suggest_float("zr_ratio", 0.2, 0.9),
            "pm_ratio": trial.suggest_float("pm_ratio", 0.2, 0.9),
            "zr_alpha": trial.suggest_float("zr_alpha", 0.02, 0.5, log=True),
            "lr_g": trial.suggest_float("lr_g", 1e-4, 2e-3, log=True),
            "lr_d": trial.suggest_float("lr_d", 2e-4, 3e-3, log=True),
            "l2_g": trial.suggest_float("l2_g", 3e-4, 5e-3, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
            "g_steps": g_steps,
            "d_steps": d_steps,
            "epochs": PASS_BUDGET // (g_steps + d_steps),
        }

    # -- shapes ---------------------------------------------------------------------------------

    @property
    def _cfg(self) -> CFGANConfig:
        return self.config  # type: ignore[return-value]

    def _vector_len(self) -> int:
        """Length of a conditioning / generated vector (items, or users in item mode)."""
        return self.n_items if self._cfg.mode == "user" else self.n_users

    def _build_generator(self) -> nn.Sequential:
        cfg, m = self._cfg, self._vector_len()
        return _mlp(m + cfg.noise_dim, cfg.g_hidden, cfg.g_layers, m, cfg.activation)

    # -- training -------------------------------------------------------------------------------

    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg = self._cfg
        cfg.validate()
        self._device = torch.device(options.device)
        self._threads = options.num_threads
        init_gen = torch.Generator().manual_seed(options.seed)
        self._order_gen, self._gen = distributed.generators(options.seed, self._device)
        require_memory(
            "cfgan", memory_estimate(cfg, dataset.n_users, dataset.n_items),
            f"{cfg.mode}-mode networks of {dataset.n_users:,} customers x {dataset.n_items:,} products",
            "mode='user' (networks as wide as the catalogue), featgan or ials",
        )
        X = dataset.matrix()
        R = (X if cfg.mode == "user" else X.T).tocsr().astype(np.float32)
        self._R_csr = R
        self._R = torch.from_numpy(R.toarray()).to(self._device) if R.shape[0] * R.shape[1] <= DENSE_LIMIT else None
        m = self._vector_len()

        self.G = self._build_generator()
        _init_mlp(self.G, init_gen)
        self.G.to(self._device)
        self._opt_g = _adam(self.G, cfg.lr_g, cfg.l2_g)
        self.D = None
        if cfg.adversarial:
            self.D = _mlp(2 * m, cfg.d_hidden, cfg.d_layers, 1, cfg.activation)
            _init_mlp(self.D, init_gen)
            if cfg.spectral_norm:
                # spectral_norm draws its power-iteration vectors from the global RNG: seed a fork.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=init_gen)))
                    for i, layer in enumerate(self.D):
                        if isinstance(layer, nn.Linear):
                            self.D[i] = nn.utils.parametrizations.spectral_norm(layer)
            self.D.to(self._device)
            self._opt_d = _adam(self.D, cfg.lr_d, cfg.l2_d)
        # Under torch.distributed the steps that update a network go through its DDP wrapper,
        # which averages gradients across processes; single-process, these are the networks.
        self._G_train = distributed.wrap(self.G, self._device)
        self._D_train = None if self.D is None else distributed.wrap(self.D, self._device)
        self._item_scores = None
        self.epoch_seconds = None
        self._epoch_steps = self._steps_per_epoch()
        if distributed.world_size() == 1 and COST_PROBE_STEPS > 0:
            self.epoch_seconds = self._probe_epoch_seconds()
            text = self.cost_estimate()
            progress.note("fit cfgan", text, enabled=True if options.progress else None)
            log.info("cfgan: %s", text)

    epoch_seconds: float | None = None
    """Seconds an epoch takes, estimated before training from a few timed steps."""
    _epoch_steps: tuple[int, int] = (0, 0)

    def cost_estimate(self) -> str:
        """One line: the estimated time of an epoch and of the whole schedule."""
        cfg = self._cfg
        if self.epoch_seconds is None:
            return "no estimate (not measured in distributed training)"
        d, g = self._epoch_steps
        return (
            f"about {progress.duration(self.epoch_seconds)} an epoch here ({d} D and {g} G steps, "
            f"timed on {COST_PROBE_STEPS} of each); at most {cfg.epochs} epochs: up to "
            f"{progress.duration(self.epoch_seconds * cfg.epochs)} (early stopping may end sooner; "
            f"faster settings: docs/benchmarks-cfgan.md)"
        )

    def _steps_per_epoch(self) -> tuple[int, int]:
        cfg, rows = self._cfg, self._R_csr.shape[0]
        d = cfg.d_steps * math.ceil(rows / cfg.batch_size_d) if self.D is not None else 0
        return d, cfg.g_steps * math.ceil(rows / cfg.batch_size)

    def _probe_epoch_seconds(self) -> float:
        """Time ``COST_PROBE_STEPS`` D and G steps on the first rows, then put back the initial
        weights, fresh optimisers and the training generators: the fit is the one it would
        have been without the probe."""
        cfg = self._cfg
        assert self.G is not None
        nets = [net for net in (self.G, self.D) if net is not None]
        saved = [{k: v.clone() for k, v in net.state_dict().items()} for net in nets]
        draws = self._gen
        self._gen = torch.Generator(device=self._device).manual_seed(0)

        def per_step(step: Any, size: int) -> float:
            idx = torch.arange(min(size, self._R_csr.shape[0]), device=self._device)
            step(idx)  # warm-up: first-call allocations
            t0 = time.perf_counter()
            for _ in range(COST_PROBE_STEPS):
                step(idx)
            return (time.perf_counter() - t0) / COST_PROBE_STEPS

        try:
            with _torch_settings(self._threads):
                t_d = 0.0
                if self.D is not None:
                    self.D.requires_grad_(True)
                    t_d = per_step(self._d_step, cfg.batch_size_d)
                    self.D.requires_grad_(False)
                t_g = per_step(self._g_step, cfg.batch_size)
        finally:
            for net, state in zip(nets, saved, strict=True):
                net.load_state_dict(state)
            if self.D is not None:
                self.D.requires_grad_(True)
            self._gen = draws
            self._opt_g = _adam(self.G, cfg.lr_g, cfg.l2_g)
            if self.D is not None:
                self._opt_d = _adam(self.D, cfg.lr_d, cfg.l2_d)
        d, g = self._epoch_steps
        return d * t_d + g * t_g

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self._cfg
        assert self.G is not None
        self._item_scores = None
        logged: dict[str, float] = {}
        with _torch_settings(self._threads):
            if self.D is not None:
                self.D.requires_grad_(True)
                losses = [self._d_step(idx) for _ in range(cfg.d_steps) for idx in self._batches(cfg.batch_size_d)]
                logged["loss_d"] = float(torch.stack(losses).mean())
                # G's steps need gradients through D's input only, not into D's weights.
                self.D.requires_grad_(False)
            losses = [self._g_step(idx) for _ in range(cfg.g_steps) for idx in self._batches(cfg.batch_size)]
            logged["loss_g"] = float(torch.stack(losses).mean())
        return logged

    def _batches(self, size: int) -> tuple[torch.Tensor, ...]:
        n = self._R_csr.shape[0]
        order = torch.randperm(n, generator=self._order_gen, device=self._device).split(size)
        return tuple(distributed.shard(b) for b in order)

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Dense training vectors of the rows ``idx`` (the conditions, and the real samples)."""
        if self._R is not None:
            return self._R[idx]
        return torch.from_numpy(self._R_csr[idx.cpu().numpy()].toarray()).to(self._device)

    def _generate(self, cond: torch.Tensor, *, train: bool = True, net: nn.Module | None = None) -> torch.Tensor:
        cfg = self._cfg
        assert self.G is not None
        if cfg.noise_dim:
            if train:
                z = torch.randn(len(cond), cfg.noise_dim, generator=self._gen, device=cond.device)
            else:  # the noise's mean, so scores are deterministic
                z = cond.new_zeros(len(cond), cfg.noise_dim)
            cond = torch.cat([cond, z], dim=1)
        out = (net or self.G)(cond)
        return torch.sigmoid(out) if cfg.g_output == "sigmoid" else out

    def _judge_mask(self, real: torch.Tensor) -> torch.Tensor:
        """e + k: purchased entries plus, with PM, a random share of the unobserved ones."""
        if not self._cfg.use_pm:
            return real
        return real + sample_unobserved(real, self._cfg.pm_ratio, self._gen)

    def _d_step(self, idx: torch.Tensor) -> torch.Tensor:
        cfg = self._cfg
        assert self.D is not None
        real = self._rows(idx)
        with torch.no_grad():
            fake = self._generate(real) * self._judge_mask(real)
        # Real and fake in one call: one larger product is cheaper than two small ones.
        pairs = torch.cat([torch.cat([real, real], dim=1), torch.cat([real, fake], dim=1)])
        d_real, d_fake = self._D_train(pairs).split(len(real))
        if cfg.loss == "bce":
            loss_real = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            loss = loss_real + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        else:
            loss = d_fake.mean() - d_real.mean() + cfg.gp_weight * self._gradient_penalty(real, fake)
        self._opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self._opt_d.step()
        return loss.detach()

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """WGAN-GP: (||grad_x D(c, x)|| - 1)^2 on random interpolates of real and fake vectors."""
        assert self.D is not None
        eps = torch.rand(len(real), 1, generator=self._gen, device=real.device)
        x = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(torch.cat([real, x], dim=1)).sum(), x, create_graph=True)
        return (grad.norm(2, dim=1) - 1).square().mean()

    def _g_step(self, idx: torch.Tensor) -> torch.Tensor:
        cfg = self._cfg
        real = self._rows(idx)
        out = self._generate(real, net=self._G_train)
        mask = self._judge_mask(real)
        if self.D is not None:
            d_fake = self.D(torch.cat([real, out * mask], dim=1))
            if cfg.loss == "bce":
                loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            else:
                loss = -d_fake.mean()
        else:  # ablation: masked reconstruction (1 on purchases, 0 on PM entries) instead of D
            loss = ((out - real).square() * mask).sum(dim=1).mean()
        if cfg.use_zr:
            zr = sample_unobserved(real, cfg.zr_ratio, self._gen)
            loss = loss + cfg.zr_alpha * (out.square() * zr).sum(dim=1).mean()
        self._opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self._opt_g.step()
        return loss.detach()

    def finish_training(self) -> None:
        self.D = self._D_train = self._G_train = None
        self._opt_g = self._opt_d = None
        self._R = self._R_csr = None
        self._gen = self._order_gen = None

    # -- scoring --------------------------------------------------------------------------------

    @torch.no_grad()
    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """G's output for the rows of a sparse conditioning matrix, in batches."""
        assert self.G is not None
        self.G.eval()
        out = np.empty((rows.shape[0], self._vector_len()), dtype=np.float32)
        for s in range(0, rows.shape[0], SCORE_BATCH):
            cond = torch.from_numpy(rows[s : s + SCORE_BATCH].toarray().astype(np.float32)).to(self._device)
            out[s : s + SCORE_BATCH] = self._generate(cond, train=False).cpu().numpy()
        return out

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        user_idx = np.asarray(user_idx, dtype=np.int64)
        assert self.seen is not None
        if self._cfg.mode == "user":
            return self._score_rows(self.seen[user_idx])
        if self._item_scores is None:
            # Item mode: every item's generated buyer column, transposed to users x items. Kept
            # until the next epoch; costs n_users x n_items float32.
            self._item_scores = np.ascontiguousarray(self._score_rows(self.seen.T.tocsr()).T)
        return self._item_scores[user_idx]

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        """Fold-in (user mode only): G applied to ad-hoc purchase rows, no retraining."""
        if self._cfg.mode != "user":
            raise NotImplementedError(
                "cfgan in item mode conditions on item columns over the training users; "
                "ad-hoc histories need mode='user'"
            )
        if history.shape[1] != self.n_items:
            raise ValueError(f"history has {history.shape[1]} item columns, model has {self.n_items}")
        return self._score_rows(sp.csr_matrix(history, dtype=np.float32))

    # -- persistence ----------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        assert self.G is not None
        return module_arrays(self.G, "G")

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._cfg.validate()
        G = load_module_arrays(self._build_generator(), arrays, "G", "cfgan")
        self.G = G.to(self._device)
        self._item_scores = None
