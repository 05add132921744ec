"""Tiny synthetic product-image folders: three categories with distinct, learnable shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CATEGORIES = ("bag", "shirt", "shoe")


def synthetic_images(n_per_class: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 1, 28, 28): class 0 a filled square, 1 a horizontal band, 2 a vertical band, with noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(len(CATEGORIES)):
        for _ in range(n_per_class):
            a = rng.integers(0, 40, size=(28, 28)).astype(np.int64)
            o = rng.integers(-2, 3)
            if c == 0:
                a[8 + o : 20 + o, 8 + o : 20 + o] += 200
            elif c == 1:
                a[10 + o : 16 + o, 2:26] += 200
            else:
                a[2:26, 10 + o : 16 + o] += 200
            images.append(np.clip(a, 0, 255).astype(np.uint8)[None])
            labels.append(c)
    return np.stack(images), np.asarray(labels)


def write_folder(root: Path, n_per_class: int = 24, seed: int = 0) -> Path:
    images, labels = synthetic_images(n_per_class, seed)
    for i, (im, c) in enumerate(zip(images, labels, strict=True)):
        folder = root / CATEGORIES[c]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im[0], mode="L").save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread, as in training: the machine's cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "products")


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny GAN trained for one short epoch on the synthetic folder (shared by a module's tests)."""
    from retailgan.imagegen.generate import train_gan

    root = tmp_path_factory.mktemp("tiny")
    data = write_folder(root / "products")
    res = train_gan(data, root / "model", epochs=1, seed=3, params=TINY_PARAMS)
    return res


TINY_PARAMS = {
    "g_channels": 8,
    "d_channels": 8,
    "z_dim": 8,
    "embed_dim": 4,
    "batch_size": 16,
    "ema_start": 0,
    "images_per_epoch": 0,
}
