"""Personalised product images: a customer's preference in the evaluator's feature space, and a latent search.

Preference (per category ``c``): a linear direction in the evaluator's 128-d feature space,
``w_c = mean f(liked images of c) - mean f(catalogue images of c)``, normalised to unit length.
A candidate image ``x`` scores ``s(x) = w_c . (f(x) - mean f(catalogue of c)) / sd_c`` where
``sd_c`` is the standard deviation of the catalogue's own scores: the average catalogue image of
the category scores 0 and the unit is "catalogue standard deviations".

Search (as in DVBPR, Kang et al., ICDM 2017): maximise over latent vectors ``z`` with the
category fixed in the generator's input

    s(G(z, c)) + realism * D(G(z, c), c) + category * log p_evaluator(c | G(z, c)) - prior * |z|^2 / dim

by Adam from several random starts; the best ``n`` end points are returned.

Held-out customers for benchmarking (:func:`define_customers`) are drawn from the real *test*
split, which neither the GAN nor the evaluator saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from retailgan.errors import ConfigError
from retailgan.imagegen.data import ImageSet, to_model_range, to_uint8
from retailgan.imagegen.evaluator import Evaluator
from retailgan.imagegen.model import ConditionalGAN


@dataclass
class Preference:
    """A customer's fitted taste within one category."""

    label: int
    direction: np.ndarray
    center: np.ndarray
    scale: float

    def score_features(self, feats: np.ndarray) -> np.ndarray:
        return (np.asarray(feats) - self.center) @ self.direction / self.scale

    def score(self, evaluator: Evaluator, images: np.ndarray) -> np.ndarray:
        return self.score_features(evaluator.features(images))


def fit_preference(
    evaluator: Evaluator,
    liked: np.ndarray,
    catalogue: np.ndarray,
    label: int,
    *,
    catalogue_features: np.ndarray | None = None,
) -> Preference:
    """Preference of a customer who liked ``liked`` (uint8 images of class ``label``) against the category's
    ``catalogue`` (uint8 real images of the same class). ``catalogue_features``: the catalogue's evaluator
    features when already computed (a service computes them once per category, not per customer)."""
    if len(liked) == 0:
        raise ConfigError("a preference needs at least one liked image")
    if len(catalogue) < 2:
        raise ConfigError("a preference needs at least two catalogue images of the category")
    fl = evaluator.features(liked)
    fc = evaluator.features(catalogue) if catalogue_features is None else catalogue_features
    center = fc.mean(0)
    d = fl.mean(0) - center
    norm = float(np.linalg.norm(d))
    if norm == 0.0:
        raise ConfigError("the liked images do not differ from the catalogue average; no preference to fit")
    d = d / norm
    scale = float(((fc - center) @ d).std()) or 1.0
    return Preference(label, d.astype(np.float32), center.astype(np.float32), scale)


@dataclass
class SearchSettings:
    """Latent search: ``starts`` random starts, ``steps`` Adam steps (sized for < 1 s on one CPU thread)."""

    starts: int = 8
    steps: int = 20
    lr: float = 0.1
    realism: float = 0.5
    category: float = 1.0
    prior: float = 1.0


