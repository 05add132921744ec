"""Top-k maximum-inner-product search behind one interface.

Scores are **inner products** ``<query, vector>`` (the feature GAN stores L2-normalised product
vectors, so they are cosine similarities). Two backends:

* :class:`ExactIndex`: one numpy matrix product and ``argpartition``; exact, the default for
  catalogues up to ~100k products.
* :class:`FaissIndex`: faiss-cpu (optional extra ``ann``: ``pip install 'retailgan[ann]'``),
  ``IndexHNSWFlat`` (``kind="hnsw"``, graph search, no training) or ``IndexIVFFlat``
  (``kind="ivf"``, k-means cells, ``nprobe`` cells searched), both with
  ``METRIC_INNER_PRODUCT``; approximate: its recall against :class:`ExactIndex` is measured in
  ``benchmarks/bench_index.py``.

Results are ``(scores, ids)`` arrays of shape ``(n_queries, k)``, best first; rows are padded with
id -1 and score -inf when the index holds fewer than k vectors. Ids are row numbers in the order
vectors were added.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from retailgan.errors import ConfigError, extra_needed

KINDS = ("exact", "hnsw", "ivf")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, np.float32)))
    if q.ndim != 2 or q.shape[1] != dim:
        raise ConfigError(f"queries must have shape (n, {dim}), got {np.shape(queries)}")
    return q


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if ids.shape[1] < k:
        extra = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf)
    return scores.astype(np.float32), ids.astype(np.int64)


class TopKIndex(ABC):
    """Inner-product top-k search over a growing set of vectors."""

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ConfigError(f"index dimension must be >= 1, got {dim}")
        self.dim = int(dim)

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append vectors ``(n, dim)``; they get the next ids."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of the ``k`` largest inner products per query, best first."""

    @abstractmethod
    def __len__(self) -> int: ...


class ExactIndex(TopKIndex):
    """Brute force: ``queries @ vectors.T`` then ``argpartition`` (ties broken by lower id)."""

    def __init__(self, dim: int, vectors: np.ndarray | None = None) -> None:
        super().__init__(dim)
        self.vectors = np.zeros((0, self.dim), np.float32)
        if vectors is not None:
            self.add(vectors)

    def add(self, vectors: np.ndarray) -> None:
        v = np.asarray(vectors, np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ConfigError(f"vectors must have shape (n, {self.dim}), got {v.shape}")
        self.vectors = np.ascontiguousarray(np.concatenate([self.vectors, v]))

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        q = _as_queries(queries, self.dim)
        n = len(self.vectors)
        if n == 0:
            return _pad(np.zeros((len(q), 0)), np.zeros((len(q), 0), np.int64), k)
        scores = q @ self.vectors.T
        kk = min(k, n)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(q), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        return _pad(np.take_along_axis(top_scores, order, axis=1), top, k)


class FaissIndex(TopKIndex):
    """faiss-cpu inner-product index (``kind`` "hnsw" or "ivf"; see the module docstring).

    ``hnsw_m``: graph degree; ``ef_search``: candidate list size at query time (recall vs speed);
    ``nlist``: IVF cells (default ``4 * sqrt(n)`` of the first batch added); ``nprobe``: cells
    searched per query. IVF trains its cells on the first batch added (at least ``nlist`` vectors);
    ``train_size`` caps the vectors k-means sees (a seeded sample; None: faiss' own cap of 256 a
    cell) and ``kmeans_iters`` its iterations (None: faiss' 25), the training cost on large
    catalogues.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "hnsw",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        nlist: int | None = None,
        nprobe: int = 16,
        seed: int = 0,
        threads: int | None = None,
        train_size: int | None = None,
        kmeans_iters: int | None = None,
    ) -> None:
        super().__init__(dim)
        if kind not in ("hnsw", "ivf"):
            raise ConfigError(f"faiss index kind must be 'hnsw' or 'ivf', got {kind!r}")
        try:
            import faiss
        except ImportError:
            raise extra_needed(f"the {kind} index", "ann", "faiss-cpu is not installed") from None
        self._faiss = faiss
        if threads:
            faiss.omp_set_num_threads(int(threads))
        self.kind, self.nlist, self.nprobe, self.seed = kind, nlist, nprobe, seed
        self.ef_search = ef_search
        self.train_size, self.kmeans_iters = train_size, kmeans_iters
        self._index: Any = None
        if kind == "hnsw":
            self._index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = ef_construction
            self._index.hnsw.efSearch = ef_search

    def add(self, vectors: np.ndarray) -> None:
        v = np.ascontiguousarray(np.asarray(vectors, np.float32))
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ConfigError(f"vectors must have shape (n, {self.dim}), got {v.shape}")
        if self._index is None:  # IVF: cells are trained on the first batch
            faiss = self._faiss
            nlist = self.nlist or max(1, int(4 * np.sqrt(len(v))))
            if len(v) < nlist:
                raise ConfigError(f"IVF index needs at least nlist={nlist} vectors in its first batch, got {len(v)}")
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = self.seed
            if self.kmeans_iters:
                index.cp.niter = int(self.kmeans_iters)
            sample = v
            if self.train_size and len(v) > self.train_size:
                rows = np.random.default_rng(self.seed).choice(len(v), max(self.train_size, nlist), replace=False)
                sample = v[np.sort(rows)]
            index.train(sample)
            index.nprobe = self.nprobe
            self._index, self.nlist = index, nlist
        self._index.add(v)

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Trade recall for speed at query time."""
        if ef_search is not None and self.kind == "hnsw":
            self._index.hnsw.efSearch = self.ef_search = int(ef_search)
        if nprobe is not None and self.kind == "ivf":
            self.nprobe = int(nprobe)
            if self._index is not None:
                self._index.nprobe = self.nprobe

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        q = _as_queries(queries, self.dim)
        if len(self) == 0:
            return _pad(np.zeros((len(q), 0)), np.zeros((len(q), 0), np.int64), k)
        scores, ids = self._index.search(q, k)
        scores = np.where(ids < 0, -np.inf, scores)
        return _pad(scores, ids, k)


def make_index(kind: str, vectors: np.ndarray, **params: Any) -> TopKIndex:
    """An index of ``kind`` ("exact", "hnsw", "ivf") holding ``vectors``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; choose from {', '.join(KINDS)}")
    v = np.asarray(vectors, np.float32)
    if v.ndim != 2:
        raise ConfigError(f"vectors must be 2-D, got shape {v.shape}")
    index: TopKIndex = ExactIndex(v.shape[1]) if kind == "exact" else FaissIndex(v.shape[1], kind, **params)
    index.add(v)
    return index
