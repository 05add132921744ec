"""featgan's retrieval space and scores: product vectors, generated vectors, dense scores.

Products are mapped by the item tower to unit vectors ``e_i``; a customer's ordered history is
encoded (its mean feature vector, the mean of its ``recent`` most recent products, its length)
and the generator turns the encoding and the noise's mean (``z = 0``) into one deterministic unit
vector ``g``. Scores are cosines ``<g, e_i>`` (plus the sales prior and the learned trend term of
:mod:`~retailgan.models.gan.featgan.priors`); a customer without a history gets the popularity
ranking, on a scale below any cosine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from retailgan.errors import ConfigError
from retailgan.index.topk import ExactIndex, TopKIndex, make_index
from retailgan.models.gan.featgan.training import history_input

SCORE_BATCH = 1024


class ScoringMixin:
    """``FeatureGAN``'s vectors, dense scores and explanations (module docstring)."""

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
                else make_index(kind, self.item_vectors, **getattr(self, "_index_params", {}))
            )
        return self._index

    def use_index(self, kind: str, **params: object) -> None:
        """Search generated vectors in a product index of ``kind`` from now on (the config's
        ``index``: "exact", "hnsw" or "ivf"; ``params`` go to the faiss index)."""
        if kind == self._cfg.index and dict(params) == getattr(self, "_index_params", {}):
            return  # the index already built stays
        cfg = dataclasses.replace(self._cfg, index=kind)
        cfg.validate()
        self.config = cfg
        self._index_params = dict(params)
        self._index = None

    def _encode_rows(self, indptr: np.ndarray, items: np.ndarray) -> torch.Tensor:
        """History encodings of time-ordered product lists (CSR-like ``indptr`` / ``items``)."""
        assert self.nets is not None and self.X is not None
        feats = self.X[items].astype(np.float64)
        prefix = np.concatenate([np.zeros((1, feats.shape[1])), np.cumsum(feats, axis=0)])
        start, end = indptr[:-1], indptr[1:]
        hist = history_input(prefix, start, end - start, self._cfg.recent)
        with torch.no_grad():
            return self.nets.encode(hist)

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
        with torch.no_grad():
            out[:, 0] = self.nets.generate(h, None).numpy()
            for s in range(1, samples):
                z = cfg.noise_scale * torch.randn(len(h), cfg.noise_dim, generator=gen) if cfg.noise_dim else None
                out[:, s] = self.nets.generate(h, z).numpy()
            beta = self.nets.trend_weight(h).numpy() if cfg.trend_days else None
        return out, beta

    def trend_weights(self, user_ids: Sequence[object]) -> np.ndarray:
        """``(n, 2)``: each known customer's learned weights on ``log(1 + recent sales)``
        (``trend_days`` models; :mod:`~retailgan.models.gan.featgan.priors`), in softmax-logit
        units: ``beta`` for every product and ``beta_cold`` added for products placed by their
        record alone."""
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
