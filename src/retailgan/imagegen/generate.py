"""Training entry point, generation by category, and generation "like" given images (latent inversion)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from retailgan.errors import ConfigError
from retailgan.imagegen import DEFAULT_TRUNCATION
from retailgan.imagegen.data import FASHION_MNIST, ImageSet, load_images, to_model_range, to_uint8
from retailgan.imagegen.model import ConditionalGAN, GANConfig
from retailgan.imagegen.provenance import image_grid, provenance, save_png
from retailgan.imagegen.training import LoopOptions, run_epochs

log = logging.getLogger(__name__)

DRY_RUN_IMAGES = 256
GRID_PER_CLASS = 8


def fixed_grid(model: ConditionalGAN, per_class: int = GRID_PER_CLASS, seed: int = 12345) -> np.ndarray:
    """A uint8 grid: one row per class, the same ``per_class`` noise vectors in every row."""
    z = model.noise(per_class, seed).repeat(model.n_classes, 1)
    y = np.repeat(np.arange(model.n_classes), per_class)
    return image_grid(to_uint8(model.generate(y, z=z)), rows=model.n_classes)


def save_grid(model: ConditionalGAN, path: Path, seed: int = 12345, **extra: object) -> Path:
    grid = fixed_grid(model, seed=seed)
    meta = provenance(
        model.meta()["generator"], model.version or "unsaved", seed, classes=",".join(model.classes), **extra
    )
    return save_png(grid, path, meta)


@dataclass
class TrainResult:
    model: ConditionalGAN
    model_dir: Path
    grids: list[Path]
    data: ImageSet


def train_gan(
    data: str | Path,
    out: str | Path,
    *,
    epochs: int = 20,
    seed: int = 0,
    dry_run: bool = False,
    params: dict[str, Any] | None = None,
    time_budget_s: float | None = None,
    num_threads: int = 1,
    progress: bool = False,
) -> TrainResult:
    """Train the conditional GAN on ``data`` and save it to ``out`` with a fixed-noise grid per epoch.

    ``--dry-run``: one short epoch on the first 256 images (the whole code path, in seconds).
    """
    ds = load_images(data, "train")
    if len(ds.classes) < 2:
        raise ConfigError(f"{data}: a conditional GAN needs at least 2 categories, found {len(ds.classes)}")
    params = dict(params or {})
    if dry_run:
        rng = np.random.default_rng(seed)
        ds = ds.subset(np.sort(rng.permutation(len(ds))[: min(DRY_RUN_IMAGES, len(ds))]))
        epochs = 1
        params.setdefault("batch_size", 32)
        params.setdefault("images_per_epoch", 64)
    cfg = GANConfig.from_dict({**params, "epochs": epochs})
    out = Path(out)
    source = FASHION_MNIST if str(data) == FASHION_MNIST else str(Path(data).resolve())
    model = ConditionalGAN(cfg, ds.classes, ds.shape, seed=seed, data_name=ds.name, data_source=source)
    grids: list[Path] = []

    def on_epoch(epoch: int, logged: dict[str, float]) -> None:
        grids.append(save_grid(model, out / "samples" / f"epoch-{epoch:03d}.png", epoch=epoch))

    run_epochs(
        model,
        ds.images,
        ds.labels,
        LoopOptions(
            epochs=cfg.epochs,
            seed=seed,
            num_threads=num_threads,
            time_budget_s=time_budget_s,
            checkpoint_dir=out,
            progress=progress,
            on_epoch=on_epoch,
        ),
    )
    model.save(out)
    grids.append(save_grid(model, out / "samples" / "final.png"))
    return TrainResult(model, out, grids, ds)


# -- generation ---------------------------------------------------------------------------------


def generate_images(
    model: ConditionalGAN, label: int, n: int, seed: int, truncation: float = DEFAULT_TRUNCATION
) -> np.ndarray:
    """``n`` uint8 images of class ``label`` from noise seeded by ``seed``, scaled by ``truncation``."""
    return to_uint8(model.generate(np.full(n, label), z=truncation * model.noise(n, seed)))


def invert(
    model: ConditionalGAN,
    images: np.ndarray,
    label: int,
    *,
    steps: int = 200,
    restarts: int = 8,
    lr: float = 0.05,
    prior: float = 1e-3,
    seed: int = 0,
) -> tuple[torch.Tensor, np.ndarray]:
    """Latent vectors whose class-``label`` images best reproduce ``images`` (uint8 (k, c, h, w)).

    Optimises ``restarts`` random starts per image with Adam on pixel MSE plus a small Gaussian
    prior ``prior * |z|^2 / dim`` (keeps z where the generator was trained); returns the best z per
    image and its reconstruction error (MSE in [-1, 1] units).
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != model.shape:
        raise ConfigError(f"images to invert must be (k, {model.shape}), got {images.shape}")
    k = len(images)
    target = to_model_range(images).repeat_interleave(restarts, dim=0)
    y = torch.full((k * restarts,), int(label), dtype=torch.long)
    z = model.noise(k * restarts, seed).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    G = model.G_ema
    for p in G.parameters():
        p.requires_grad_(False)
    for _ in range(steps):
        err = F.mse_loss(G(z, y), target, reduction="none").flatten(1).mean(1)
        loss = (err + prior * z.pow(2).mean(1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = F.mse_loss(G(z, y), target, reduction="none").flatten(1).mean(1).view(k, restarts)
        best = err.argmin(1)
        zs = z.detach().view(k, restarts, -1)[torch.arange(k), best]
        return zs, err[torch.arange(k), best].numpy()


def generate_like(
    model: ConditionalGAN,
    images: np.ndarray,
    label: int,
    n: int,
    *,
    spread: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` class-``label`` images around the latent inversions of ``images``.

    Each output is ``z_i + spread * eps`` for the inversion ``z_i`` of one of the given images
    (cycling through them), with ``eps`` ~ N(0, I) seeded by ``seed``; the small spread keeps
    the likeness and varies details. Returns the uint8 images and the inversion errors.
    """
    zs, err = invert(model, images, label, seed=seed)
    base = zs[np.arange(n) % len(zs)]
    z = base + spread * model.noise(n, seed + 1)
    return to_uint8(model.generate(np.full(n, label), z=z)), err
