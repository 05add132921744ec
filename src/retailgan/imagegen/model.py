"""A class-conditional GAN for product images (plain PyTorch).

* Generator: DCGAN-style. The noise ``z`` and a learned class embedding are concatenated, mapped
  by a linear layer to a ``(C, h/2^k, w/2^k)`` block, then upsampled by ``k`` transposed 4x4
  convolutions (batch norm + ReLU between them) to the image, ``tanh`` output in [-1, 1].
* Discriminator: strided 4x4 convolutions with LeakyReLU, global sum pooling to a feature ``h``,
  then the projection head of Miyato & Koyama (ICLR 2018): ``D(x, y) = w.h + embed(y).h``. Every
  layer is spectrally normalised.
* Hinge loss, two time-scale update rule (D learns faster than G, Heusel et al. 2017), Adam with
  beta1 = 0, and an exponential moving average of G's weights used for every sample.

The EMA generator's batch-norm statistics are re-estimated after training ("standing
statistics"), so single images are generated in eval mode, independent of their batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from retailgan import __version__
from retailgan.errors import ConfigError, ModelFileError
from retailgan.fileio import file_mode, write_text_atomic
from retailgan.models.base import ModelConfig

FORMAT = "retailgan-imagegen"
FORMAT_VERSION = 1
META_FILE = "model.json"
ARRAYS_FILE = "arrays.safetensors"
GENERATOR_NAME = "retailgan-cgan"


@dataclass(frozen=True)
class GANConfig(ModelConfig):
    """Hyperparameters of the conditional GAN; the defaults are run D of docs/benchmarks-images.md (28x28, one CPU
    thread)."""

    z_dim: int = 64
    embed_dim: int = 32
    g_channels: int = 64
    """Width of G's last hidden block (doubled at each lower resolution)."""
    d_channels: int = 32
    """Width of D's first block (doubled at each lower resolution)."""
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    d_steps: int = 1
    """D updates per G update."""
    ema_decay: float = 0.999
    ema_start: int = 1000
    """G steps before the EMA starts averaging (until then it copies G)."""
    mode_seeking: float = 1.0
    """Weight of the mode-seeking term (Mao et al., CVPR 2019): G is rewarded for images that differ
    when their noise differs (pairs of the same class), against mode collapse within a class."""
    minibatch_std: bool = True
    """Append the batch's feature standard deviation to D's last block (Karras et al., ICLR 2018), so D
    can see a lack of variety."""
    cond_bn: bool = True
    """Class-conditional batch norm in G (per-class gain and bias after every batch norm, as in the projection
    cGAN of Miyato & Koyama 2018), so the class steers every layer, not only G's input."""
    epochs: int = 20
    images_per_epoch: int = 15_000
    """Training images drawn per epoch (0: the whole set, shuffled); short epochs give a grid and a
    checkpoint every few minutes."""


def _stages(h: int, w: int) -> int:
    """Number of 2x upsamplings: halve the smaller side while it stays even and above 7."""
    k, s = 0, min(h, w)
    while s % 2 == 0 and s > 7:
        s //= 2
        k += 1
    if k == 0 or h % (1 << k) or w % (1 << k):
        raise ConfigError(f"image size {h}x{w} is not supported (sides must be divisible by 4, e.g. 28x28, 32x32)")
    return k


