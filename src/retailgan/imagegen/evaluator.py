"""Offline quality of generated images: an evaluator CNN trained on real images and metrics in its feature space.

No pretrained network can be downloaded here, so the Inception network of FID / KID is replaced
by a small CNN trained on the real training split; its 128-d penultimate layer is the feature
space for every distribution metric:

* Fréchet distance (FD, Heusel et al. 2017) between Gaussian fits, overall and per class;
* KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, mean over subsets;
* precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020), k-NN
  balls with k = 5;
* GAN-test: the evaluator's accuracy on generated images with their intended classes;
* GAN-train: a classifier of the same architecture trained on generated images only, tested on
  real test images (Shmelkov et al., ECCV 2018);
* a nearest-neighbour copy check of generated images against the training images (pixels).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retailgan import progress
from retailgan.errors import ConfigError, ModelFileError
from retailgan.fileio import atomic_write
from retailgan.imagegen.data import to_model_range
from retailgan.models.base import torch_threads

EVAL_FORMAT = "retailgan-image-evaluator"


class EvaluatorNet(nn.Module):
    """Two conv blocks (32, 64 channels, max-pooling) and a 128-d feature layer, then class logits."""

    def __init__(self, channels: int, size: tuple[int, int], n_classes: int, feature_dim: int = 128) -> None:
        super().__init__()
        h, w = size
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), feature_dim),
            nn.ReLU(inplace=True),
        )
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.body(x)))


@dataclass
class Evaluator:
    """A trained evaluator network with its classes, image shape and measured test accuracy."""

    net: EvaluatorNet
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    test_accuracy: float = float("nan")
    train_seconds: float = 0.0
    epochs: int = 0
    seed: int = 0

    @classmethod
    def new(cls, classes: tuple[str, ...], shape: tuple[int, int, int], seed: int = 0) -> Evaluator:
        torch.manual_seed(seed)
        return cls(EvaluatorNet(shape[0], shape[1:], len(classes)), tuple(classes), tuple(shape), seed=seed)  # type: ignore[arg-type]

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 1000) -> np.ndarray:
        """128-d features of uint8 images (array) or model-range tensors."""
        return self._apply(images, self.net.features, batch_size)

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray | torch.Tensor, batch_size: int = 1000) -> np.ndarray:
        return self._apply(images, lambda x: F.softmax(self.net(x), dim=1), batch_size)

    def predict(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.predict_proba(images).argmax(1)

    def accuracy(self, images: np.ndarray | torch.Tensor, labels: np.ndarray) -> float:
        return float((self.predict(images) == np.asarray(labels)).mean())

    def _apply(self, images, fn, batch_size: int) -> np.ndarray:
        self.net.eval()
        x = images if isinstance(images, torch.Tensor) else to_model_range(images)
        if len(x) == 0:
            return np.zeros((0, 0), np.float32)
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": EVAL_FORMAT,
            "classes": list(self.classes),
            "shape": list(self.shape),
            "test_accuracy": self.test_accuracy,
            "train_seconds": self.train_seconds,
            "epochs": self.epochs,
            "seed": self.seed,
        }
        for name, write in (
            (
                "arrays.safetensors",
                lambda p: save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, p),
            ),
            ("model.json", lambda p: Path(p).write_text(json.dumps(meta, indent=1), encoding="utf-8")),
        ):
            atomic_write(path / name, write)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Evaluator:
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFileError(f"{path / 'model.json'}: missing (not an evaluator directory)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{path / 'model.json'}: not valid JSON ({exc})") from None
        if meta.get("format") != EVAL_FORMAT:
            raise ModelFileError(f"{path / 'model.json'}: not an image evaluator (format {meta.get('format')!r})")
        ev = cls.new(tuple(meta["classes"]), tuple(meta["shape"]), int(meta.get("seed", 0)))
        try:
            ev.net.load_state_dict(load_file(str(path / "arrays.safetensors")))
        except FileNotFoundError:
            raise ModelFileError(f"{path / 'arrays.safetensors'}: missing") from None
        except Exception as exc:
            raise ModelFileError(f"{path / 'arrays.safetensors'}: unreadable or does not fit ({exc})") from None
        ev.net.eval()
        ev.test_accuracy = float(meta.get("test_accuracy", float("nan")))
        ev.train_seconds = float(meta.get("train_seconds", 0.0))
        ev.epochs = int(meta.get("epochs", 0))
        return ev


def train_classifier(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    classes: tuple[str, ...],
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    num_threads: int = 1,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Evaluator:
    """Train an :class:`EvaluatorNet` (Adam, cross-entropy, seeded) and measure it on ``test`` if given."""
    x = images if isinstance(images, torch.Tensor) else to_model_range(images)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"need as many labels as images (got {len(x)} images, {len(y)} labels)")
    shape = tuple(x.shape[1:])
    t0 = time.perf_counter()
    with torch_threads(num_threads):
        ev = Evaluator.new(classes, shape, seed)  # type: ignore[arg-type]
        opt = torch.optim.Adam(ev.net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * -(-len(x) // batch_size))
        rng = np.random.default_rng(seed)
        with progress.steps("train the quality evaluator", epochs, "epoch") as steps:
            for epoch in range(1, epochs + 1):
                ev.net.train()
                order = torch.from_numpy(rng.permutation(len(x)))
                for i in range(0, len(x), batch_size):
                    idx = order[i : i + batch_size]
                    loss = F.cross_entropy(ev.net(x[idx]), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                steps.done(epoch, f"last batch loss {loss.item():.3f}")
        ev.net.eval()
        ev.epochs = epochs
        ev.train_seconds = time.perf_counter() - t0
        if test is not None:
            ev.test_accuracy = ev.accuracy(*test)
    return ev


# -- distribution metrics -------------------------------------------------------------------------


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (rows = samples)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ConfigError("the Fréchet distance needs at least 2 samples per set")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr sqrt(S1 S2) = sum of sqrt(eigenvalues of S1^1/2 S2 S1^1/2), a symmetric PSD matrix: stable even
    # when the covariances are singular (fewer samples than dimensions).
    w1, v1 = np.linalg.eigh(s1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def kid(a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (mean, std over subsets): unbiased MMD^2, kernel (x.y / d + 1)^3."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ConfigError("KID needs at least 2 samples per set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(mmd - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def _knn_radii(x: torch.Tensor, k: int, chunk: int = 2000) -> torch.Tensor:
    """Distance of every row of ``x`` to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself at distance 0
    return torch.cat(out)


