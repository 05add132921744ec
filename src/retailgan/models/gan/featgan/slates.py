"""featgan's recommendations: top-k lists and slates of several generated vectors.

``recommend(..., samples=S, diversity=lam)`` draws the noise's mean plus ``S - 1`` noise samples
(seeded by ``sample_seed``), retrieves each one's nearest products through the index (exact or
faiss, ``index``), and merges them greedily: a product's relevance is its best similarity to any
generated vector, and with ``diversify="mmr"`` (maximal marginal relevance) each pick is
penalised by ``lam`` times its largest similarity to the products already picked;
``diversify="dpp"`` instead picks greedily the list of largest relevance-weighted volume in the
retrieval space (a determinantal point process; :mod:`retailgan.models.diversify`). New
customers: ``recommend_histories`` takes lists of product ids; an empty history (or only unknown
ids) falls back to the popularity ranking, flagged ``known=False``, as for unknown customers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from retailgan.errors import ConfigError
from retailgan.models.base import SCORE_BLOCK_ELEMENTS, Recommendations
from retailgan.models.diversify import dpp, mmr
from retailgan.models.gan.featgan.scoring import SCORE_BATCH


class SlatesMixin:
    """``FeatureGAN``'s ``recommend`` / ``recommend_histories`` (module docstring)."""

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
    ) -> Recommendations:
        """Top-``k`` for known customers (see :meth:`Recommender.recommend`), with slates.

        ``samples`` (default: the config's) generated vectors are merged with diversity weight
        ``diversity`` (default: the config's); ``samples=1, diversity=0`` is the plain ranking
        by cosine to the noise-mean vector. Scores are the merged relevance. Candidates come
        from the config's ``index`` (with ``"hnsw"`` / ``"ivf"`` every request goes through faiss)."""
        self._check_fitted()
        assert self.users is not None and self.items is not None and self.seen is not None
        samples, diversity = self._slate_params(samples, diversity)
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
            banned_rows = [banned[r] for r in rows]
            top[rows], scores[rows] = self._rank(indptr, items, k, banned_rows, allowed, samples, diversity)
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
        samples, diversity = self._slate_params(None, None)
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
            top[a:b], scores[a:b] = self._rank(indptr, items, k, rows, allowed, samples, diversity)
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
    ) -> Recommendations:
        """Top-``k`` for new customers from ad-hoc histories: lists of product ids, oldest first
        (e.g. the products seen in a session), without retraining.

        Unknown product ids are ignored. A history with no known product gets the popularity
        ranking and ``known=False``. ``user_ids`` of the result are the row numbers."""
        self._check_fitted()
        assert self.items is not None
        samples, diversity = self._slate_params(samples, diversity)
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
            banned_rows = [banned[r] for r in rows]
            top[rows], scores[rows] = self._rank(indptr, items, k, banned_rows, allowed, samples, diversity)
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
    ) -> tuple[np.ndarray, np.ndarray]:
        """Slates for non-empty ordered histories: retrieve each generated vector's nearest
        products (index, or exact over ``allowed``), then merge greedily (MMR or DPP)."""
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
            if self._has_prior() or beta is not None:
                b = None if beta is None else beta[r : r + 1]
                sims = sims + self._with_prior(np.zeros((1, len(pool)), np.float32), G[r, :1], pool, b)
            rel = sims.max(axis=0)
            keep = np.lexsort((pool, -rel))[:pool_size]
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

    def _slate_params(self, samples: int | None, diversity: float | None) -> tuple[int, float]:
        samples = self._cfg.samples if samples is None else int(samples)
        diversity = self._cfg.diversity if diversity is None else float(diversity)
        if samples < 1 or not 0.0 <= diversity <= 1.0:
            raise ConfigError(f"samples must be >= 1 and diversity in [0, 1], got {samples}, {diversity}")
        return samples, diversity
