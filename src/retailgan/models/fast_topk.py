"""Exact batch top-k for factor models and sparse item-item models (:meth:`Recommender.top_k`).

**Factor models** score ``q_u . v_i (+ b_i)``: a user vector, item vectors
and an optional item bias.
:func:`factor_top_k` ranks in float32 row blocks of at most :data:`SCORE_BLOCK_ELEMENTS` scores
and skips most of the catalogue with a bound that keeps the lists exact: items are ordered by
``|v_i|`` once per model; a user's k-th best score among the first ``c`` items is compared with
``|q_u| * max_{j >= c} |v_j| + max_{j >= c} b_j``, which no later item can exceed
(Cauchy-Schwarz). Users whose k-th score beats it strictly (and has no tie at the k-th place) are
done after scoring ``c`` items; the others go to the next, larger prefix and finally to the whole
catalogue in item order. Factor norms of iALS follow popularity: on the generated retail log
at S an eighth of the catalogue settles 84 % of customers and a quarter 97 % of the rest; at L
(500,000 products) the first 1/256 settles 91 % (docs/benchmarks.md, Scale). Prefixes that
settle few customers are dropped for the rest of a job (:data:`SKIP_BELOW`). Where norms are
flat no prefix can settle anyone and the whole catalogue is scored at once.

**Sparse item-item models** (ItemKNN; SANSA through its two sparse factors) multiply the sparse
history by the sparse weights: a row
with at least k positive scores after exclusions has its list among them (every other item
scores 0); other rows take the dense path.

Lists equal :meth:`Recommender.recommend`'s: ordered by score, ties by item index, also at the
k-th place (tested against the dense path in tests/models/test_fast_topk.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

PREFIX_FRACTIONS = (1 / 256, 1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)
"""Prefixes of the norm-ordered catalogue that may be tried before scoring all of it."""
MIN_PREFIX = 512
"""Shorter prefixes are not worth a pass (small catalogues are scored whole)."""
SKIP_BELOW = 0.3
"""A prefix that settled less than this share of the rows reaching it (over at least
:data:`LEARN_ROWS` rows) is skipped in later calls: it costs more than it saves."""
LEARN_ROWS = 1000


def empty_lists(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) item indices -1 and scores -inf: lists with nothing in them yet."""
    return np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float64)


def _block_elements() -> int:
    from retailgan.models import base  # read at call time: tests shrink the block

    return base.SCORE_BLOCK_ELEMENTS


@dataclass
class FactorItems:
    """Item side of a factor model, prepared once: vectors in item order and in norm order."""

    vectors: np.ndarray
    """(n_items, f) float32, item order."""
    bias: np.ndarray | None
    order: np.ndarray
    """Item indices by decreasing bound key (norm, plus bias where there is one)."""
    sorted_vectors: np.ndarray
    sorted_bias: np.ndarray | None
    norm_tail: np.ndarray
    """norm_tail[c] = max norm of the items at sorted positions >= c (0 past the end)."""
    bias_tail: np.ndarray
    """bias_tail[c] = max bias at sorted positions >= c (0 without bias; -inf past the end)."""
    reached: dict[int, int] = field(default_factory=dict)
    """Per prefix length: rows that were scored on it, and (below) rows it settled."""
    settled: dict[int, int] = field(default_factory=dict)

    @classmethod
    def build(cls, vectors: np.ndarray, bias: np.ndarray | None = None, query_norm: float = 1.0) -> FactorItems:
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
        norms = np.linalg.norm(v.astype(np.float64), axis=1)
        key = norms * query_norm + (0.0 if b is None else b.astype(np.float64))
        order = np.argsort(-key, kind="stable")
        sn = norms[order]
        norm_tail = np.append(np.maximum.accumulate(sn[::-1])[::-1], 0.0)
        if b is None:
            bias_tail = np.zeros(len(v) + 1)
        else:
            bias_tail = np.append(np.maximum.accumulate(b[order].astype(np.float64)[::-1])[::-1], -np.inf)
        return cls(v, b, order, np.ascontiguousarray(v[order]), None if b is None else b[order],
                   norm_tail, bias_tail)


