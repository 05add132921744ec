"""Sales signals blended into featgan's scores: early sales of new products, recent sales.

**Early-sales prior for new products** (``FeatureGAN.set_item_prior``, weight ``cold_prior``):
a product launched after training has no interactions, only its catalogue record, and featgan
places it by its features. Once it has sold for a while, its sales count ``c_i`` is known at
recommendation time. The blend (:func:`blend_item_prior`) is a product of experts: featgan's
softmax ``p(i | h) ~ exp(cos(g, e_i) / temperature)`` times the prior ``(1 + c_i) ** cold_prior``,
i.e. the score ``cos + cold_prior * temperature * log(1 + c_i)`` (in cosine units).
``cold_prior = 0`` is featgan alone; a large weight ranks by sales, with featgan breaking ties.
Products without a given count get ``c = 0``. ``FeatureGAN.set_item_sales`` personalises the
count: given the early sales as (customer, product) pairs, ``c_i(u) = sum over the buyers v of
i of exp((cos(g_u, g_v) - 1) / prior_kernel)`` (:func:`buyer_weighted_counts`), where ``g`` is
featgan's generated vector of a customer's training history: a buyer who resembles the
customer counts fully, a dissimilar one little (``prior_kernel = 0``: every buyer counts 1,
plain sales). The weights are meant to be chosen on held-out purchases
(docs/benchmarks-featgan.md, "New products"). The prior is runtime state, not saved.

**Learned trend-following** (``trend_days = w > 0``): the model learns, jointly with the
generator, how much each customer follows what is selling now. Every training example (a next
purchase at day ``d``) sees each product's number of distinct buyers in the ``w`` days before
``d`` (``r_i(d)``; the target's own day excluded), and the softmax logit becomes
``cos(g, e_i) / temperature + b_i(h) * log(1 + r_i(d))`` with ``b_i(h) = beta(h) + kappa_i *
beta_cold(h)``: two weights read from the history encoding (a linear head, starting at 0), the
second one for products placed by their catalogue record alone (``kappa_i = 1``: no training
interaction, or dropped out by ``cold_dropout`` in that epoch). At scoring time the score is
``cos + temperature * b_i(h) * log(1 + r_i)`` with ``r_i`` the recent sales counts: by default
those of the last ``w`` days of the training data (saved with the model);
``FeatureGAN.set_recent_sales`` replaces them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from retailgan.errors import ConfigError
from retailgan.models.recent import item_counts


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
    """``(n_users, n_items)`` sales counts weighted by buyer similarity (module docstring).

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


class PriorsMixin:
    """``FeatureGAN``'s sales prior and recent sales (module docstring)."""

    _prior_counts: np.ndarray | None = None
    _prior_weight: float = 0.0
    _prior_sales: sp.csr_matrix | None = None
    _prior_buyers: tuple[np.ndarray, np.ndarray] | None = None
    _prior_kernel: float = 0.0
    _recent: np.ndarray | None = None
    _cold_items: np.ndarray | None = None

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
        if self._cfg.cold_shift > 0:
            new = np.flatnonzero(self._new_products())
            out = new if out is None else np.union1d(out, new)
        return out

    def _new_products(self) -> np.ndarray:
        """Products without training interactions (``popularity`` 0; added ones included)."""
        assert self.popularity is not None
        return np.asarray(self.popularity) == 0

    def _has_prior(self) -> bool:
        return self._prior_counts is not None or self._prior_sales is not None or self._cfg.cold_shift != 0

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
        if self._cfg.cold_shift:  # new products compete with known ones on one scale
            new = self._new_products() if idx is None else self._new_products()[idx]
            scores = (scores + self._cfg.cold_shift * new[None, :]).astype(np.float32)
        if beta is not None and self._recent is not None and self._cold_items is not None:
            recent = self._recent if idx is None else self._recent[idx]
            kappa = self._cold_items if idx is None else self._cold_items[idx]
            b = beta[:, :1] + beta[:, 1:] * kappa[None, :].astype(np.float32)
            bonus = self._cfg.temperature * b * np.log1p(recent)[None, :]
            scores = (scores + bonus).astype(np.float32)
        return scores
