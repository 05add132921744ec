"""The product-feature GAN: customer history + noise -> product vector -> nearest catalogue products.

Products live in one feature space (:mod:`retailgan.features`: title text, category, price band,
collaborative block, the last imputed from text for products without interactions). A linear
**item tower** maps that space to ``emb_dim`` unit vectors ``e_i``, the retrieval space
(``id_embeddings=True`` adds learned per-product vectors for products with training
interactions; off by default: it did not help on Online Retail validation, see
docs/benchmarks-featgan.md).

* **History encoder**: the mean feature vector of the customer's history and the mean of its
  ``recent`` most recent products, plus ``log(1 + n)``, through an MLP -> ``h``.
* **Generator** ``G(h, z)``: an MLP from ``[h, z]``, ``z ~ N(0, noise_scale^2 I)``, to a unit
  vector in the retrieval space.
* **Discriminator** ``D(h, e)``: a spectral-normalised MLP scoring (history, product vector)
  pairs; real pairs are the product bought next, fake ones G's output. Hinge loss (or the
  non-saturating BCE loss, ``loss="bce"``); two time-scale updates (``lr_d`` > ``lr_g``).
* **Auxiliary retrieval loss** (``aux_weight``): softmax cross-entropy of the true next product
  among the catalogue (all products, or ``max_negatives`` sampled ones) with logits
  ``<G(h, z), e_i> / temperature``. G minimises ``aux_weight * aux + adv_weight * adversarial``;
  ``adversarial=False`` drops D (the ablation reported in docs/benchmarks-featgan.md).

Training targets come from the temporal order of the training pairs only: for each pair
``(u, j)`` the history is the customer's products first bought strictly before ``j`` (products of
the same basket are never each other's history); pairs with fewer than ``min_history`` earlier
products are not targets. ``cold_dropout`` replaces, each epoch, the collaborative block of that
share of the products by its text-imputed value, so the tower learns to place new products.

Inference: the noise's mean (``z = 0``) gives one deterministic vector per customer; scores are
cosine similarities to every product. ``recommend(..., samples=S, diversity=lam)`` draws the mean
plus ``S - 1`` noise samples (seeded by ``sample_seed``; with ``history_keep < 1`` each draw also
conditions on a random part of the history), retrieves each one's nearest products
through the index (exact or faiss, ``index``), and merges them greedily (maximal marginal
relevance): relevance is the best similarity to any generated vector (``slate_merge="max"``), or
that similarity minus the vector's own best over the candidates (``"calibrated"``: every
vector's favourite product scores 0, so vectors far from every product still contribute), and
each pick is penalised by ``lam`` times its largest similarity to the products already picked;
``diversify="dpp"`` instead picks greedily the list of largest relevance-weighted volume in the
retrieval space (a determinantal point process; :mod:`retailgan.models.diversify`).
New customers: :meth:`FeatureGAN.recommend_histories` takes lists of product ids; an empty history (or only
unknown ids) falls back to the popularity ranking (distinct training customers per product),
flagged ``known=False``, as for unknown customers. New products: :meth:`FeatureGAN.add_products`.
Explanations: :meth:`FeatureGAN.explain` lists, per recommended product, the history products
nearest to it in the retrieval space.

**Noise that matters** (``mode_seeking``): with the auxiliary loss alone every noise draw is
pulled towards the same next product, so the generator learns to ignore ``z`` and ``S`` samples
repeat one vector. ``mode_seeking = w > 0`` adds the mode-seeking regulariser of Mao et al.
(CVPR 2019): for two noise draws per example, ``w / (ratio + 1e-5)`` with
``ratio = mean|G(h, z1) - G(h, z2)| / mean|z1 - z2|`` (means over the batch and coordinates), so
G is rewarded for mapping different noise to different product vectors. On Online Retail the
draws then land away from every product, so only the calibrated merge lets them into a slate
(docs/benchmarks-featgan.md, section 3).

**Specialised samples** (``wta``, ``mcl_eps``): with ``train_samples = K > 1`` the default loss is
the likelihood under the mixture of the K vectors; ``wta`` replaces it by multiple choice learning
(Guzman-Rivera et al., NIPS 2012): per example only the vector closest to the true next product
(highest softmax likelihood) is trained on it, auxiliary and adversarial terms alike, so the
noise learns to point at different interests. ``mcl_eps > 0`` relaxes it (the best vector gets
weight ``1 - mcl_eps``, the others share ``mcl_eps``) so no vector drifts away untrained.

**Early-sales prior for new products** (:meth:`FeatureGAN.set_item_prior`, weight
``cold_prior``): a product launched after training has no interactions, only its catalogue
record, and featgan places it by its features. Once it has sold for a while, its sales count
``c_i`` is known at recommendation time. The blend (:func:`blend_item_prior`) is a product of
experts: featgan's softmax ``p(i | h) ~ exp(cos(g, e_i) / temperature)`` times the prior
``(1 + c_i) ** cold_prior``, i.e. the score ``cos + cold_prior * temperature * log(1 + c_i)``
(in cosine units). ``cold_prior = 0`` is featgan alone; a large weight ranks by sales, with
featgan breaking ties. Products without a given count get ``c = 0``.
:meth:`FeatureGAN.set_item_sales` personalises the count: given the early sales as (customer,
product) pairs, ``c_i(u) = sum over the buyers v of i of exp((cos(g_u, g_v) - 1) / prior_kernel)``
(:func:`buyer_weighted_counts`), where ``g`` is featgan's generated vector of a customer's
training history: a buyer who resembles the customer counts fully, a dissimilar one little
(``prior_kernel = 0``: every buyer counts 1, plain sales). The weights are meant to be chosen on
held-out purchases (benchmarks/featgan_retail.py, part ``cold``, picks them inside the sales
window; on Online Retail the chosen blends are level with ranking the new products by their
sales, not better: docs/benchmarks-featgan.md, section 2). The prior is runtime state, not saved
with the model.

**Learned trend-following** (``trend_days = w > 0``): instead of a prior weight chosen by hand,
the model learns, jointly with the generator, how much each customer follows what is selling
now. Every training example (a next purchase at day ``d``) sees each product's number of distinct
buyers in the ``w`` days before ``d`` (``r_i(d)``, from the training pairs; the target's own day
excluded), and the softmax logit becomes ``cos(g, e_i) / temperature + b_i(h) * log(1 + r_i(d))``
with ``b_i(h) = beta(h) + kappa_i * beta_cold(h)``: two weights read from the customer's history
encoding (a linear head, starting at 0), the second one for products placed by their catalogue
record alone (``kappa_i = 1``: no training interaction, or dropped out by ``cold_dropout`` in
that epoch), whose cosine knows nothing of how well they sell. The cosine part is therefore
trained on what the recent sales do not explain. At scoring time the score is
``cos + temperature * b_i(h) * log(1 + r_i)`` with ``r_i`` the recent sales
counts: by default those of the last ``w`` days of the training data (saved with the model);
:meth:`FeatureGAN.set_recent_sales` replaces them (e.g. every day in a deployment, or a new
product's first-week sales).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from retailgan.data.dataset import InteractionDataset, ItemInfo, Vocabulary
from retailgan.errors import ConfigError, extra_needed
from retailgan.features.space import FeatureSpace, FeatureSpaceConfig
from retailgan.index.topk import ExactIndex, TopKIndex, faiss_available, make_index
from retailgan.models.base import (
    SCORE_BLOCK_ELEMENTS,
    IterativeRecommender,
    ModelConfig,
    Recommendations,
    TrainingOptions,
)
from retailgan.models.diversify import dpp, mmr
from retailgan.models.gan.state import load_module_arrays
from retailgan.models.recent import item_counts
from retailgan.persistence import check_indices, check_nonnegative, check_offsets, take

LOSSES = ("hinge", "bce")
MERGES = ("max", "calibrated")
DIVERSIFIERS = ("mmr", "dpp")
INDEXES = ("exact", "hnsw", "ivf")
SCORE_BATCH = 1024
TREND_TABLE_MAX = 1 << 26  # days x products entries of the dense recent-sales table (256 MiB)


@dataclass(frozen=True)
class FeatureGANConfig(ModelConfig):
    """Feature-GAN hyperparameters (feature space, networks, losses, inference)."""

    text_dim: int = 64
    collab_dim: int = 32
    price_bands: int = 8
    w_text: float = 1.0
    w_category: float = 0.5
    w_price: float = 0.25
    w_collab: float = 1.0
    emb_dim: int = 64
    hidden: int = 256
    noise_dim: int = 16
    noise_scale: float = 1.0
    recent: int = 5
    """Most recent history products averaged separately from the whole history."""
    min_history: int = 1
    adversarial: bool = True
    loss: str = "hinge"
    adv_weight: float = 0.1
    aux_weight: float = 1.0
    temperature: float = 0.1
    max_negatives: int = 8192
    """Catalogues up to this size get the full softmax; larger ones a uniform sample of this size."""
    id_embeddings: bool = False
    """Learned per-product vectors on top of the features, for products with training
    interactions (see :class:`_Nets`); False: products are placed by their features only."""
    train_samples: int = 1
    """Generated vectors per training example. Above 1 the auxiliary loss is the likelihood of
    the true next product under the mixture of the K vectors' softmaxes (the noise's mean plus
    K - 1 draws), which rewards vectors that cover different interests."""
    wta: bool = False
    """Winner-take-all across the ``train_samples`` vectors (multiple choice learning, Guzman-Rivera
    et al. 2012): per example only the vector that gives the true next product the highest
    likelihood gets the auxiliary and adversarial gradients, instead of the mixture likelihood, so
    different noise specialises to different interests. Needs ``train_samples > 1``."""
    mcl_eps: float = 0.0
    """Relaxed winner-take-all (with ``wta``): the best vector gets weight ``1 - mcl_eps``, each
    other one ``mcl_eps / (train_samples - 1)``; 0: the hard winner-take-all. In [0, 1)."""
    cold_dropout: float = 0.2
    ema: float = 0.0
    """Decay of an exponential moving average of the networks' weights (Polyak averaging, with
    Adam's bias correction), updated after every generator step; the average is what validates,
    scores and is saved, the optimiser keeps stepping the raw weights. It damps the step-to-step
    drift of where products without interactions land in the retrieval space. 0: off (the last
    weights). In [0, 1)."""
    mode_seeking: float = 0.0
    """Weight of the mode-seeking regulariser (module docstring); 0: off. Needs noise_dim > 0."""
    cold_prior: float = 0.0
    """Exponent of the sales prior ``(1 + c_i) ** cold_prior`` set by :meth:`FeatureGAN.set_item_prior`
    (module docstring); 0: the prior is ignored."""
    prior_kernel: float = 0.0
    """Temperature of the buyer-similarity kernel of :meth:`FeatureGAN.set_item_sales`; 0: every
    buyer counts 1 (plain sales counts)."""
    trend_days: int = 0
    """Learned trend-following (module docstring): days of recent sales each example sees;
    0 turns it off."""
    lr_g: float = 1e-3
    lr_d: float = 4e-3
    d_steps: int = 1
    weight_decay: float = 1e-6
    batch_size: int = 512
    epochs: int = 30
    patience: int = 3
    eval_every: int = 1
    samples: int = 1
    """Default number of generated vectors merged by ``recommend``."""
    diversity: float = 0.0
    """Default MMR diversity weight of the merge (0: plain relevance)."""
    slate_merge: str = "max"
    """Default relevance of a product in a slate of S vectors: ``"max"``, its best cosine to any
    of them; ``"calibrated"``, its best cosine minus that vector's best cosine over the
    candidates, so that every vector's favourite product scores 0 (ties: by the best cosine)."""
    diversify: str = "mmr"
    """How ``diversity`` re-ranks a list: ``"mmr"`` (maximal marginal relevance) or ``"dpp"``
    (greedy MAP of a determinantal point process on the retrieval space, relevance read as
    softmax logits; :mod:`retailgan.models.diversify`)."""
    sample_seed: int = 0
    history_keep: float = 1.0
    """Draws after the first encode a random part of the history: each product kept with this
    probability (at least the most recent one), so that the S vectors of a slate come from
    different parts of what the customer bought (1: every draw sees the whole history and only
    the noise differs)."""
    index: str = "exact"

    def validate(self) -> None:
        checks = [
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (self.index in INDEXES, f"index must be one of {INDEXES}"),
            (self.slate_merge in MERGES, f"slate_merge must be one of {MERGES}"),
            (self.diversify in DIVERSIFIERS, f"diversify must be one of {DIVERSIFIERS}"),
            (min(self.emb_dim, self.hidden, self.recent, self.min_history, self.batch_size) >= 1, "sizes >= 1"),
            (self.noise_dim >= 0 and self.noise_scale >= 0, "noise_dim, noise_scale >= 0"),
            (self.adv_weight >= 0 and self.aux_weight >= 0, "adv_weight, aux_weight >= 0"),
            (self.aux_weight > 0 or self.adversarial, "aux_weight=0 needs adversarial=True"),
            (self.temperature > 0 and self.max_negatives >= 1, "temperature > 0, max_negatives >= 1"),
            (0.0 <= self.cold_dropout <= 1.0, "cold_dropout in [0, 1]"),
            (0.0 <= self.ema < 1.0, "ema in [0, 1)"),
            (
                min(self.mode_seeking, self.cold_prior, self.prior_kernel) >= 0,
                "mode_seeking, cold_prior, prior_kernel >= 0",
            ),
            (self.mode_seeking == 0 or self.noise_dim > 0, "mode_seeking > 0 needs noise_dim > 0"),
            (self.trend_days >= 0, "trend_days >= 0"),
            (self.lr_g > 0 and self.lr_d > 0 and self.weight_decay >= 0, "lr > 0, weight_decay >= 0"),
            (self.d_steps >= 1 and self.train_samples >= 1, "d_steps, train_samples >= 1"),
            (self.train_samples == 1 or self.noise_dim > 0, "train_samples > 1 needs noise_dim > 0"),
            (not self.wta or self.train_samples > 1, "wta needs train_samples > 1"),
            (0.0 <= self.mcl_eps < 1.0 and (self.wta or self.mcl_eps == 0), "mcl_eps in [0, 1), > 0 needs wta"),
            (self.epochs >= 1 and self.patience >= 1 and self.eval_every >= 1, "epochs, patience, eval_every >= 1"),
            (self.samples >= 1 and 0.0 <= self.diversity <= 1.0, "samples >= 1, diversity in [0, 1]"),
            (0.0 < self.history_keep <= 1.0, "history_keep in (0, 1]"),
        ]
        self.require("featgan", checks)
        if self.index != "exact" and not faiss_available():  # fail now, not at the first recommend
            raise extra_needed(f"featgan: index={self.index!r}", "ann", "faiss-cpu is not installed")

    def feature_config(self) -> FeatureSpaceConfig:
        return FeatureSpaceConfig(
            text_dim=self.text_dim,
            collab_dim=self.collab_dim,
            price_bands=self.price_bands,
            w_text=self.w_text,
            w_category=self.w_category,
            w_price=self.w_price,
            w_collab=self.w_collab,
        )