def precision_recall_density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int = 2000
) -> dict[str, float]:
    """Improved precision / recall (Kynkäänniemi 2019) and density / coverage (Naeem 2020) with k-NN balls."""
    r = torch.from_numpy(np.asarray(real, np.float32))
    f = torch.from_numpy(np.asarray(fake, np.float32))
    if len(r) <= k or len(f) <= k:
        raise ConfigError(f"precision/recall need more than k={k} samples per set")
    rr, fr = _knn_radii(r, k, chunk), _knn_radii(f, k, chunk)
    in_real = torch.zeros(len(f), dtype=torch.bool)
    density = torch.zeros(len(f))
    nearest_fake = torch.full((len(r),), float("inf"))
    for i in range(0, len(f), chunk):
        d = torch.cdist(f[i : i + chunk], r)  # fake x real
        inside = d <= rr[None, :]
        in_real[i : i + chunk] = inside.any(1)
        density[i : i + chunk] = inside.sum(1).float()
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    in_fake = torch.zeros(len(r), dtype=torch.bool)
    for i in range(0, len(r), chunk):
        d = torch.cdist(r[i : i + chunk], f)
        in_fake[i : i + chunk] = (d <= fr[None, :]).any(1)
    return {
        "precision": float(in_real.float().mean()),
        "recall": float(in_fake.float().mean()),
        "density": float(density.sum() / (k * len(f))),
        "coverage": float((nearest_fake <= rr).float().mean()),
    }


def nearest_train_distance(queries: np.ndarray, train: np.ndarray, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel RMS distance (pixels in [0, 1]) of each uint8 query to its nearest training image, and its index."""
    q = torch.from_numpy(np.asarray(queries, np.float32).reshape(len(queries), -1) / 255.0)
    t = torch.from_numpy(np.asarray(train, np.float32).reshape(len(train), -1) / 255.0)
    tn = (t * t).sum(1)
    dists, idx = [], []
    for i in range(0, len(q), chunk):
        qc = q[i : i + chunk]
        d2 = (qc * qc).sum(1, keepdim=True) + tn[None, :] - 2.0 * qc @ t.T
        v, j = d2.min(1)
        dists.append(v.clamp_min(0).div(q.shape[1]).sqrt())
        idx.append(j)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy()


def compare_sets(
    evaluator: Evaluator,
    real_feats: np.ndarray,
    real_labels: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """FD (overall and per class), KID, precision/recall/density/coverage and evaluator accuracy of ``images``
    (uint8, with intended ``labels``) against the real reference features."""
    feats = evaluator.features(images)
    per_class = {}
    for c, name in enumerate(evaluator.classes):
        a, b = feats[labels == c], real_feats[real_labels == c]
        per_class[name] = frechet_distance(a, b) if len(a) > 1 and len(b) > 1 else float("nan")
    kid_mean, kid_std = kid(feats, real_feats, seed=seed)
    out = {
        "n": len(images),
        "fd": frechet_distance(feats, real_feats),
        "fd_per_class": per_class,
        "kid": kid_mean,
        "kid_std": kid_std,
        "accuracy": evaluator.accuracy(images, labels),
    }
    out.update(precision_recall_density_coverage(real_feats, feats))
    return out


@dataclass
class CopyCheck:
    """Nearest-training-image distances of generated images beside those of real test images."""

    threshold: float
    generated_min: float
    generated_median: float
    generated_below_threshold: int
    real_test_min: float
    real_test_median: float
    real_test_below_threshold: int
    real_test_p01: float
    generated_below_real_p01: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def copy_check(generated: np.ndarray, real_test: np.ndarray, train: np.ndarray, threshold: float = 0.05) -> CopyCheck:
    """Near-copy check: a generated image is a near-copy when its per-pixel RMS distance to the nearest
    training image is below ``threshold`` (pixels in [0, 1]). Real test images give the reference
    (Fashion-MNIST itself holds near-duplicates across its splits)."""
    dg, _ = nearest_train_distance(generated, train)
    dr, _ = nearest_train_distance(real_test, train)
    p01 = float(np.quantile(dr, 0.01))
    return CopyCheck(
        threshold=threshold,
        generated_min=float(dg.min()),
        generated_median=float(np.median(dg)),
        generated_below_threshold=int((dg < threshold).sum()),
        real_test_min=float(dr.min()),
        real_test_median=float(np.median(dr)),
        real_test_below_threshold=int((dr < threshold).sum()),
        real_test_p01=p01,
        generated_below_real_p01=float((dg < p01).mean()),
    )