def _prefixes(items: FactorItems, n_cols: int, k: int) -> list[int]:
    """Prefix lengths worth trying: long enough, shorter than the catalogue, and where the bound
    past them is lower than at the start (flat norms cannot settle anyone)."""
    out: list[int] = []
    for frac in PREFIX_FRACTIONS:
        c = int(n_cols * frac)
        if c < max(MIN_PREFIX, 4 * (k + 1)) or c >= n_cols or (out and c <= out[-1]):
            continue
        if items.norm_tail[c] >= 0.999 * items.norm_tail[0] and items.bias_tail[c] >= items.bias_tail[0]:
            continue
        reached = items.reached.get(c, 0)
        if reached >= LEARN_ROWS and items.settled.get(c, 0) < SKIP_BELOW * reached:
            continue
        out.append(c)
    return out


def factor_top_k(
    queries: np.ndarray,
    items: FactorItems,
    k: int,
    banned: sp.csr_matrix,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) item indices and scores (float64 of the float32 scores), -1 / -inf padded, for
    scores ``queries @ vectors.T (+ bias)`` with ``banned`` (n x items) excluded and
    only ``allowed`` items (None: all)."""
    from retailgan.models.base import _finish_top_k as finish_top_k
    from retailgan.models.base import _partition_top as partition_top
    from retailgan.models.base import select_top_k

    q = np.ascontiguousarray(queries, dtype=np.float32)
    n, m = len(q), len(items.vectors)
    top, scores = empty_lists(n, k)
    if n == 0:
        return top, scores
    banned = sp.csr_matrix(banned)
    full_cols = None if allowed is None else np.unique(np.asarray(allowed, np.int64))
    if full_cols is not None and len(full_cols) == 0:
        return top, scores
    # Prefixes only for the whole catalogue: a candidate list is usually short anyway.
    order, svec, sbias = items.order, items.sorted_vectors, items.sorted_bias
    pos = np.empty(m, np.int64)
    pos[order] = np.arange(m)
    qnorm = np.linalg.norm(q.astype(np.float64), axis=1)
    pending = np.arange(n)
    for c in _prefixes(items, m, k) if full_cols is None else []:
        if not len(pending):
            break
        # No later item scores above this; the margin covers float32 rounding of the scores.
        tail = qnorm[pending] * items.norm_tail[c]
        bound = tail + items.bias_tail[c] + 1e-5 * (tail + abs(items.bias_tail[c])) + 1e-30
        settled = np.zeros(len(pending), bool)
        step = max(1, _block_elements() // c)
        for a in range(0, len(pending), step):
            rows = pending[a : a + step]
            s = q[rows] @ svec[:c].T
            if sbias is not None:
                s += sbias[None, :c]
            _ban(s, rows, banned, pos, c)
            # Prefix rows are narrow: a plain partition beats select_top_k's sampled threshold.
            t, ts = finish_top_k(s, partition_top(s, k + 1), k + 1)
            kth, nxt = ts[:, k - 1], ts[:, k]
            ok = np.isfinite(kth) & (kth > bound[a : a + step]) & (nxt < kth)
            if ok.any():
                r = np.flatnonzero(ok)
                idx, sc = order[t[r, :k]], ts[r, :k]
                o = np.lexsort((idx, -sc), axis=1)  # ties inside the list by item index
                top[rows[r]] = np.take_along_axis(idx, o, axis=1)
                scores[rows[r]] = np.take_along_axis(sc, o, axis=1)
                settled[a : a + len(rows)] = ok
        items.reached[c] = items.reached.get(c, 0) + len(pending)
        items.settled[c] = items.settled.get(c, 0) + int(settled.sum())
        pending = pending[~settled]
    if len(pending):
        # The rest over every (allowed) item in item order: select_top_k's ties are item order.
        vec = items.vectors if full_cols is None else items.vectors[full_cols]
        bias = items.bias if full_cols is None or items.bias is None else items.bias[full_cols]
        col_pos = None
        if full_cols is not None:
            col_pos = np.full(m, -1, np.int64)
            col_pos[full_cols] = np.arange(len(full_cols))
        width = len(vec)
        step = max(1, _block_elements() // width)
        for a in range(0, len(pending), step):
            rows = pending[a : a + step]
            s = q[rows] @ vec.T
            if bias is not None:
                s += bias[None, :]
            _ban(s, rows, banned, col_pos, width)
            t, ts = select_top_k(s, k)
            top[rows] = np.where(t >= 0, t if full_cols is None else full_cols[np.maximum(t, 0)], -1)
            scores[rows] = ts
    return top, scores


def _ban(s: np.ndarray, rows: np.ndarray, banned: sp.csr_matrix, pos: np.ndarray | None, width: int) -> None:
    """Set ``banned`` to -inf in ``s`` (rows = those of ``banned``; columns through ``pos``,
    item -> column, None: identity; columns >= ``width`` are not in ``s``)."""
    r, c, _ = _block_entries(banned[rows], pos, width)
    s[r, c] = -np.inf


def _block_entries(block: sp.csr_matrix, pos: np.ndarray | None, width: int) -> tuple[np.ndarray, ...]:
    r = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
    c = block.indices.astype(np.int64) if pos is None else pos[block.indices]
    keep = (c >= 0) & (c < width)
    return r[keep], c[keep], block.data[keep]


def sparse_item_top_k(
    history: sp.csr_matrix,
    weights: sp.csr_matrix | Callable[[sp.csr_matrix], sp.spmatrix],
    k: int,
    banned: sp.csr_matrix,
    allowed: np.ndarray | None,
    dense: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``history @ weights`` (both sparse; ``weights`` may also be a function of a float32
    history block returning its sparse scores, e.g. a product through sparse factors) without a
    dense row: a row with at least k positive scores left after exclusions has its list among
    them (every item not stored scores 0, signed weights included); the others are ranked by
    ``dense(rows)`` (the generic path)."""
    from retailgan.models.base import select_top_k

    n, m = history.shape
    product = weights if callable(weights) else (lambda h: h @ weights)
    top = np.full((n, k), -1, np.int64)
    scores = np.full((n, k), -np.inf, np.float64)
    keep_col = None
    if allowed is not None:
        keep_col = np.zeros(m, bool)
        keep_col[allowed] = True
    step = max(1, _block_elements() // max(64 * k, 1024))
    rest: list[np.ndarray] = []
    for a in range(0, n, step):
        b = min(a + step, n)
        s = sp.csr_matrix(product(sp.csr_matrix(history[a:b], dtype=np.float32)), dtype=np.float32)
        bb = banned[a:b]
        if bb.nnz:  # banned scores become exact zeros (x - x), dropped with the other non-positive
            s = sp.csr_matrix(s - s.multiply(sp.csr_matrix(bb, dtype=bool)))
        if keep_col is not None:
            s = sp.csr_matrix(s @ sp.diags(keep_col.astype(np.float32)))
        s.data[s.data <= 0] = 0.0
        s.eliminate_zeros()
        s.sort_indices()  # item order inside a row: ties go to the lower item index
        counts = np.diff(s.indptr)
        full = np.flatnonzero(counts >= k)
        # Each full row's positive scores padded into a dense row (item order), ranked by
        # select_top_k: linear in the scores, where sorting them all cost most of the time.
        width = int(counts[full].max()) if len(full) else 0
        sub = max(1, _block_elements() // max(width, 1))
        for f in range(0, len(full), sub):
            rows = full[f : f + sub]
            lens = counts[rows]
            starts = s.indptr[rows]
            offset = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)  # inside the row
            pad = np.full((len(rows), width), -np.inf, np.float32)
            pad[np.repeat(np.arange(len(rows)), lens), offset] = s.data[np.repeat(starts, lens) + offset]
            t, ts = select_top_k(pad, k)
            top[a + rows] = s.indices[starts[:, None] + t]
            scores[a + rows] = ts
        rest.append(a + np.flatnonzero(counts < k))
    left = np.concatenate(rest) if rest else np.zeros(0, np.int64)
    if len(left):
        top[left], scores[left] = dense(left)
    return top, scores


# -- approximate top-k for factor models through a faiss index ------------------------------------

IVF_TRAIN_PER_CELL = 64
IVF_KMEANS_ITERS = 10
IVF_NPROBE = 32
"""Cells searched: recall@10 0.94 against exact on the generated log at M (16: 0.88)."""


@dataclass
class FactorIndex:
    """Items of a factor model in an inner-product index (:mod:`retailgan.index`), for
    :func:`ann_factor_top_k`.

    Maximum inner product is reduced to nearest neighbours (Bachrach et al., RecSys 2014): each
    item vector ``[v_i, b_i]`` gets one more coordinate ``sqrt(R^2 - |[v_i, b_i]|^2)`` (R the
    largest such norm), so every indexed vector has norm R and a query ``[q, 1, 0]`` scores
    ``q . v_i + b_i`` on all of them. Equal norms make IVF's k-means cells and HNSW's graph
    meaningful: without them a few long vectors dominate every inner-product neighbourhood.
    An IVF index trains its ``4 sqrt(n)`` cells on at most :data:`IVF_TRAIN_PER_CELL` items a
    cell with :data:`IVF_KMEANS_ITERS` k-means iterations (faiss' 256 and 25 take minutes on
    500,000 products) and searches :data:`IVF_NPROBE` cells, unless ``params`` say otherwise.
    """

    kind: str
    index: Any
    vectors: np.ndarray
    bias: np.ndarray | None

    @classmethod
    def build(cls, vectors: np.ndarray, bias: np.ndarray | None, kind: str = "ivf", **params: Any) -> FactorIndex:
        from retailgan.index.topk import make_index

        v = np.ascontiguousarray(vectors, dtype=np.float32)
        b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
        x = v.astype(np.float64) if b is None else np.hstack([v.astype(np.float64), b.astype(np.float64)[:, None]])
        sq = (x * x).sum(axis=1)
        x = np.hstack([x, np.sqrt(np.maximum(sq.max() - sq, 0.0))[:, None]])
        if kind == "ivf":
            nlist = params.setdefault("nlist", max(1, int(4 * np.sqrt(len(x)))))
            params.setdefault("train_size", IVF_TRAIN_PER_CELL * nlist)
            params.setdefault("kmeans_iters", IVF_KMEANS_ITERS)
            params.setdefault("nprobe", IVF_NPROBE)
        return cls(kind, make_index(kind, x.astype(np.float32), **params), v, b)

    def queries(self, q: np.ndarray) -> np.ndarray:
        ones = [np.ones((len(q), 1), np.float32)] if self.bias is not None else []
        return np.ascontiguousarray(np.hstack([q, *ones, np.zeros((len(q), 1), np.float32)]), dtype=np.float32)


def ann_factor_top_k(
    queries: np.ndarray,
    items: FactorIndex,
    k: int,
    banned: sp.csr_matrix,
    exact: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) item indices and scores of ``queries @ vectors.T (+ bias)`` through the index,
    approximate, ``banned`` (n x items) never returned: each row fetches ``k`` plus its number
    of banned items, so after removing them ``k`` are left whenever the index returns that many
    (one search for the rows with at most the block's 90th percentile of banned items, one for
    the rest). A row the index left short (an IVF search of few cells may return fewer) is
    ranked by ``exact(rows)``, so no list is shorter than the exact one. Scores are recomputed
    from the factors; ties by item index."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    n, m = len(q), len(items.vectors)
    top, scores = empty_lists(n, k)
    if n == 0:
        return top, scores
    banned = sp.csr_matrix(banned)
    banned.sort_indices()
    counts = np.diff(banned.indptr)
    bkey = np.repeat(np.arange(n, dtype=np.int64), counts) * m + banned.indices  # sorted
    first = int(np.percentile(counts, 90))
    groups = [np.flatnonzero(counts <= first), np.flatnonzero(counts > first)]
    for rows, extra in zip(groups, (first, int(counts.max())), strict=True):
        if not len(rows):
            continue
        _, found = items.index.search(items.queries(q[rows]), min(k + extra, m))
        keep = found >= 0
        if len(bkey):  # drop banned (row, item) pairs: membership in the sorted keys
            key = rows[:, None].astype(np.int64) * m + np.maximum(found, 0)
            pos = np.minimum(np.searchsorted(bkey, key), len(bkey) - 1)
            keep &= bkey[pos] != key
        # The first k kept in the index's order (best first) get exact float32 scores from the
        # factors and are ordered by (score, item index), as the exact path orders them.
        first_k = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        ok = np.take_along_axis(keep, first_k, axis=1)
        t = np.where(ok, np.take_along_axis(found, first_k, axis=1), -1)
        idx = np.maximum(t, 0)
        s = np.einsum("nf,nkf->nk", q[rows], items.vectors[idx])
        if items.bias is not None:
            s += items.bias[idx]
        s = np.where(ok, s, -np.inf)
        o = np.lexsort((np.where(ok, t, m), -s), axis=1)
        top[rows, : t.shape[1]] = np.take_along_axis(t, o, axis=1)
        scores[rows, : t.shape[1]] = np.take_along_axis(s, o, axis=1)
    short = np.flatnonzero((top >= 0).sum(axis=1) < np.minimum(k, m - counts))
    if len(short):
        top[short], scores[short] = exact(short)
    return top, scores