def personalise(
    model: ConditionalGAN,
    evaluator: Evaluator,
    pref: Preference,
    n: int = 4,
    *,
    seed: int = 0,
    settings: SearchSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images of ``pref.label`` that the preference scores highest; also their scores."""
    s = settings or SearchSettings()
    if n > s.starts:
        raise ConfigError(f"n={n} exceeds the {s.starts} search starts")
    G, D, net = model.G_ema, model.D, evaluator.net
    for module in (G, D, net):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
    w = torch.from_numpy(pref.direction)
    center = torch.from_numpy(pref.center)
    y = torch.full((s.starts,), pref.label, dtype=torch.long)
    z = model.noise(s.starts, seed).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=s.lr)

    def objective(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = G(z, y)
        feats = net.features(x)
        score = (feats - center) @ w / pref.scale
        logp = F.log_softmax(net.head(feats), dim=1)[:, pref.label]
        total = score + s.realism * D(x, y) + s.category * logp - s.prior * z.pow(2).mean(1)
        return total, score, x

    for _ in range(s.steps):
        total, _, _ = objective(z)
        opt.zero_grad(set_to_none=True)
        (-total.sum()).backward()
        opt.step()
    with torch.no_grad():
        total, score, x = objective(z)
        best = torch.argsort(total, descending=True)[:n]
        return to_uint8(x[best]), score[best].numpy()


# -- held-out customers ---------------------------------------------------------------------------


@dataclass
class Customer:
    """A held-out customer: liked (fitting) and held-out liked test-split images per category."""

    id: str
    labels: list[int]
    liked: dict[int, np.ndarray] = field(default_factory=dict)
    """Per category: indices into the test split used to fit the preference."""
    held_out: dict[int, np.ndarray] = field(default_factory=dict)
    """Per category: further indices of the same taste, used only to check the fitted preference."""


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25) -> np.ndarray:
    centers = x[rng.choice(len(x), k, replace=False)]
    assign = np.zeros(len(x), dtype=np.int64)
    for _ in range(iters):
        d = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
        assign = d.argmin(1)
        for j in range(k):
            if (assign == j).any():
                centers[j] = x[assign == j].mean(0)
    return assign


def define_customers(
    test: ImageSet,
    evaluator: Evaluator,
    *,
    n_customers: int = 20,
    styles: int = 4,
    liked: int = 20,
    held_out: int = 20,
    seed: int = 0,
) -> list[Customer]:
    """Held-out customers from the real test split.

    Every category's test images are split into ``styles`` k-means clusters of their evaluator
    features (a "style": e.g. dark long-sleeved vs light short-sleeved shirts). Customer ``k``
    likes category ``k mod C`` (and, for ``k >= C``, also category ``(k + 3) mod C``, or ``(k + 1) mod C``
    with fewer than 4 categories); within each
    of its categories it has one style (a cluster drawn at random) and has liked ``liked`` random
    images of that cluster; ``held_out`` other images of the same cluster are kept aside.
    """
    rng = np.random.default_rng(seed)
    feats = evaluator.features(test.images)
    n_classes = len(test.classes)
    clusters: dict[int, list[np.ndarray]] = {}
    for c in range(n_classes):
        idx = np.flatnonzero(test.labels == c)
        assign = _kmeans(feats[idx].astype(np.float64), styles, rng)
        clusters[c] = [idx[assign == j] for j in range(styles)]
    customers = []
    for k in range(n_customers):
        first, second = k % n_classes, (k + 3) % n_classes
        if second == first:  # fewer than 4 categories
            second = (k + 1) % n_classes
        labels = [first] + ([second] if k >= n_classes else [])
        cust = Customer(id=f"fmnist-{k}", labels=labels)
        for c in labels:
            big = [members for members in clusters[c] if len(members) >= liked + held_out]
            if not big:
                raise ConfigError(f"category {test.classes[c]}: no style cluster with {liked + held_out} images")
            members = rng.permutation(big[rng.integers(len(big))])
            cust.liked[c] = np.sort(members[:liked])
            cust.held_out[c] = np.sort(members[liked : liked + held_out])
        customers.append(cust)
    return customers


def average_image(images: np.ndarray) -> np.ndarray:
    """The pixel-wise mean of uint8 images, as one uint8 image (1, c, h, w)."""
    return to_uint8(to_model_range(images).mean(0, keepdim=True))


def evaluate_customers(
    model: ConditionalGAN,
    evaluator: Evaluator,
    train: ImageSet,
    test: ImageSet,
    customers: list[Customer],
    *,
    n: int = 4,
    n_random: int = 64,
    seed: int = 0,
    settings: SearchSettings | None = None,
) -> dict:
    """Personalised vs random generated vs average catalogue image, per (customer, category).

    The catalogue of a category is its real *training* images; preferences are fitted on the
    customer's liked test images only.
    """
    import time

    rows = []
    cat_feats: dict[int, np.ndarray] = {}
    for cust in customers:
        for c in cust.labels:
            catalogue = train.images[train.labels == c]
            if c not in cat_feats:
                cat_feats[c] = evaluator.features(catalogue)
            pref = fit_preference(evaluator, test.images[cust.liked[c]], catalogue, c, catalogue_features=cat_feats[c])
            t0 = time.perf_counter()
            images, _ = personalise(model, evaluator, pref, n, seed=seed, settings=settings)
            seconds = time.perf_counter() - t0
            random_images = to_uint8(model.generate(np.full(n_random, c), seed=seed + 7))
            scores = pref.score(evaluator, images)
            random_scores = pref.score(evaluator, random_images)
            rows.append(
                {
                    "customer": cust.id,
                    "category": train.classes[c],
                    "personalised": float(scores.mean()),
                    "random_generated": float(random_scores.mean()),
                    "random_generated_best_of_n": float(np.sort(random_scores)[-n:].mean()),
                    "average_catalogue_image": float(pref.score(evaluator, average_image(catalogue))[0]),
                    "catalogue_mean": float(pref.score_features(cat_feats[c]).mean()),
                    "held_out_liked": float(pref.score(evaluator, test.images[cust.held_out[c]]).mean()),
                    "category_kept": float((evaluator.predict(images) == c).mean()),
                    "random_category_kept": float((evaluator.predict(random_images) == c).mean()),
                    "seconds": seconds,
                }
            )
    keys = [k for k in rows[0] if k not in ("customer", "category")]
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    summary["median_seconds"] = float(np.median([r["seconds"] for r in rows]))
    summary["wins_vs_random"] = int(sum(r["personalised"] > r["random_generated"] for r in rows))
    summary["wins_vs_average_image"] = int(sum(r["personalised"] > r["average_catalogue_image"] for r in rows))
    summary["pairs"] = len(rows)
    return {"summary": summary, "rows": rows}
