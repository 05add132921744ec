"""Provenance of generated images: PNG text metadata on every file, a visible "generated" label for display.

Every PNG written by :func:`save_png` carries ``generator``, ``model_version``, ``seed``,
``synthetic`` = ``"true"`` (plus optional fields such as the category), so a generated image can
be recognised wherever it travels; :func:`read_provenance` reads them back. :func:`label_generated`
stamps a visible banner for images shown to people.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from retailgan.fileio import atomic_write

REQUIRED_KEYS = ("generator", "model_version", "seed", "synthetic")


def _to_pil(image: np.ndarray):
    """uint8 (c, h, w) or (h, w) -> PIL image."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {a.dtype}")
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    return Image.fromarray(a, mode="L" if a.ndim == 2 else "RGB")


def provenance(generator: str, model_version: str, seed: int, **extra: object) -> dict[str, str]:
    """The metadata dict every generated image carries."""
    meta = {"generator": generator, "model_version": model_version, "seed": str(int(seed)), "synthetic": "true"}
    meta.update({k: str(v) for k, v in extra.items() if v is not None})
    return meta


def save_png(image, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a uint8 image (array (c, h, w) / (h, w), or a PIL image) as PNG with text ``metadata``, atomically."""
    from PIL import Image, PngImagePlugin

    im = image if isinstance(image, Image.Image) else _to_pil(image)
    info = PngImagePlugin.PngInfo()
    for k, v in (metadata or {}).items():
        info.add_text(str(k), str(v))
    return atomic_write(path, lambda tmp: im.save(tmp, format="PNG", pnginfo=info), suffix=".png")


def read_provenance(path: str | Path) -> dict[str, str]:
    """The PNG text chunks of ``path`` (empty when it has none)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return dict(getattr(im, "text", {}) or {})


def is_synthetic(path: str | Path) -> bool:
    """True when the PNG says it was generated (``synthetic: true``)."""
    return read_provenance(path).get("synthetic") == "true"


def label_generated(image, text: str = "generated", scale: int = 1):
    """A copy of the image (uint8 array or PIL image) with a visible banner ``text`` along its bottom edge.

    Small images (e.g. 28x28) are first enlarged ``scale`` times (nearest neighbour; default: to at
    least 112 px) so that the label stays readable. Returns a PIL RGB image.
    """
    from PIL import Image, ImageDraw, ImageFont

    im = image if isinstance(image, Image.Image) else _to_pil(image)
    im = im.convert("RGB")
    if scale <= 1 and min(im.size) < 112:
        scale = -(-112 // min(im.size))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    band = bottom - top + 4
    draw.rectangle([0, im.height - band, im.width, im.height], fill=(200, 30, 30))
    draw.text(((im.width - (right - left)) // 2, im.height - band + 2 - top), text, fill=(255, 255, 255), font=font)
    return im


def image_grid(images: np.ndarray, rows: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """uint8 (n, c, h, w) -> one uint8 (c, H, W) grid with ``rows`` rows, white padding, optional upscaling."""
    n, c, h, w = images.shape
    cols = -(-n // rows)
    grid = np.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    return grid
