"""Product image data: Fashion-MNIST IDX files, or a retailer's folder laid out ``category/*.png|jpg``.

Images are held as ``uint8`` arrays ``(n, channels, height, width)`` (0 = black, 255 = white, as
stored); models see them scaled to [-1, 1] by :func:`to_tensor_range`.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retailgan.errors import ConfigError, IngestError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FASHION_MNIST = "fashion-mnist"


@dataclass(frozen=True)
class ImageSet:
    """Labelled images: ``images`` uint8 (n, c, h, w), ``labels`` int64 (n,), ``classes`` names by label."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str = "images"
    paths: tuple[str, ...] | None = None
    """Source file of each image (folder data sets only)."""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (n, c, h, w), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels shape {self.labels.shape} does not match {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def class_index(self, category: str | int) -> int:
        """Label of a category given by name (case-insensitive) or number."""
        if isinstance(category, int) or str(category).isdigit():
            idx = int(category)
            if not 0 <= idx < len(self.classes):
                raise ConfigError(f"category {idx} out of range 0..{len(self.classes) - 1}")
            return idx
        return class_index(self.classes, str(category))

    def subset(self, idx: np.ndarray) -> ImageSet:
        paths = None if self.paths is None else tuple(self.paths[i] for i in idx)
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name, paths)


def class_index(classes: tuple[str, ...] | list[str], category: str | int) -> int:
    """Label of ``category`` (a name, case-insensitive, or a number) among ``classes``."""
    text = str(category).strip()
    if text.isdigit():
        idx = int(text)
        if not 0 <= idx < len(classes):
            raise ConfigError(f"category {idx} out of range 0..{len(classes) - 1}")
        return idx
    lowered = [c.lower() for c in classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise ConfigError(f"unknown category {text!r}; known: {', '.join(classes)}")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, EOFError) as exc:
        raise IngestError(f"not a readable IDX file ({exc})", path=path) from None
    if len(raw) < 8:
        raise IngestError("truncated IDX header", path=path)
    (found,) = struct.unpack(">i", raw[:4])
    if found != magic:
        raise IngestError(f"IDX magic {found}, expected {magic}", path=path)
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise IngestError(f"IDX body has {data.size} bytes, header says {dims}", path=path)
    return data.reshape(dims)