class _Nets(nn.Module):
    """Item tower, history encoder and generator (what inference needs).

    With ``id_embeddings`` the tower adds a learned per-product vector to the projection of the
    features (kept at zero, by ``id_mask``, for products without training interactions, so new
    products are placed by their features alone), and the encoder adds learned per-product
    vectors averaged over the history and over its recent part (zero for new products)."""

    def __init__(self, d_feat: int, n_items: int, cfg: FeatureGANConfig) -> None:
        super().__init__()
        self.tower = nn.Linear(d_feat, cfg.emb_dim)
        self.encoder = nn.Linear(2 * d_feat + 1, cfg.hidden)
        self.generator = nn.Sequential(
            nn.Linear(cfg.hidden + cfg.noise_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.emb_dim)
        )
        self.noise_dim = cfg.noise_dim
        self.ids = cfg.id_embeddings
        if cfg.trend_days:  # the customer's weight on recent sales (module docstring)
            self.trend = nn.Linear(cfg.hidden, 2)
        if self.ids:
            self.item_id = nn.Parameter(torch.zeros(n_items, cfg.emb_dim))
            self.hist_all = nn.EmbeddingBag(n_items, cfg.hidden, mode="mean", _weight=torch.zeros(n_items, cfg.hidden))
            self.hist_recent = nn.EmbeddingBag(
                n_items, cfg.hidden, mode="mean", _weight=torch.zeros(n_items, cfg.hidden)
            )
            self.register_buffer("id_mask", torch.zeros(n_items))

    def embed(self, x: torch.Tensor, idx: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit vectors of products with features ``x`` (rows: products ``idx``, default all)."""
        out = self.tower(x)
        if self.ids:
            idx = torch.arange(len(x)) if idx is None else idx
            m = (self.id_mask if mask is None else mask)[idx]
            out = out + self.item_id[idx] * m[:, None]
        return F.normalize(out, dim=-1)

    def encode(self, hist: torch.Tensor, bags: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        pre = self.encoder(hist)
        if self.ids and bags is not None:
            flat_all, off_all, flat_recent, off_recent = bags
            pre = pre + self.hist_all(flat_all, off_all) + self.hist_recent(flat_recent, off_recent)
        return F.relu(pre)

    def trend_weight(self, h: torch.Tensor) -> torch.Tensor:
        """``(n, 2)`` weights on ``log(1 + recent sales)`` of history encodings ``h``: for every
        product, and added for products placed by their record alone."""
        return self.trend(h)

    def generate(self, h: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if self.noise_dim:
            z = h.new_zeros(len(h), self.noise_dim) if z is None else z
            h = torch.cat([h, z], dim=1)
        return F.normalize(self.generator(h), dim=-1)


def _bags(items: np.ndarray, start: np.ndarray, cut: np.ndarray, recent: int) -> tuple[torch.Tensor, ...]:
    """EmbeddingBag inputs of histories ``items[start : start + cut]`` and of their last
    ``recent`` products: ``(flat_all, offsets_all, flat_recent, offsets_recent)``."""

    def flat(s: np.ndarray, n: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        pos = np.repeat(s - offsets, n) + np.arange(int(n.sum()))
        return torch.from_numpy(items[pos].astype(np.int64)), torch.from_numpy(offsets)

    n_recent = np.minimum(cut, recent)
    return (*flat(start, cut), *flat(start + cut - n_recent, n_recent))


def _discriminator(hidden: int, emb_dim: int, generator: torch.Generator) -> nn.Sequential:
    layers = [nn.Linear(hidden + emb_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden // 2), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(hidden // 2, 1))
    net = nn.Sequential(*layers)
    _init(net, generator)  # before spectral_norm: afterwards ``weight`` is a computed tensor
    # spectral_norm draws its power-iteration vectors from the global RNG: seed a fork.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        for i, layer in enumerate(net):
            if isinstance(layer, nn.Linear):
                net[i] = nn.utils.parametrizations.spectral_norm(layer)
    return net


def _mode_seeking_loss(g1: torch.Tensor, g2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Mode-seeking term of Mao et al. (CVPR 2019): ``1 / (ratio + 1e-5)`` with
    ``ratio = mean|g1 - g2| / mean|z1 - z2|``; minimising it spreads the outputs of different noise."""
    ratio = (g1 - g2).abs().mean() / (z1 - z2).abs().mean().clamp_min(1e-8)
    return 1.0 / (ratio + 1e-5)


def blend_item_prior(scores: np.ndarray, counts: np.ndarray, weight: float, temperature: float) -> np.ndarray:
    """featgan scores (cosines, products on the last axis) blended with a sales prior.

    Product of experts: ``exp(cos / temperature) * (1 + counts) ** weight``, returned in cosine
    units, ``scores + weight * temperature * log(1 + counts)``. ``counts`` are per product
    (same last axis; e.g. sales since launch); ``weight = 0`` returns the scores unchanged, and
    ``weight = inf`` is not allowed (rank by ``counts`` directly instead)."""
    counts = np.asarray(counts, np.float64)
    if not np.isfinite(weight) or weight < 0:
        raise ConfigError(f"prior weight must be finite and >= 0, got {weight}")
    if counts.shape[-1:] != np.shape(scores)[-1:] or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ConfigError("counts must be finite, >= 0 and have one entry per product")
    if weight == 0:
        return scores
    return (scores + (weight * temperature) * np.log1p(counts)).astype(np.asarray(scores).dtype, copy=False)


def buyer_weighted_counts(
    g_users: np.ndarray,
    g_buyers: np.ndarray,
    buyer_known: np.ndarray,
    sales: sp.csr_matrix,
    kernel: float,
) -> np.ndarray:
    """``(n_users, n_items)`` sales counts weighted by buyer similarity (see the module docstring).

    ``g_users`` ``(n, d)`` and ``g_buyers`` ``(m, d)``: unit generated vectors; ``sales``: ``(m,
    n_items)`` buyers x products (non-zero: bought). Buyer ``v`` weighs ``exp((cos(g_u, g_v) - 1) /
    kernel)`` for customer ``u``; buyers without a vector (``buyer_known`` False, e.g. customers
    first seen after training) weigh the mean weight of the known buyers for that customer (1 if
    none is known). ``kernel = 0``: every buyer weighs 1."""
    sales = sp.csr_matrix(sales, dtype=np.float64)
    sales.data[:] = 1.0
    if kernel < 0:
        raise ConfigError(f"prior_kernel must be >= 0, got {kernel}")
    if kernel == 0:
        return np.broadcast_to(np.asarray(sales.sum(axis=0)).ravel(), (len(g_users), sales.shape[1])).copy()
    w = np.ones((len(g_users), len(g_buyers)))
    if buyer_known.any():
        wk = np.exp((g_users.astype(np.float64) @ g_buyers[buyer_known].T.astype(np.float64) - 1.0) / kernel)
        w[:, buyer_known] = wk
        w[:, ~buyer_known] = wk.mean(axis=1, keepdims=True)
    return np.asarray(sales.T.dot(w.T).T)


def _init(module: nn.Module, generator: torch.Generator) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)


