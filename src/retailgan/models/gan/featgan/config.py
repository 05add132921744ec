"""featgan's hyperparameters (one typed config) and the options it no longer has."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from retailgan.errors import ConfigError, extra_needed
from retailgan.features.space import FeatureSpaceConfig
from retailgan.index.topk import faiss_available
from retailgan.models.base import ModelConfig

LOSSES = ("hinge", "bce")
TARGETS = ("next", "held-out")
DIVERSIFIERS = ("mmr", "dpp")
INDEXES = ("exact", "hnsw", "ivf")

REMOVED: dict[str, Any] = {
    "id_embeddings": False,
    "train_samples": 1,
    "wta": False,
    "mcl_eps": 0.0,
    "mode_seeking": 0.0,
    "slate_merge": "max",
    "history_keep": 1.0,
    "id_vectors": False,
}
"""Options that were measured, lost and were removed (docs/benchmarks-featgan.md, "What was
tried"), with the value that meant "off". Model files written before their removal name them at
that value and still load; a file that used one of them does not."""


@dataclass(frozen=True)
class FeatureGANConfig(ModelConfig):
    """Feature-GAN hyperparameters (feature space, networks, losses, inference)."""

    text_dim: int = 64
    collab_dim: int = 32
    collab_dim_no_content: int = 256
    """Width of the collaborative block on a log of ids only (no title, category or price for
    any product), where it is the whole feature space; 0: ``collab_dim``."""
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
    targets: str = "next"
    """Training examples: ``"next"``: each product from the customer's products bought strictly
    before it; ``"held-out"``: each product from all the customer's other products (a random
    held-out purchase, as in the ``cold-items`` protocol, rather than the next one)."""
    adversarial: bool = True
    loss: str = "hinge"
    adv_weight: float = 0.1
    aux_weight: float = 1.0
    temperature: float = 0.1
    max_negatives: int = 8192
    """Catalogues up to this size get the full softmax; larger ones a uniform sample of this size."""
    cold_dropout: float = 0.2
    ema: float = 0.0
    """Decay of an exponential moving average of the networks' weights (Polyak averaging, with
    Adam's bias correction), updated after every generator step; the average is what validates,
    scores and is saved, the optimiser keeps stepping the raw weights. It damps the step-to-step
    drift of where products without interactions land in the retrieval space. 0: off (the last
    weights). In [0, 1)."""
    cold_shift: float = 0.0
    """Added to the score (a cosine) of every product without training interactions, so that new
    products compete with known ones in one list; chosen on validation
    (``benchmarks/cold_calibration.py``). 0: off."""
    cold_prior: float = 0.0
    """Exponent of the sales prior ``(1 + c_i) ** cold_prior`` set by ``FeatureGAN.set_item_prior``
    (:mod:`~retailgan.models.gan.featgan.priors`); 0: the prior is ignored."""
    prior_kernel: float = 0.0
    """Temperature of the buyer-similarity kernel of ``FeatureGAN.set_item_sales``; 0: every
    buyer counts 1 (plain sales counts)."""
    trend_days: int = 0
    """Learned trend-following (:mod:`~retailgan.models.gan.featgan.priors`): days of recent
    sales each example sees; 0 turns it off."""
    lr_g: float = 1e-3
    lr_d: float = 4e-3
    d_steps: int = 1
    weight_decay: float = 1e-6
    batch_size: int = 512
    epoch_examples: int = 0
    """Training examples (next purchases) an epoch visits, a fresh random share of them each
    epoch; 0: all. Bounds the time between early-stopping checks on a large log."""
    epochs: int = 30
    patience: int = 3
    eval_every: int = 1
    samples: int = 1
    """Default number of generated vectors merged by ``recommend``."""
    diversity: float = 0.0
    """Default diversity weight of the merge (0: plain relevance)."""
    diversify: str = "mmr"
    """How ``diversity`` re-ranks a list: ``"mmr"`` (maximal marginal relevance) or ``"dpp"``
    (greedy MAP of a determinantal point process on the retrieval space, relevance read as
    softmax logits; :mod:`retailgan.models.diversify`)."""
    sample_seed: int = 0
    index: str = "exact"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureGANConfig:
        values = dict(values)
        for name, off in REMOVED.items():
            if name in values and values.pop(name) != off:
                raise ConfigError(
                    f"featgan: option {name!r} was removed (measured and lost, see "
                    f"docs/benchmarks-featgan.md); retrain without it"
                )
        return super().from_dict(values)  # type: ignore[return-value]

    def validate(self) -> None:
        checks = [
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (self.targets in TARGETS, f"targets must be one of {TARGETS}"),
            (self.index in INDEXES, f"index must be one of {INDEXES}"),
            (self.diversify in DIVERSIFIERS, f"diversify must be one of {DIVERSIFIERS}"),
            (min(self.emb_dim, self.hidden, self.recent, self.min_history, self.batch_size) >= 1, "sizes >= 1"),
            (self.noise_dim >= 0 and self.noise_scale >= 0, "noise_dim, noise_scale >= 0"),
            (self.adv_weight >= 0 and self.aux_weight >= 0, "adv_weight, aux_weight >= 0"),
            (self.aux_weight > 0 or self.adversarial, "aux_weight=0 needs adversarial=True"),
            (self.temperature > 0 and self.max_negatives >= 1, "temperature > 0, max_negatives >= 1"),
            (0.0 <= self.cold_dropout <= 1.0, "cold_dropout in [0, 1]"),
            (0.0 <= self.ema < 1.0, "ema in [0, 1)"),
            (min(self.cold_prior, self.prior_kernel) >= 0, "cold_prior, prior_kernel >= 0"),
            (self.trend_days >= 0, "trend_days >= 0"),
            (math.isfinite(self.cold_shift), "cold_shift must be a finite number"),
            (self.lr_g > 0 and self.lr_d > 0 and self.weight_decay >= 0, "lr > 0, weight_decay >= 0"),
            (self.d_steps >= 1 and self.epoch_examples >= 0, "d_steps >= 1, epoch_examples >= 0"),
            (self.epochs >= 1 and self.patience >= 1 and self.eval_every >= 1, "epochs, patience, eval_every >= 1"),
            (self.samples >= 1 and 0.0 <= self.diversity <= 1.0, "samples >= 1, diversity in [0, 1]"),
        ]
        self.require("featgan", checks)
        if self.index != "exact" and not faiss_available():  # fail now, not at the first recommend
            raise extra_needed(f"featgan: index={self.index!r}", "ann", "faiss-cpu is not installed")

    def feature_config(self) -> FeatureSpaceConfig:
        return FeatureSpaceConfig(
            text_dim=self.text_dim,
            collab_dim=self.collab_dim,
            collab_dim_no_content=self.collab_dim_no_content,
            price_bands=self.price_bands,
            w_text=self.w_text,
            w_category=self.w_category,
            w_price=self.w_price,
            w_collab=self.w_collab,
        )