def load_fashion_mnist(root: str | Path, split: str = "train") -> ImageSet:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000) from the IDX files in ``root``."""
    root = Path(root)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz", 2051)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 2049)
    if len(images) != len(labels):
        raise IngestError(f"{len(images)} images but {len(labels)} labels", path=root)
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise IngestError(f"label {labels.max()} outside 0..9", path=root / f"{prefix}-labels-idx1-ubyte.gz")
    return ImageSet(
        np.ascontiguousarray(images[:, None]), labels.astype(np.int64), FASHION_MNIST_CLASSES, f"fashion-mnist-{split}"
    )


def load_image_folder(root: str | Path, *, grayscale: bool | None = None) -> ImageSet:
    """A folder ``root/<category>/*.png|jpg``: one class per sub-folder (sorted by name).

    Rejects, naming the offending file or folder: a missing or empty root, a category folder
    without images, files that are not images, and images of different sizes. ``grayscale``:
    convert to one channel (default: when every image is grayscale) or RGB.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such image folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ConfigError(f"{root}: no category folders (expected {root}/<category>/*.png|jpg)")
    loaded: list[tuple[int, Path, Image.Image]] = []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ConfigError(f"{folder}: empty category folder (no images)")
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise IngestError(f"not an image file (expected {', '.join(IMAGE_SUFFIXES)})", path=f)
            try:
                with Image.open(f) as im:
                    im.load()
                    loaded.append((label, f, im.copy()))
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise IngestError(f"not a readable image ({exc})", path=f) from None
    first_label, first_path, first = loaded[0]
    for _, path, im in loaded:
        if im.size != first.size:
            raise IngestError(
                f"image size {im.size[0]}x{im.size[1]} differs from {first.size[0]}x{first.size[1]} "
                f"of {first_path} (all images must have one size)",
                path=path,
            )
    if grayscale is None:
        grayscale = all(im.mode in ("L", "1", "I;16", "I") for _, _, im in loaded)
    mode = "L" if grayscale else "RGB"
    arrays = []
    for _, _, im in loaded:
        a = np.asarray(im.convert(mode), dtype=np.uint8)
        arrays.append(a[None] if grayscale else a.transpose(2, 0, 1))
    return ImageSet(
        np.stack(arrays),
        np.asarray([lab for lab, _, _ in loaded], dtype=np.int64),
        tuple(f.name for f in folders),
        root.name,
        tuple(str(p) for _, p, _ in loaded),
    )


def load_images(source: str | Path, split: str = "train", shared_root: str | Path | None = None) -> ImageSet:
    """The ``split`` of ``fashion-mnist`` (from ``shared_root``, default ``../shared/data/fashion-mnist``), of a
    folder of IDX files, or of an image folder (``DIR/train/<category>``, ``DIR/test/<category>``, or just
    ``DIR/<category>`` for both)."""
    text = str(source)
    if text == FASHION_MNIST:
        root = Path(shared_root) if shared_root else default_fashion_mnist_root()
        return load_fashion_mnist(root, split)
    path = Path(source)
    if (path / "train-images-idx3-ubyte.gz").is_file():
        return load_fashion_mnist(path, split)
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    # A folder with train/ and test/ sub-folders (each category/*.png) has its own split; a plain
    # category folder serves as both (its evaluation then compares against the training images).
    if (path / "train").is_dir() and (path / "test").is_dir():
        return load_image_folder(path / split)
    return load_image_folder(path)


BUNDLED_FASHION_MNIST = Path(__file__).resolve().parents[3] / "data" / "fashion-mnist"
"""The subset bundled with the repository: 300 training and 100 test images per class."""


FASHION_MNIST_ENV = "RETAILGAN_FASHION_MNIST"
"""Environment variable: a folder with Fashion-MNIST's ``*-idx*-ubyte.gz`` files, used instead."""


def default_fashion_mnist_root() -> Path:
    """``$RETAILGAN_FASHION_MNIST`` when set; else the full set in ``../shared/data/fashion-mnist``
    (next to the repository, or to the working directory) when present, else the subset bundled in
    ``data/fashion-mnist``."""
    if os.environ.get(FASHION_MNIST_ENV):
        return Path(os.environ[FASHION_MNIST_ENV]).resolve()
    for shared in (Path(__file__).resolve().parents[3].parent, Path.cwd().parent):
        root = shared / "shared" / "data" / "fashion-mnist"
        if (root / "train-images-idx3-ubyte.gz").is_file():
            return root
    return BUNDLED_FASHION_MNIST


def describe_source(source: str | Path) -> str:
    """Where ``--data`` is read from, in words (``fashion-mnist`` may be the full set or the subset)."""
    if str(source) != FASHION_MNIST:
        return str(Path(source).resolve())
    root = default_fashion_mnist_root()
    if os.environ.get(FASHION_MNIST_ENV):
        return f"fashion-mnist: {root} (${FASHION_MNIST_ENV})"
    if root == BUNDLED_FASHION_MNIST:
        return f"fashion-mnist: the subset bundled in {root} (../shared/data/fashion-mnist, the full set, is absent)"
    return f"fashion-mnist: the full set in {root}"


def read_image_file(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image file as uint8 (c, h, w), converted to ``shape``'s channels and resized to its size."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise IngestError(f"not a readable image ({exc})", path=path) from None
    return a[None] if c == 1 else a.transpose(2, 0, 1)


def to_model_range(images: np.ndarray):
    """uint8 images -> float32 torch tensor in [-1, 1]."""
    import torch

    return torch.from_numpy(np.array(images, copy=True)).float().div_(127.5).sub_(1.0)


def to_uint8(x) -> np.ndarray:
    """Model output in [-1, 1] (tensor or array) -> uint8 images."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