def _history_part(
    indptr: np.ndarray, items: np.ndarray, keep: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random part of each ordered history: every product kept with probability ``keep``; a
    non-empty history keeps at least its most recent product. Order is preserved."""
    lens = np.diff(indptr)
    row = np.repeat(np.arange(len(lens)), lens)
    kept = rng.random(len(items)) < keep
    none = (np.bincount(row[kept], minlength=len(lens)) == 0) & (lens > 0)
    kept[indptr[1:][none] - 1] = True
    new_indptr = np.concatenate([[0], np.cumsum(np.bincount(row[kept], minlength=len(lens)))]).astype(np.int64)
    return new_indptr, items[kept]


def _ordered_histories(dataset: InteractionDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user product lists in time order: ``(indptr, items, timestamps)`` (ties by item index)."""
    order = np.lexsort((dataset.item_idx, dataset.timestamp, dataset.user_idx))
    counts = np.bincount(dataset.user_idx, minlength=dataset.n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, dataset.item_idx[order].astype(np.int64), dataset.timestamp[order].astype(np.int64)


class FeatureGAN(IterativeRecommender):
    """Feature-space conditional GAN recommender (see the module docstring)."""

    name = "featgan"
    config_class = FeatureGANConfig

    nets: _Nets | None = None
    space: FeatureSpace | None = None
    X: np.ndarray | None = None
    """(n_items, d_feat) product features."""

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "emb_dim": trial.suggest_categorical("emb_dim", [32, 64, 128]),
            "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
            "temperature": trial.suggest_float("temperature", 0.03, 0.3, log=True),
            "lr_g": trial.suggest_float("lr_g", 3e-4, 3e-3, log=True),
            "adv_weight": trial.suggest_float("adv_weight", 0.01, 1.0, log=True),
            "w_collab": trial.suggest_float("w_collab", 0.5, 2.0),
            "recent": trial.suggest_int("recent", 1, 20, log=True),
        }

    @property
    def _cfg(self) -> FeatureGANConfig:
        return self.config  # type: ignore[return-value]

    # -- training -------------------------------------------------------------------------------

    def init_training(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg = self._cfg
        cfg.validate()
        self.clear_item_prior()
        init_gen = torch.Generator().manual_seed(options.seed)
        self._gen = torch.Generator().manual_seed(options.seed + 1)
        self._rng = np.random.default_rng(options.seed)
        item_users = dataset.matrix().T.tocsr()
        info = dataset.item_info
        self.space = FeatureSpace(cfg.feature_config())
        self.X = self.space.fit(info.titles, info.categories, info.prices, item_users, seed=options.seed)
        # What each product with interactions would look like were it new (for cold_dropout).
        self._warm = np.flatnonzero(np.diff(item_users.indptr) > 0)
        imputed = self.space.impute_collab(self.space.collab_text, exclude_self=True)
        self._X_cold = self.X[self._warm].copy()
        self._X_cold[:, self.space.block_slices()["collab"]] = cfg.w_collab * imputed
        self._hist_indptr, self._hist_items, hist_ts = _ordered_histories(dataset)
        self._build_examples(hist_ts)
        if cfg.trend_days:
            self._init_trend(dataset, hist_ts)

        self.nets = _Nets(self.X.shape[1], len(self.X), cfg)
        _init(self.nets, init_gen)
        if cfg.trend_days:  # start as plain featgan: no weight on recent sales
            nn.init.zeros_(self.nets.trend.weight)
            self._cold_items = np.ones(len(self.X), bool)
            self._cold_items[self._warm] = False
        if cfg.id_embeddings:
            self.nets.id_mask[torch.from_numpy(self._warm)] = 1.0
        self._opt_g = torch.optim.Adam(
            self.nets.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999), weight_decay=cfg.weight_decay
        )
        self.D = None
        if cfg.adversarial:
            self.D = _discriminator(cfg.hidden, cfg.emb_dim, init_gen)
            self._opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
        # Weight averaging (``ema``): the running average (from zero, bias-corrected when read, as
        # Adam's moments are, so the random initial weights do not linger in it), its number of
        # steps, and the raw weights while the average is loaded.
        self._ema_params = [torch.zeros_like(p) for p in self.nets.parameters()] if cfg.ema > 0 else None
        self._ema_steps = 0
        self._raw_params = None
        self._invalidate()

    def _build_examples(self, hist_ts: np.ndarray) -> None:
        """Targets ``(position in the ordered pairs, number of earlier products)`` and the
        per-user prefix sums of product features that give every history mean in O(1)."""
        cfg = self._cfg
        indptr = self._hist_indptr
        n_users = len(indptr) - 1
        user_of = np.repeat(np.arange(n_users), np.diff(indptr))
        # Earlier products: those of the same user with a strictly smaller time.
        new_group = np.ones(len(user_of), bool)
        new_group[1:] = (user_of[1:] != user_of[:-1]) | (hist_ts[1:] != hist_ts[:-1])
        first_same = np.maximum.accumulate(np.where(new_group, np.arange(len(user_of)), 0))
        cut = first_same - indptr[user_of]
        keep = cut >= cfg.min_history
        self._ex_pos = np.flatnonzero(keep).astype(np.int64)
        self._ex_cut = cut[keep].astype(np.int64)
        self._ex_start = indptr[user_of[keep]].astype(np.int64)
        feats = self.X[self._hist_items].astype(np.float64)
        self._prefix = np.concatenate([np.zeros((1, feats.shape[1])), np.cumsum(feats, axis=0)])
        if len(self._ex_pos) == 0:
            raise ConfigError("featgan: no training pair has an earlier product of the same customer (min_history)")

    def _init_trend(self, dataset: InteractionDataset, hist_ts: np.ndarray) -> None:
        """Per-day sales (new buyers per product: a training pair is one customer's first time
        with one product); the day of every example; and the recent sales at the end of the
        training data. Cumulated over days (two row lookups per example) when days x products
        fits TREND_TABLE_MAX entries, else kept sparse (memory follows the pairs) and summed
        per batch."""
        day0 = int(dataset.timestamp.min()) // 86400
        days = dataset.timestamp.astype(np.int64) // 86400 - day0
        n_days = int(days.max()) + 1
        self._trend_daily = sp.csr_matrix(
            (np.ones(len(days), np.float32), (days, dataset.item_idx)), shape=(n_days, dataset.n_items)
        )
        self._trend_cum = None
        if (n_days + 1) * dataset.n_items <= TREND_TABLE_MAX:
            # cum[d]: sales on days before d (float32 sums of counts: exact below 2 ** 24).
            cum = np.zeros((n_days + 1, dataset.n_items), np.float32)
            np.cumsum(self._trend_daily.toarray(), axis=0, out=cum[1:])
            self._trend_cum = cum
        self._ex_day = hist_ts[self._ex_pos] // 86400 - day0
        self._recent = self._window_sales(np.array([n_days]))[0].astype(np.float64)

    def _window_sales(self, days: np.ndarray) -> np.ndarray:
        """``(len(days), n_items)`` sales in the ``trend_days`` days before each of ``days``."""
        w = self._cfg.trend_days
        if self._trend_cum is not None:
            return self._trend_cum[days] - self._trend_cum[np.maximum(days - w, 0)]
        out = np.empty((len(days), self._trend_daily.shape[1]), np.float32)
        for r, d in enumerate(days):
            out[r] = self._trend_daily[max(int(d) - w, 0) : int(d)].sum(axis=0).A1
        return out

    def _trend_logits(
        self, h: torch.Tensor, rows: np.ndarray, cand: torch.Tensor | None, cold: np.ndarray
    ) -> torch.Tensor:
        """The trend term of the logits of examples ``rows`` (encodings ``h``) over the
        candidates: ``(beta + kappa_i beta_cold) log(1 + r_i(d))`` with ``r_i(d)`` the sales in
        the ``trend_days`` days before the example's day ``d``; ``cold``: ``kappa`` of the epoch."""
        days, which = np.unique(self._ex_day[rows], return_inverse=True)
        recent = self._window_sales(days).astype(np.float64)  # log in float64: the same bits either path
        log_r = torch.from_numpy(np.log1p(recent).astype(np.float32))[torch.from_numpy(which)]
        kappa = torch.from_numpy(cold.astype(np.float32))
        if cand is not None:
            log_r, kappa = log_r[:, cand], kappa[cand]
        beta = self.nets.trend_weight(h)
        return (beta[:, :1] + beta[:, 1:] * kappa[None, :]) * log_r

    def _history_input(self, start: np.ndarray, cut: np.ndarray) -> torch.Tensor:
        """Encoder input of histories ``items[start : start + cut]`` (prefix sums, no loops)."""
        w = self._cfg.recent
        end = start + cut
        mean_all = (self._prefix[end] - self._prefix[start]) / np.maximum(cut, 1)[:, None]
        r0 = np.maximum(end - w, start)
        mean_recent = (self._prefix[end] - self._prefix[r0]) / np.maximum(end - r0, 1)[:, None]
        size = np.log1p(cut)[:, None]
        return torch.from_numpy(np.concatenate([mean_all, mean_recent, size], axis=1).astype(np.float32))

    def _noise(self, n: int) -> torch.Tensor | None:
        cfg = self._cfg
        if not cfg.noise_dim:
            return None
        return cfg.noise_scale * torch.randn(n, cfg.noise_dim, generator=self._gen)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self._cfg
        assert self.nets is not None and self.X is not None
        self._invalidate()
        if self._raw_params is not None:  # train on from the raw weights, not their average
            self._swap_in(self._raw_params)
            self._raw_params = None
        X_epoch = self.X.copy()
        cold_epoch = self._cold_items.copy() if cfg.trend_days else None
        if cfg.cold_dropout > 0 and len(self._warm):
            pick = self._rng.random(len(self._warm)) < cfg.cold_dropout
            X_epoch[self._warm[pick]] = self._X_cold[pick]
            if cold_epoch is not None:
                cold_epoch[self._warm[pick]] = True
        X_t = torch.from_numpy(X_epoch)
        n_items = len(X_epoch)
        id_mask = None
        if cfg.id_embeddings:
            id_mask = self.nets.id_mask.clone()
            if cfg.cold_dropout > 0 and len(self._warm):
                id_mask[torch.from_numpy(self._warm[pick])] = 0.0
        targets_all = torch.from_numpy(self._hist_items[self._ex_pos])
        logged: dict[str, list[float]] = {"loss_aux": [], "loss_g_adv": [], "loss_d": [], "loss_ms": []}
        self.nets.train()
        for idx in torch.randperm(len(self._ex_pos), generator=self._gen).split(cfg.batch_size):
            i = idx.numpy()
            hist = self._history_input(self._ex_start[i], self._ex_cut[i])
            target = targets_all[idx]
            if n_items <= cfg.max_negatives:
                cand, labels = None, target
            else:  # uniform negatives plus the batch's own targets
                neg = torch.randint(0, n_items, (cfg.max_negatives,), generator=self._gen)
                cand, labels = torch.unique(torch.cat([target, neg]), return_inverse=True)
                labels = labels[: len(target)]
            bags = (
                _bags(self._hist_items, self._ex_start[i], self._ex_cut[i], cfg.recent) if cfg.id_embeddings else None
            )
            h = self.nets.encode(hist, bags)
            E = self.nets.embed(X_t, None, id_mask) if cand is None else self.nets.embed(X_t[cand], cand, id_mask)
            K = cfg.train_samples
            # Learned trend-following: a per-customer weight on the candidates' recent sales.
            trend = self._trend_logits(h, i, cand, cold_epoch) if cfg.trend_days else 0.0
            w_adv = None  # per-vector weights of G's adversarial term (winner-take-all)
            if K == 1:
                g = self.nets.generate(h, self._noise(len(h)))
                loss = cfg.aux_weight * F.cross_entropy(g @ E.T / cfg.temperature + trend, labels)
            else:  # mixture of K generated vectors: the noise's mean and K - 1 draws
                hk = h.repeat_interleave(K, dim=0)
                z = self._noise(len(hk))
                assert z is not None
                z.view(len(h), K, -1)[:, 0] = 0.0
                g = self.nets.generate(hk, z)
                if cfg.trend_days:
                    trend = trend.repeat_interleave(K, dim=0)
                logp = F.log_softmax(g @ E.T / cfg.temperature + trend, dim=1)
                logp = logp.gather(1, labels.repeat_interleave(K)[:, None]).view(len(h), K)
                if cfg.wta:  # per-example weights: 1 - eps on the best vector, eps / (K - 1) on the others
                    best = logp.detach().argmax(dim=1, keepdim=True)
                    w = torch.full_like(logp, cfg.mcl_eps / (K - 1)).scatter_(1, best, 1.0 - cfg.mcl_eps)
                    loss = -cfg.aux_weight * (w * logp).sum(dim=1).mean()
                    w_adv = w.reshape(-1, 1) * K
                else:
                    loss = -cfg.aux_weight * (torch.logsumexp(logp, dim=1) - math.log(K)).mean()
                h = hk
                labels = labels.repeat_interleave(K)
            logged["loss_aux"].append(float(loss.detach()))
            if cfg.mode_seeking > 0:
                h0 = h[:: cfg.train_samples] if cfg.train_samples > 1 else h
                z1, z2 = self._noise(len(h0)), self._noise(len(h0))
                assert z1 is not None and z2 is not None
                loss_ms = _mode_seeking_loss(self.nets.generate(h0, z1), self.nets.generate(h0, z2), z1, z2)
                logged["loss_ms"].append(float(loss_ms.detach()))
                loss = loss + cfg.mode_seeking * loss_ms
            if self.D is not None:
                real = E[labels].detach()
                hd = h.detach()
                self.D.requires_grad_(True)
                for _ in range(cfg.d_steps):
                    d_real = self.D(torch.cat([hd, real], dim=1))
                    d_fake = self.D(torch.cat([hd, g.detach()], dim=1))
                    if cfg.loss == "hinge":
                        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
                    else:
                        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
                    self._opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    self._opt_d.step()
                logged["loss_d"].append(float(loss_d.detach()))
                self.D.requires_grad_(False)
                d_gen = self.D(torch.cat([hd, g], dim=1))
                adv_each = -d_gen if cfg.loss == "hinge" else F.softplus(-d_gen)
                adv = adv_each.mean() if w_adv is None else (w_adv * adv_each).mean()
                logged["loss_g_adv"].append(float(adv.detach()))
                loss = loss + cfg.adv_weight * adv
            self._opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self._opt_g.step()
            if self._ema_params is not None:
                self._ema_steps += 1
                with torch.no_grad():
                    for avg, w in zip(self._ema_params, self.nets.parameters(), strict=True):
                        avg.lerp_(w.detach(), 1.0 - cfg.ema)
        if self._ema_params is not None and self._ema_steps:  # validation, checkpoints, scoring: the average
            self._raw_params = [w.detach().clone() for w in self.nets.parameters()]
            correction = 1.0 - cfg.ema**self._ema_steps
            self._swap_in([avg / correction for avg in self._ema_params])
        self.nets.eval()
        return {k: float(np.mean(v)) for k, v in logged.items() if v}

    def _swap_in(self, weights: list[torch.Tensor]) -> None:
        assert self.nets is not None
        with torch.no_grad():
            for w, new in zip(self.nets.parameters(), weights, strict=True):
                w.copy_(new)

    def finish_training(self) -> None:
        self._ema_params = self._raw_params = None
        self.D = None
        self._opt_g = self._opt_d = None
        self._prefix = self._X_cold = None
        self._ex_pos = self._ex_cut = self._ex_start = None
        self._trend_daily = self._trend_cum = self._ex_day = None
        self._gen = self._rng = None
        self._invalidate()

    # -- retrieval space ------------------------------------------------------------------------

    _E: np.ndarray | None = None
    _index: TopKIndex | None = None

    def _invalidate(self) -> None:
        self._E = None
        self._index = None

    @property
    def item_vectors(self) -> np.ndarray:
        """(n_items, emb_dim) unit vectors of the products in the retrieval space."""
        if self._E is None:
            assert self.nets is not None and self.X is not None
            with torch.no_grad():
                self._E = self.nets.embed(torch.from_numpy(self.X)).numpy().astype(np.float32)
        return self._E

    @property
    def index(self) -> TopKIndex:
        """The product index generated vectors are searched in (built on first use)."""
        if self._index is None:
            kind = self._cfg.index
            self._index = (
                ExactIndex(self._cfg.emb_dim, self.item_vectors)
                if kind == "exact"
                else make_index(kind, self.item_vectors)
            )
        return self._index

    # -- scoring --------------------------------------------------------------------------------

    def _encode_rows(self, indptr: np.ndarray, items: np.ndarray) -> torch.Tensor:
        """History encodings of time-ordered product lists (CSR-like ``indptr`` / ``items``)."""
        assert self.nets is not None and self.X is not None
        feats = self.X[items].astype(np.float64)
        prefix = np.concatenate([np.zeros((1, feats.shape[1])), np.cumsum(feats, axis=0)])
        start, end = indptr[:-1], indptr[1:]
        saved, self._prefix = getattr(self, "_prefix", None), prefix
        try:
            hist = self._history_input(start, end - start)
        finally:
            self._prefix = saved
        bags = _bags(items, start, end - start, self._cfg.recent) if self._cfg.id_embeddings else None
        with torch.no_grad():
            return self.nets.encode(hist, bags)

    def generate_vectors(self, indptr: np.ndarray, items: np.ndarray, samples: int = 1) -> np.ndarray:
        """``(n, samples, emb_dim)`` generated product vectors for ordered histories: the noise's
        mean first, then ``samples - 1`` draws seeded by ``sample_seed`` (deterministic)."""
        return self._generate(indptr, items, samples)[0]

    def _generate(
        self, indptr: np.ndarray, items: np.ndarray, samples: int = 1
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Generated vectors (:meth:`generate_vectors`) and, with ``trend_days``, the
        customers' weights on recent sales (else None)."""
        assert self.nets is not None
        cfg = self._cfg
        h = self._encode_rows(indptr, items)
        out = np.empty((len(h), samples, cfg.emb_dim), np.float32)
        gen = torch.Generator().manual_seed(cfg.sample_seed)
        rng = np.random.default_rng(cfg.sample_seed)
        with torch.no_grad():
            out[:, 0] = self.nets.generate(h, None).numpy()
            for s in range(1, samples):
                z = cfg.noise_scale * torch.randn(len(h), cfg.noise_dim, generator=gen) if cfg.noise_dim else None
                hs = h
                if cfg.history_keep < 1.0:
                    hs = self._encode_rows(*_history_part(indptr, items, cfg.history_keep, rng))
                out[:, s] = self.nets.generate(hs, z).numpy()
            beta = self.nets.trend_weight(h).numpy() if cfg.trend_days else None
        return out, beta

    def trend_weights(self, user_ids: Sequence[object]) -> np.ndarray:
        """``(n, 2)``: each known customer's learned weights on ``log(1 + recent sales)``
        (``trend_days`` models; module docstring), in softmax-logit units: ``beta`` for every
        product and ``beta_cold`` added for products placed by their record alone."""
        self._check_fitted()
        assert self.users is not None
        if not self._cfg.trend_days:
            raise ConfigError("trend_weights: the model was trained with trend_days = 0")
        indptr, items = self._user_rows(self.users.index([str(u) for u in user_ids]))
        beta = self._generate(indptr, items)[1]
        assert beta is not None
        return beta

    def _user_rows(self, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = self._hist_indptr[user_idx], self._hist_indptr[user_idx + 1]
        lens = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        pos = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1])
        return indptr, self._hist_items[pos]

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        user_idx = np.asarray(user_idx, dtype=np.int64)
        out = np.empty((len(user_idx), self.n_items), np.float32)
        for s in range(0, len(user_idx), SCORE_BATCH):
            indptr, items = self._user_rows(user_idx[s : s + SCORE_BATCH])
            out[s : s + SCORE_BATCH] = self._scores_for(indptr, items)
        return out

    def _scores_for(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        G, beta = self._generate(indptr, items)
        g = G[:, 0]
        scores = self._with_prior(g @ self.item_vectors.T, g, beta=beta)
        empty = np.diff(indptr) == 0
        if empty.any():  # no history: the popularity rule, on a scale below any cosine
            scores[empty] = self.fallback_scores() / (1.0 + self.fallback_scores().max()) - 2.0
        return scores

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores for ad-hoc histories (rows of a users x items matrix), no retraining.

        Order: larger values are more recent (pass positions or timestamps); equal values keep
        column order. An empty row gets the popularity ranking (shifted below every cosine)."""
        history = sp.csr_matrix(history, dtype=np.float64)
        if history.shape[1] != self.n_items:
            raise ValueError(f"history has {history.shape[1]} item columns, model has {self.n_items}")
        history.sort_indices()
        items = np.empty(history.nnz, np.int64)
        for r in range(history.shape[0]):
            a, b = history.indptr[r], history.indptr[r + 1]
            items[a:b] = history.indices[a:b][np.argsort(history.data[a:b], kind="stable")]
        return self._scores_for(history.indptr.astype(np.int64), items)

    # -- sales prior ----------------------------------------------------------------------------

    _prior_counts: np.ndarray | None = None
    _prior_weight: float = 0.0

    def set_item_prior(
        self, item_ids: Sequence[object], counts: Sequence[float] | np.ndarray, weight: float | None = None
    ) -> None:
        """Blend a sales prior into every later score and recommendation (module docstring):
        ``cos + weight * temperature * log(1 + count)``, ``weight`` defaulting to the config's
        ``cold_prior``. ``counts`` (>= 0) are per product in ``item_ids`` (e.g. distinct buyers
        of each new product since its launch); other products count 0. Replaces any earlier
        prior; :meth:`clear_item_prior` removes it. Not saved with the model."""
        self._check_fitted()
        assert self.items is not None
        weight = self._cfg.cold_prior if weight is None else float(weight)
        counts = np.asarray(counts, np.float64)
        if counts.shape != (len(item_ids),):
            raise ConfigError(f"set_item_prior: {len(item_ids)} ids but counts of shape {counts.shape}")
        full = np.zeros(self.n_items, np.float64)
        idx = self.items.index(item_ids, kind="item")
        if len(np.unique(idx)) != len(idx):
            raise ConfigError("set_item_prior: repeated product ids")
        full[idx] = counts
        blend_item_prior(np.zeros(self.n_items), full, weight, self._cfg.temperature)  # validates
        self.clear_item_prior()
        self._prior_counts, self._prior_weight = full, weight

    _prior_sales: sp.csr_matrix | None = None
    _prior_buyers: tuple[np.ndarray, np.ndarray] | None = None
    _prior_kernel: float = 0.0

    def set_item_sales(
        self,
        customer_ids: Sequence[object],
        item_ids: Sequence[object],
        weight: float | None = None,
        kernel: float | None = None,
    ) -> None:
        """Like :meth:`set_item_prior`, from early sales given as (customer, product) pairs, each
        product's count personalised by buyer similarity (:func:`buyer_weighted_counts`, kernel
        temperature ``kernel``, default the config's ``prior_kernel``; weight default
        ``cold_prior``). A customer counts once per product; customers unknown to the model
        weigh as an average buyer. Replaces any earlier prior. Not saved with the model."""
        self._check_fitted()
        assert self.items is not None and self.users is not None
        weight = self._cfg.cold_prior if weight is None else float(weight)
        kernel = self._cfg.prior_kernel if kernel is None else float(kernel)
        if len(customer_ids) != len(item_ids):
            raise ConfigError(f"set_item_sales: {len(customer_ids)} customers but {len(item_ids)} products")
        if not np.isfinite(kernel) or kernel < 0:
            raise ConfigError(f"prior_kernel must be finite and >= 0, got {kernel}")
        blend_item_prior(np.zeros(1), np.zeros(1), weight, self._cfg.temperature)  # validates the weight
        idx = self.items.index(item_ids, kind="item")
        buyers, row = np.unique(np.asarray([str(c) for c in customer_ids], dtype=object), return_inverse=True)
        sales = sp.csr_matrix((np.ones(len(idx)), (row, idx)), shape=(len(buyers), self.n_items))
        sales.data[:] = 1.0  # repeated pairs count once
        uidx = self.users.index(list(buyers), missing="negative") if len(buyers) else np.zeros(0, np.int64)
        known = uidx >= 0
        vecs = np.zeros((len(buyers), self._cfg.emb_dim), np.float32)
        if known.any() and kernel > 0:
            indptr, items = self._user_rows(uidx[known])
            vecs[known] = self.generate_vectors(indptr, items)[:, 0]
            known[known] = np.diff(indptr) > 0  # no training history: an average buyer
        self.clear_item_prior()
        self._prior_sales, self._prior_buyers = sales, (vecs, known)
        self._prior_weight, self._prior_kernel = weight, kernel

    def clear_item_prior(self) -> None:
        """Remove the prior of :meth:`set_item_prior` / :meth:`set_item_sales`."""
        self._prior_counts, self._prior_weight = None, 0.0
        self._prior_sales = self._prior_buyers = None
        self._prior_kernel = 0.0

    _recent: np.ndarray | None = None
    _cold_items: np.ndarray | None = None

    def set_recent_sales(self, item_ids: Sequence[object], counts: Sequence[float] | np.ndarray) -> None:
        """Replace the recent sales counts of a ``trend_days`` model (distinct buyers of each
        product in the last ``trend_days`` days; products not listed count 0). Saved with the
        model; the default is the last ``trend_days`` days of the training data."""
        self._check_fitted()
        assert self.items is not None
        if not self._cfg.trend_days:
            raise ConfigError("set_recent_sales: the model was trained with trend_days = 0")
        self._recent = item_counts(self.items, item_ids, counts, "set_recent_sales")

    def _boosted(self) -> np.ndarray | None:
        """Products with a non-zero prior or recent sales (they may rank high far from every
        generated vector)."""
        out = None
        if self._prior_counts is not None:
            out = np.flatnonzero(self._prior_counts > 0)
        elif self._prior_sales is not None:
            out = np.unique(self._prior_sales.indices)
        if self._cfg.trend_days and self._recent is not None:
            recent = np.flatnonzero(self._recent > 0)
            out = recent if out is None else np.union1d(out, recent)
        return out

    def _with_prior(
        self, scores: np.ndarray, g: np.ndarray, idx: np.ndarray | None = None, beta: np.ndarray | None = None
    ) -> np.ndarray:
        """``scores`` (rows: customers with generated vectors ``g`` and trend weights ``beta``;
        columns: products ``idx``, default all) blended with the prior, if one is set, and the
        learned trend term (``trend_days`` models)."""
        counts = None
        if self._prior_counts is not None:
            counts = self._prior_counts if idx is None else self._prior_counts[idx]
        elif self._prior_sales is not None and self._prior_buyers is not None:
            vecs, known = self._prior_buyers
            sales = self._prior_sales if idx is None else self._prior_sales[:, idx]
            counts = buyer_weighted_counts(g, vecs, known, sales, self._prior_kernel)
        if counts is not None:
            scores = blend_item_prior(scores, counts, self._prior_weight, self._cfg.temperature)
        if beta is not None and self._recent is not None and self._cold_items is not None:
            recent = self._recent if idx is None else self._recent[idx]
            kappa = self._cold_items if idx is None else self._cold_items[idx]
            b = beta[:, :1] + beta[:, 1:] * kappa[None, :].astype(np.float32)
            bonus = self._cfg.temperature * b * np.log1p(recent)[None, :]
            scores = (scores + bonus).astype(np.float32)
        return scores

    # -- recommendation -------------------------------------------------------------------------

    def recommend(  # type: ignore[override]
        self,
        user_ids: Sequence[object],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Sequence[object] | Sequence[Sequence[object]] | None = None,
        candidates: Sequence[object] | None = None,
        samples: int | None = None,
        diversity: float | None = None,
        merge: str | None = None,
    ) -> Recommendations:
        """Top-``k`` for known customers (see :meth:`Recommender.recommend`), with slates.

        ``samples`` (default: the config's) generated vectors are merged with MMR weight
        ``diversity`` (default: the config's); ``samples=1, diversity=0`` is the plain ranking
        by cosine to the noise-mean vector. ``merge`` (default: the config's ``slate_merge``):
        how the vectors' cosines make one relevance. Scores are the merged relevance (with
        ``"calibrated"``, <= 0: the gap to the nearest vector's favourite). Candidates come from
        the config's ``index`` (with ``"hnsw"`` / ``"ivf"`` every request goes through faiss)."""
        self._check_fitted()
        assert self.users is not None and self.items is not None and self.seen is not None
        samples, diversity, merge = self._slate_params(samples, diversity, merge)
        if samples == 1 and diversity == 0.0 and self._cfg.index == "exact":
            # Dense exact scores through the shared code path (what evaluation ranks by).
            return super().recommend(user_ids, k, exclude_seen=exclude_seen, exclude=exclude, candidates=candidates)
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        user_ids = [str(u) for u in user_ids]
        uidx = self.users.index(user_ids, missing="negative")
        known = uidx >= 0
        banned = self._banned(len(user_ids), exclude)
        if exclude_seen:
            for r in np.flatnonzero(known):
                banned[r] = np.union1d(banned[r], self.seen[uidx[r]].indices)
        allowed = None if candidates is None else self.items.index(candidates, kind="candidate item")
        top = np.full((len(user_ids), k), -1, np.int64)
        scores = np.full((len(user_ids), k), -np.inf, np.float32)
        rows = np.flatnonzero(known)
        if len(rows):
            indptr, items = self._user_rows(uidx[rows])
            top[rows], scores[rows] = self._rank(
                indptr, items, k, [banned[r] for r in rows], allowed, samples, diversity, merge
            )
        for r in np.flatnonzero(~known):
            top[r], scores[r] = self._popular(k, banned[r], allowed)
        return self._package(user_ids, top, scores, known)

    def _top_k_known(
        self, user_idx: np.ndarray, k: int, banned: sp.csr_matrix, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch ranking as :meth:`recommend` ranks: the dense exact path for the plain ranking
        with the exact index, else retrieval through the index (and slates), in row blocks.
        (Customers without a training history get the popularity ranking here, as in the base
        class; only ``recommend``'s retrieval path would generate a vector for them.)"""
        samples, diversity, merge = self._slate_params(None, None, None)
        if samples == 1 and diversity == 0.0 and self._cfg.index == "exact":
            return super()._top_k_known(user_idx, k, banned, allowed)
        top = np.full((len(user_idx), k), -1, np.int64)
        scores = np.full((len(user_idx), k), -np.inf, np.float32)
        # Exact search scores every product: keep its block as small as the generic path's.
        step = max(1, min(SCORE_BATCH, SCORE_BLOCK_ELEMENTS // self.n_items))
        for a in range(0, len(user_idx), step):
            b = min(a + step, len(user_idx))
            indptr, items = self._user_rows(user_idx[a:b])
            rows = [banned.indices[banned.indptr[r] : banned.indptr[r + 1]] for r in range(a, b)]
            top[a:b], scores[a:b] = self._rank(indptr, items, k, rows, allowed, samples, diversity, merge)
        return top, scores

    def recommend_histories(
        self,
        histories: Sequence[Sequence[object]],
        k: int = 10,
        *,
        exclude_history: bool = True,
        exclude: Sequence[object] | None = None,
        candidates: Sequence[object] | None = None,
        samples: int | None = None,
        diversity: float | None = None,
        merge: str | None = None,
    ) -> Recommendations:
        """Top-``k`` for new customers from ad-hoc histories: lists of product ids, oldest first
        (e.g. the products seen in a session), without retraining.

        Unknown product ids are ignored. A history with no known product gets the popularity
        ranking and ``known=False``. ``user_ids`` of the result are the row numbers."""
        self._check_fitted()
        assert self.items is not None
        samples, diversity, merge = self._slate_params(samples, diversity, merge)
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if isinstance(histories, str) or any(isinstance(h, str) for h in histories):
            raise ConfigError("histories must be a list of lists of product ids")
        rows_items = []
        for h in histories:
            idx = self.items.index(list(h), missing="negative")
            idx = idx[idx >= 0]
            # Keep each product once, at its latest position (the most recent view counts).
            _, last = np.unique(idx[::-1], return_index=True)
            rows_items.append(idx[::-1][np.sort(last)][::-1])
        known = np.array([len(r) > 0 for r in rows_items], dtype=bool)
        banned = self._banned(len(histories), exclude)
        if exclude_history:
            banned = [np.union1d(b, r) for b, r in zip(banned, rows_items, strict=True)]
        allowed = None if candidates is None else self.items.index(candidates, kind="candidate item")
        n = len(histories)
        top = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        rows = np.flatnonzero(known)
        if len(rows):
            lens = [len(rows_items[r]) for r in rows]
            indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            items = np.concatenate([rows_items[r] for r in rows]).astype(np.int64)
            top[rows], scores[rows] = self._rank(
                indptr, items, k, [banned[r] for r in rows], allowed, samples, diversity, merge
            )
        for r in np.flatnonzero(~known):
            top[r], scores[r] = self._popular(k, banned[r], allowed)
        return self._package([str(r) for r in range(n)], top, scores, known)

    def _banned(self, n: int, exclude: Sequence[object] | Sequence[Sequence[object]] | None) -> list[np.ndarray]:
        """Per-row item indices never to recommend (unknown ids ignored), as in the base class."""
        banned = self._exclusions(np.full(n, -1), np.zeros(n, bool), False, exclude)
        return [banned.indices[banned.indptr[r] : banned.indptr[r + 1]] for r in range(n)]

    def _popular(self, k: int, banned: np.ndarray, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The popularity fallback (distinct training customers; ties by index) for one row."""
        pop = self.fallback_scores().astype(np.float64).copy()
        pop[banned] = -np.inf
        if allowed is not None:
            mask = np.full(len(pop), -np.inf)
            mask[allowed] = 0.0
            pop += mask
        order = np.lexsort((np.arange(len(pop)), -pop))[:k]
        order = order[np.isfinite(pop[order])]
        top = np.full(k, -1, np.int64)
        scores = np.full(k, -np.inf, np.float32)
        top[: len(order)], scores[: len(order)] = order, pop[order]
        return top, scores

    def _rank(
        self,
        indptr: np.ndarray,
        items: np.ndarray,
        k: int,
        banned: list[np.ndarray],
        allowed: np.ndarray | None,
        samples: int,
        diversity: float,
        merge: str = "max",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slates for non-empty ordered histories: retrieve each generated vector's nearest
        products (index, or exact over ``allowed``), then merge greedily by MMR."""
        G, beta = self._generate(indptr, items, samples)
        E = self.item_vectors
        n = len(G)
        top = np.full((n, k), -1, np.int64)
        scores = np.full((n, k), -np.inf, np.float32)
        pool_size = k if (samples == 1 and diversity == 0.0) else 3 * k
        if allowed is None:
            extra = max((len(b) for b in banned), default=0)
            _, found = self.index.search(G.reshape(n * samples, -1), min(pool_size + extra, self.n_items))
            found = found.reshape(n, -1)
        # Products with a sales prior may rank high without being near any generated vector.
        boosted = self._boosted()
        for r in range(n):
            if allowed is None:
                pool = np.unique(found[r][found[r] >= 0])
                if boosted is not None:
                    pool = np.union1d(pool, boosted)
                pool = np.setdiff1d(pool, banned[r], assume_unique=True)
            else:
                pool = np.setdiff1d(np.unique(allowed), banned[r])
            if len(pool) == 0:
                continue
            sims = G[r] @ E[pool].T  # (samples, pool)
            if self._prior_counts is not None or self._prior_sales is not None or beta is not None:
                b = None if beta is None else beta[r : r + 1]
                sims = sims + self._with_prior(np.zeros((1, len(pool)), np.float32), G[r, :1], pool, b)
            best = sims.max(axis=0)
            rel = (sims - sims.max(axis=1, keepdims=True)).max(axis=0) if merge == "calibrated" else best
            keep = np.lexsort((pool, -best, -rel))[:pool_size]
            pool, rel = pool[keep], rel[keep]
            sim = E[pool] @ E[pool].T if diversity > 0 else np.zeros((len(pool), len(pool)))
            if self._cfg.diversify == "dpp":
                chosen = dpp(rel, sim, min(k, len(pool)), diversity, self._cfg.temperature)
            else:
                chosen = mmr(rel, sim, min(k, len(pool)), diversity)
            top[r, : len(chosen)] = pool[chosen]
            scores[r, : len(chosen)] = rel[chosen]
        return top, scores

    def _package(
        self, user_ids: Sequence[str], top: np.ndarray, scores: np.ndarray, known: np.ndarray
    ) -> Recommendations:
        assert self.items is not None
        valid = top >= 0
        ids = np.full(top.shape, None, dtype=object)
        ids[valid] = self.items.decode(top[valid])
        return Recommendations(
            user_ids=np.asarray(list(user_ids), dtype=object),
            item_ids=ids,
            scores=np.where(valid, scores, -np.inf).astype(np.float32),
            known=known,
            item_idx=top,
        )

    def _slate_params(
        self, samples: int | None, diversity: float | None, merge: str | None = None
    ) -> tuple[int, float, str]:
        samples = self._cfg.samples if samples is None else int(samples)
        diversity = self._cfg.diversity if diversity is None else float(diversity)
        merge = self._cfg.slate_merge if merge is None else str(merge)
        if samples < 1 or not 0.0 <= diversity <= 1.0:
            raise ConfigError(f"samples must be >= 1 and diversity in [0, 1], got {samples}, {diversity}")
        if merge not in MERGES:
            raise ConfigError(f"merge must be one of {MERGES}, got {merge!r}")
        return samples, diversity, merge

    # -- explanations ---------------------------------------------------------------------------

    def explain(
        self,
        item_ids: Sequence[object],
        *,
        user_id: object | None = None,
        history: Sequence[object] | None = None,
        n: int = 3,
    ) -> dict[str, list[tuple[str, float]]]:
        """For each product in ``item_ids``, the ``n`` products of the customer's history nearest
        to it in the retrieval space (cosine, best first): the purchases that drove it.

        Give a known ``user_id`` (their training history) or an ad-hoc ``history`` of product ids
        (unknown ids ignored). An empty history explains nothing (empty lists: the popularity
        rule drove those products)."""
        self._check_fitted()
        assert self.users is not None and self.items is not None
        if (user_id is None) == (history is None):
            raise ConfigError("explain needs exactly one of user_id or history")
        if user_id is not None:
            u = self.users.index([user_id], missing="negative")[0]
            hist = self._user_rows(np.array([u]))[1] if u >= 0 else np.zeros(0, np.int64)
        else:
            idx = self.items.index(list(history or []), missing="negative")
            hist = np.unique(idx[idx >= 0])
        targets = self.items.index(item_ids, kind="item")
        E = self.item_vectors
        out: dict[str, list[tuple[str, float]]] = {}
        hist = np.unique(hist)
        for raw, t in zip(item_ids, targets, strict=True):
            if len(hist) == 0:
                out[str(raw)] = []
                continue
            sim = E[hist] @ E[t]
            order = np.lexsort((hist, -sim))[:n]
            out[str(raw)] = [(str(self.items.decode([hist[o]])[0]), float(sim[o])) for o in order]
        return out

    # -- new products ---------------------------------------------------------------------------

    def add_products(
        self,
        item_ids: Sequence[object],
        titles: Sequence[object],
        categories: Sequence[object] | None = None,
        prices: Sequence[float | None] | None = None,
    ) -> None:
        """Add products to the catalogue without retraining: their features come from their
        records (collaborative block imputed from text), and they are recommendable at once."""
        self._check_fitted()
        assert self.space is not None and self.X is not None and self.items is not None
        assert self.item_info is not None and self.seen is not None and self.popularity is not None
        ids = [str(i) for i in item_ids]
        n = len(ids)
        cats = np.asarray([None] * n if categories is None else list(categories), dtype=object)
        pr = np.asarray([np.nan if p is None else float(p) for p in (prices if prices is not None else [None] * n)])
        tit = np.asarray(list(titles), dtype=object)
        if not (len(tit) == len(cats) == len(pr) == n):
            raise ConfigError(f"add_products: {n} ids, {len(tit)} titles, {len(cats)} categories, {len(pr)} prices")
        dup = [i for i in ids if i in self.items] + [i for i in set(ids) if ids.count(i) > 1]
        if dup:
            raise ConfigError(
                f"add_products: product id(s) already in the catalogue or repeated: {sorted(set(dup))[:10]}"
            )
        feats = self.space.transform(tit, cats, pr)
        self.X = np.concatenate([self.X, feats]).astype(np.float32)
        self.items = Vocabulary(list(self.items.ids) + ids)
        info = self.item_info
        self.item_info = ItemInfo(
            np.concatenate([info.titles, tit]),
            np.concatenate([info.categories, cats]),
            np.concatenate([info.prices, pr]),
        )
        self.seen = sp.csr_matrix(
            (self.seen.data, self.seen.indices, self.seen.indptr), shape=(self.n_users, len(self.X))
        )
        self.popularity = np.concatenate([self.popularity, np.zeros(n, np.float32)])
        if self._prior_counts is not None:
            self._prior_counts = np.concatenate([self._prior_counts, np.zeros(n)])
        if self._recent is not None and self._cold_items is not None:
            self._recent = np.concatenate([self._recent, np.zeros(n)])
            self._cold_items = np.concatenate([self._cold_items, np.ones(n, bool)])
        if self._prior_sales is not None:
            self._prior_sales = sp.csr_matrix(
                (self._prior_sales.data, self._prior_sales.indices, self._prior_sales.indptr),
                shape=(self._prior_sales.shape[0], len(self.X)),
            )
        if self._cfg.id_embeddings:
            # New products have no learned vectors: zero rows, masked out of the tower.
            assert self.nets is not None
            state = self.nets.state_dict()
            grown = _Nets(self.X.shape[1], len(self.X), self._cfg)
            for key, value in grown.state_dict().items():
                old = state[key]
                if old.shape != value.shape:
                    value.zero_()
                    value[: len(old)] = old
                    state[key] = value
            grown.load_state_dict(state)
            grown.eval()
            self.nets = grown
        self._invalidate()

    # -- persistence ----------------------------------------------------------------------------

    def _extra_meta(self) -> dict[str, Any]:
        assert self.space is not None
        return {"feature_space": self.space.meta()}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._space_meta = extra.get("feature_space")

    def _forget_rows(self, user_idx: np.ndarray) -> None:
        # The ordered purchase histories the generator is conditioned on: drop these customers' rows.
        lengths = np.diff(self._hist_indptr)
        drop = np.zeros(len(lengths), dtype=bool)
        drop[user_idx] = True
        self._hist_items = self._hist_items[~np.repeat(drop, lengths)]
        lengths[drop] = 0
        self._hist_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._invalidate()

    def _state(self) -> dict[str, np.ndarray]:
        assert self.nets is not None and self.X is not None and self.space is not None
        state = {f"nets.{k}": v.detach().cpu().numpy().copy() for k, v in self.nets.state_dict().items()}
        state.update(self.space.arrays("features"))
        state["X"] = self.X.copy()
        state["hist.indptr"] = self._hist_indptr.copy()
        state["hist.items"] = self._hist_items.copy()
        if self._cfg.trend_days:
            assert self._recent is not None
            assert self._cold_items is not None
            state["trend.recent"] = self._recent.copy()
            state["trend.cold"] = self._cold_items.astype(np.uint8)
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        cfg = self._cfg
        cfg.validate()
        meta = getattr(self, "_space_meta", None)
        if meta is not None:  # loading from files; during training the fitted space is kept
            self.space = FeatureSpace.restore(meta, arrays, "features")
        self.X = take(arrays, "X", np.float32, (self.n_items, None))
        # Time-ordered histories: offsets and product indices checked like any sparse matrix.
        self._hist_indptr = take(arrays, "hist.indptr", np.int64, (self.n_users + 1,))
        self._hist_items = take(arrays, "hist.items", np.int64, (None,))
        check_offsets(self._hist_indptr, "hist.indptr", len(self._hist_items))
        check_indices(self._hist_items, "hist.items", self.n_items)
        if cfg.trend_days:
            self._recent = take(arrays, "trend.recent", np.float64, (self.n_items,))
            check_nonnegative(self._recent, "trend.recent")
            self._cold_items = take(arrays, "trend.cold", np.uint8, (self.n_items,)).astype(bool)
        nets = load_module_arrays(_Nets(self.X.shape[1], len(self.X), cfg), arrays, "nets", "featgan")
        nets.eval()
        self.nets = nets
        self._invalidate()