class CondBatchNorm(nn.Module):
    """Batch norm without its own affine part, followed by a per-class gain (starting at 1) and bias (at 0)."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(n_classes, channels)
        self.bias = nn.Embedding(n_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(h) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig, n_classes: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = shape
        k = _stages(h, w)
        self.z_dim = cfg.z_dim
        self.start = (h >> k, w >> k)
        widths = [cfg.g_channels << (k - 1 - i) for i in range(k)]  # e.g. [128, 64] for 28x28
        self.embed = nn.Embedding(n_classes, cfg.embed_dim)
        self.fc = nn.Linear(cfg.z_dim + cfg.embed_dim, widths[0] * self.start[0] * self.start[1])
        self.cond_bn = cfg.cond_bn
        self.width0 = widths[0]
        if cfg.cond_bn:
            self.cbn = nn.ModuleList(
                [CondBatchNorm(widths[0], n_classes)] + [CondBatchNorm(widths[i + 1], n_classes) for i in range(k - 1)]
            )
            outs = [*widths[1:], c]
            self.convs = nn.ModuleList(
                [nn.ConvTranspose2d(widths[i], outs[i], 4, 2, 1, bias=i == k - 1) for i in range(k)]
            )
            return
        self.bn0 = nn.BatchNorm2d(widths[0])
        ups: list[nn.Module] = []
        for i in range(k):
            last = i == k - 1
            out = c if last else widths[i + 1]
            ups.append(nn.ConvTranspose2d(widths[i], out, 4, 2, 1, bias=last))
            if not last:
                ups += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        self.ups = nn.Sequential(*ups)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1)).view(len(z), self.width0, *self.start)
        if self.cond_bn:
            for bn, conv in zip(self.cbn, self.convs, strict=True):
                h = conv(F.relu(bn(h, y)))
            return torch.tanh(h)
        h = F.relu(self.bn0(h))
        return torch.tanh(self.ups(h))


class Discriminator(nn.Module):
    def __init__(self, cfg: GANConfig, n_classes: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = shape
        k = _stages(h, w)
        layers: list[nn.Module] = []
        width_in = c
        for i in range(k):
            out = cfg.d_channels << i
            layers += [spectral_norm(nn.Conv2d(width_in, out, 4, 2, 1)), nn.LeakyReLU(0.1, inplace=True)]
            width_in = out
        self.minibatch_std = cfg.minibatch_std
        extra = 1 if cfg.minibatch_std else 0
        last = [spectral_norm(nn.Conv2d(width_in + extra, width_in, 3, 1, 1)), nn.LeakyReLU(0.1, inplace=True)]
        # Without the std channel the last block stays inside ``body`` (the layout of earlier model files).
        self.body = nn.Sequential(*layers) if extra else nn.Sequential(*layers, *last)
        self.last = nn.Sequential(*last) if extra else nn.Identity()
        self.linear = spectral_norm(nn.Linear(width_in, 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, width_in))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if self.minibatch_std:
            # One extra channel: the mean over features of the per-feature std over the batch (groups of <= 4).
            n, c, hh, ww = h.shape
            g = min(4, n)
            if n % g:
                g = 1
            if g > 1:
                std = h.view(g, n // g, c, hh, ww).var(0, unbiased=False).add(1e-8).sqrt().mean((1, 2, 3))
                std = std.view(1, n // g, 1, 1, 1).expand(g, -1, 1, hh, ww).reshape(n, 1, hh, ww)
            else:
                std = torch.zeros(n, 1, hh, ww)
            h = torch.cat([h, std], dim=1)
        return self.last(h).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)


@dataclass
class TrainState:
    """Training-only state (optimisers, data order), dropped by :meth:`ConditionalGAN.finish_training`."""

    images: torch.Tensor
    labels: torch.Tensor
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    rng: np.random.Generator
    noise: torch.Generator
    steps: int = 0


@dataclass
class ConditionalGAN:
    """Generator, discriminator and EMA generator, with their classes and image shape."""

    config: GANConfig
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    seed: int = 0
    data_name: str = ""
    data_source: str = ""
    """The ``--data`` it was trained on (``fashion-mnist`` or a folder's absolute path): the default
    real data of ``images evaluate`` / ``personalize`` / ``generate --like``."""
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    version: str = ""
    """Content hash of the saved weights (set by save/load), written into every generated image."""

    def __post_init__(self) -> None:
        torch.manual_seed(self.seed)
        n = len(self.classes)
        self.G = Generator(self.config, n, self.shape)
        self.D = Discriminator(self.config, n, self.shape)
        self.G_ema = copy.deepcopy(self.G).eval()
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        self._train: TrainState | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    # -- training (driven by imagegen.training.run_epochs) ------------------------------------

    def init_training(self, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
        """Set up optimisers and the seeded data order; ``images`` uint8 (n, c, h, w)."""
        from retailgan.imagegen.data import to_model_range

        if tuple(images.shape[1:]) != self.shape:
            raise ConfigError(f"images are {images.shape[1:]}, the model expects {self.shape}")
        cfg = self.config
        self._train = TrainState(
            images=to_model_range(images),
            labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            opt_g=torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
            opt_d=torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2)),
            rng=np.random.default_rng(seed),
            noise=torch.Generator().manual_seed(seed),
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        st = self._train
        if st is None:
            raise ConfigError("call init_training first")
        cfg = self.config
        n = len(st.images)
        per_epoch = cfg.images_per_epoch or n
        order = np.concatenate([st.rng.permutation(n) for _ in range(math.ceil(per_epoch / n))])[:per_epoch]
        bs = cfg.batch_size
        self.G.train()
        self.D.train()
        sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
        batches = 0
        n_batches = max(per_epoch // bs, 1)
        for b in range(n_batches):
            idx = torch.from_numpy(order[b * bs : (b + 1) * bs])
            x, y = st.images[idx], st.labels[idx]
            m = len(idx)
            # D step(s): hinge loss on real vs detached fakes of the same classes.
            for _ in range(cfg.d_steps):
                z = torch.randn(m, cfg.z_dim, generator=st.noise)
                with torch.no_grad():
                    fake = self.G(z, y)
                d_real, d_fake = self.D(x, y), self.D(fake, y)
                loss_d = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
                st.opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                st.opt_d.step()
            # G step: fakes of random classes (uniform), so every class keeps getting gradient.
            z = torch.randn(m, cfg.z_dim, generator=st.noise)
            yg = torch.randint(0, self.n_classes, (m,), generator=st.noise)
            if cfg.mode_seeking > 0 and m >= 2:
                half = m // 2
                yg[half : 2 * half] = yg[:half]  # pairs: same class, different noise
            fake = self.G(z, yg)
            loss_g = -self.D(fake, yg).mean()
            if cfg.mode_seeking > 0 and m >= 2:
                img_diff = (fake[:half] - fake[half : 2 * half]).abs().mean((1, 2, 3))
                z_diff = (z[:half] - z[half : 2 * half]).abs().mean(1)
                loss_g = loss_g + cfg.mode_seeking / ((img_diff / z_diff).mean() + 1e-5)
            st.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            st.opt_g.step()
            st.steps += 1
            self._update_ema(st.steps)
            sums["loss_d"] += loss_d.item()
            sums["loss_g"] += loss_g.item()
            sums["d_real"] += d_real.mean().item()
            sums["d_fake"] += d_fake.mean().item()
            batches += 1
        self.refresh_ema_stats(seed=epoch)
        return {k: v / batches for k, v in sums.items()} | {"steps": float(st.steps)}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = self.config.ema_decay if step > self.config.ema_start else 0.0
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            pe.lerp_(p, 1.0 - decay)

    @torch.no_grad()
    def refresh_ema_stats(self, seed: int = 0, batches: int = 8, batch_size: int = 256) -> None:
        """Re-estimate the EMA generator's batch-norm statistics on fresh samples (cumulative average)."""
        gen = torch.Generator().manual_seed(10_000 + seed)
        bns = [m for m in self.G_ema.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        self.G_ema.train()
        for _ in range(batches):
            z = torch.randn(batch_size, self.config.z_dim, generator=gen)
            y = torch.randint(0, self.n_classes, (batch_size,), generator=gen)
            self.G_ema(z, y)
        self.G_ema.eval()

    def finish_training(self) -> None:
        self._train = None
        self.G.eval()
        self.D.eval()

    # -- sampling -----------------------------------------------------------------------------

    def noise(self, n: int, seed: int) -> torch.Tensor:
        """``n`` latent vectors, reproducible from ``seed``."""
        return torch.randn(n, self.config.z_dim, generator=torch.Generator().manual_seed(int(seed)))

    @torch.no_grad()
    def generate(
        self,
        labels: np.ndarray | torch.Tensor | list[int],
        z: torch.Tensor | None = None,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> torch.Tensor:
        """Images in [-1, 1], (n, c, h, w), from the EMA generator; ``z`` defaults to ``noise(n, seed)``."""
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ConfigError(f"class labels must be in 0..{self.n_classes - 1}")
        if z is None:
            z = self.noise(len(y), seed)
        out = [self.G_ema(z[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]
        return torch.cat(out) if out else torch.empty(0, *self.shape)

    # -- persistence --------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            for k, v in module.state_dict().items():
                out[f"{prefix}.{k}"] = v.detach().clone().contiguous()
        return out

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generator": GENERATOR_NAME,
            "retailgan_version": __version__,
            "version": self.version,
            "config": self.config.to_dict(),
            "classes": list(self.classes),
            "shape": list(self.shape),
            "seed": self.seed,
            "data": self.data_name,
            "data_source": self.data_source,
            "train_seconds": self.train_seconds,
            "history": self.history,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``model.json`` + ``arrays.safetensors`` into directory ``path`` (each file atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp_arrays = tempfile.mkstemp(prefix=f".{ARRAYS_FILE}.", dir=path)
        os.close(fd)
        try:
            save_file(self.state_tensors(), tmp_arrays)
            os.chmod(tmp_arrays, file_mode())
            digest = hashlib.sha256(Path(tmp_arrays).read_bytes()).hexdigest()[:12]
            self.version = f"{GENERATOR_NAME}-{digest}"
            write_text_atomic(path / META_FILE, json.dumps(self.meta(), indent=1))
            os.replace(tmp_arrays, path / ARRAYS_FILE)
        except BaseException:
            Path(tmp_arrays).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConditionalGAN:
        """Load a model saved by :meth:`save` (no pickle: JSON + safetensors)."""
        from safetensors.torch import load_file

        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise ModelFileError(f"{meta_path}: missing (not a retailgan image model directory)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(f"{meta_path}: not a retailgan image model (format {meta.get('format')!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(f"{meta_path}: unsupported format_version {meta.get('format_version')!r}")
        try:
            config = dict(meta["config"])
            # Files written before these options existed were trained without them.
            config.setdefault("mode_seeking", 0.0)
            config.setdefault("minibatch_std", False)
            config.setdefault("cond_bn", False)
            model = cls(
                GANConfig.from_dict(config),
                tuple(meta["classes"]),
                tuple(meta["shape"]),  # type: ignore[arg-type]
                seed=int(meta.get("seed", 0)),
                data_name=str(meta.get("data", "")),
                data_source=str(meta.get("data_source", "")),
                history=list(meta.get("history", [])),
                train_seconds=float(meta.get("train_seconds", 0.0)),
                version=str(meta.get("version", "")),
            )
        except KeyError as exc:
            raise ModelFileError(f"{meta_path}: missing field {exc}") from None
        try:
            tensors = load_file(str(path / ARRAYS_FILE))
        except FileNotFoundError:
            raise ModelFileError(f"{path / ARRAYS_FILE}: missing") from None
        except Exception as exc:  # safetensors raises its own error types on corrupt files
            raise ModelFileError(f"{path / ARRAYS_FILE}: corrupt ({exc})") from None
        for prefix, module in (("G", model.G), ("D", model.D), ("G_ema", model.G_ema)):
            part = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            try:
                module.load_state_dict(part)
            except RuntimeError as exc:
                raise ModelFileError(f"{path / ARRAYS_FILE}: {prefix} weights do not fit the config ({exc})") from None
        model.G.eval()
        model.D.eval()
        model.G_ema.eval()
        return model


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t
