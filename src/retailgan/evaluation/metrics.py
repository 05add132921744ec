"""Vectorised top-K ranking metrics for full-ranking evaluation.

Conventions shared by every function in this module:

* Matrices are ``users x items``. Sparse inputs are ``scipy.sparse`` CSR
  (any sparse input is converted to CSR); a stored entry whose value is
  non-zero counts as "present" (binary relevance / exclusion).
* A recommendation list ``top`` is an integer array of shape
  ``(n_users, K_max)`` holding item indices in rank order (rank 1 first).
  ``-1`` marks padding (no item at that position); padding never counts as a
  hit, but it still occupies its rank (e.g. ``precision@k`` divides by ``k``).
* Functions taking a ``k`` use the first ``k`` columns of ``top``.
* No per-user Python loops: everything is batched numpy / sparse algebra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = [
    "RANK_METRICS",
    "coverage",
    "hit_matrix",
    "intra_list_diversity",
    "novelty",
    "rank_metrics",
    "revenue",
    "topk",
]

#: Names of the per-user accuracy metrics returned by :func:`rank_metrics`.
RANK_METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "map", "mrr", "hitrate")


# ----------------------------------------------------------------------------- helpers


def _as_binary_csr(m: object, name: str) -> sp.csr_matrix:
    """Return a canonical (sorted, no duplicates, no explicit zeros) CSR copy of ``m``."""
    if not sp.issparse(m):
        raise TypeError(f"{name} must be a scipy.sparse matrix (users x items), got {type(m)!r}")
    out = sp.csr_matrix(m, copy=True)
    out.sum_duplicates()  # also sorts the indices
    out.eliminate_zeros()
    return out


def _check_top(top: np.ndarray, n_items: int | None = None) -> np.ndarray:
    top = np.asarray(top)
    if top.ndim != 2:
        raise ValueError(f"top must be 2-D (n_users, K), got shape {top.shape}")
    if top.size and not np.issubdtype(top.dtype, np.integer):
        raise TypeError(f"top must hold integer item indices, got dtype {top.dtype}")
    top = top.astype(np.int64, copy=False)
    if top.size:
        if top.min() < -1:
            raise ValueError("top may only contain item indices >= 0 or -1 (padding)")
        if n_items is not None and top.max() >= n_items:
            raise ValueError(
                f"top contains item index {int(top.max())} but there are only {n_items} items"
            )
    return top


def _check_k(k: int, k_max: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > k_max:
        raise ValueError(f"k={k} exceeds the number of columns of top ({k_max})")
    return int(k)


def _check_unique_rows(top: np.ndarray) -> None:
    """Raise if an item occurs twice in one list (it would be double-counted)."""
    if top.shape[1] < 2:
        return
    s = np.sort(top, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if dup.any():
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ValueError(f"top row {row} recommends the same item more than once")


def hit_matrix(top: np.ndarray, relevant: sp.spmatrix) -> np.ndarray:
    """Boolean ``(n_users, K)`` matrix: ``hit[u, r]`` iff ``top[u, r]`` is relevant to ``u``.

    Membership is looked up with one ``searchsorted`` over the global keys
    ``user * n_items + item`` of the relevant entries (O(n_users * K * log nnz)).
    Padding (``-1``) is never a hit.
    """
    rel = _as_binary_csr(relevant, "relevant")
    top = _check_top(top, rel.shape[1])
    if top.shape[0] != rel.shape[0]:
        raise ValueError(
            f"top has {top.shape[0]} rows (users) but relevant has {rel.shape[0]}; "
            "both must be users x ... with the same users in the same order"
        )
    return _hits_canonical(top, rel)


def _hits_canonical(top: np.ndarray, rel: sp.csr_matrix) -> np.ndarray:
    n_users, n_items = rel.shape
    if top.size == 0 or rel.nnz == 0:
        return np.zeros(top.shape, dtype=bool)
    row_of = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(rel.indptr))
    keys = row_of * n_items + rel.indices.astype(np.int64)  # sorted: canonical CSR
    q = np.arange(n_users, dtype=np.int64)[:, None] * n_items + top
    pos = np.searchsorted(keys, q)
    pos[pos == keys.size] = 0
    return (keys[pos] == q) & (top >= 0)


# ----------------------------------------------------------------------------- top-K


def _select(a: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unordered top-``kk`` positions per row of ``a`` (``kk <= a.shape[1]``).

    Returns ``(pos, vals, thr, nxt)``: positions and values of the selected
    entries, the ``kk``-th largest value ``thr`` and the largest value *not*
    selected ``nxt`` (``-inf`` if nothing is left out). ``nxt == thr`` flags a
    tie straddling the boundary, where argpartition's choice is arbitrary.
    """
    b, c = a.shape
    if kk < c:
        part = np.argpartition(a, c - kk - 1, axis=1)
        pos = part[:, c - kk :]
        nxt = np.take_along_axis(a, part[:, c - kk - 1 : c - kk], axis=1)[:, 0]
    else:
        pos = np.broadcast_to(np.arange(c, dtype=np.intp), (b, c))
        nxt = np.full(b, -np.inf, dtype=a.dtype)
    vals = np.take_along_axis(a, pos, axis=1)
    return pos, vals, vals.min(axis=1), nxt


def topk(
    scores: np.ndarray,
    k: int,
    exclude: sp.spmatrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items per row of ``scores``, best first.

    Args:
        scores: ``(b, n_items)`` real scores, higher is better. Not modified.
        k: list length (``>= 1``); may exceed ``n_items``.
        exclude: optional ``(b, n_items)`` sparse matrix; items stored with a
            non-zero value in row ``u`` are never returned for ``u`` (e.g. the
            user's training items).

    Returns:
        ``(indices, values)``: ``int64`` and float arrays of shape ``(b, k)``
        (values are float32 for float32 scores, float64 otherwise).

    Semantics:
        * Ordering is by score descending; **ties are broken by the lower item
          index first**, so the result is fully deterministic (also at the
          top-``k`` boundary: among items tied with the ``k``-th score the
          lowest indices are kept).
        * Excluded items, ``NaN`` scores and ``-inf`` scores are treated as
          non-recommendable. When a row has fewer than ``k`` recommendable
          items the list is padded at the end with index ``-1`` and value
          ``-inf``.

    Implementation (exact, O(b * n_items), no per-row Python loop): scores are
    copied (excluded entries set to ``-inf``) into a ``(b, B, nb)`` layout;
    block ``r`` holds the items ``r, r + nb, r + 2nb, ...``. The ``k`` blocks
    with the largest maxima contain every item scoring above the ``(k+1)``-th
    block maximum, so one ``argpartition`` over ``k * B`` candidates per row
    (``B ~ sqrt(n_items / k)``) replaces one over all items. Rows where a tie
    straddles the top-``k`` boundary are resolved exactly on the full row;
    the ``k`` survivors are then sorted by (score desc, index asc).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users, items), got shape {scores.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    b, n = scores.shape
    if exclude is not None:
        if not sp.issparse(exclude):
            raise TypeError(f"exclude must be a scipy.sparse matrix, got {type(exclude)!r}")
        if exclude.shape != (b, n):
            raise ValueError(
                f"exclude has shape {exclude.shape} but scores has shape {(b, n)}; "
                "both must be (users, items) for the same users"
            )
    dtype = scores.dtype if scores.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    idx_out = np.full((b, k), -1, dtype=np.int64)
    val_out = np.full((b, k), -np.inf, dtype=dtype)
    kk = min(k, n)
    if b == 0 or kk == 0:
        return idx_out, val_out

    # Block layout (see docstring); worthwhile only when blocks are not tiny.
    n_blk = round(math.sqrt(n / (kk + 1)))
    nb = -(-n // n_blk) if n_blk >= 4 else n
    use_blocks = n_blk >= 4 and nb > kk + 1
    width = nb * n_blk if use_blocks else n

    s = np.empty((b, width), dtype=dtype)
    s[:, :n] = scores
    s[:, n:] = -np.inf
    if exclude is not None:
        ex = sp.csr_matrix(exclude)
        nzmask = ex.data != 0
        rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(ex.indptr))[nzmask]
        s[rows, ex.indices[nzmask]] = -np.inf

    if use_blocks:
        s3 = s.reshape(b, n_blk, nb)
        bmax = s3.max(axis=1)  # (b, nb) block maxima; NaN propagates
        if np.isnan(bmax).any():  # NaN -> -inf, only when present
            np.copyto(s, -np.inf, where=np.isnan(s))
            bmax = s3.max(axis=1)
        bpos, _, _, bnext = _select(bmax, kk)
        cidx = (bpos[:, None, :] + nb * np.arange(n_blk)[None, :, None]).reshape(b, n_blk * kk)
        cand = s.reshape(-1)[cidx + np.arange(0, b * width, width)[:, None]]
        pos, vals, thr, nxt = _select(cand, kk)
        idx = np.take_along_axis(cidx, pos, axis=1).astype(np.int64)
        # items outside the candidates score <= bnext <= thr: equality means a tie
        tie = (nxt >= thr) | (bnext >= thr)
    else:
        if np.isnan(s.min()):
            np.copyto(s, -np.inf, where=np.isnan(s))
        pos, vals, thr, nxt = _select(s, kk)
        idx = pos.astype(np.int64)
        tie = nxt >= thr

    fix = np.flatnonzero(tie & (thr > -np.inf))
    if fix.size:  # exact resolution on the full rows: keep the lowest tied indices
        sf = s[fix, :n]
        tf = thr[fix][:, None]
        gt = sf > tf
        need = kk - np.count_nonzero(gt, axis=1)
        eq = sf == tf
        chosen = gt | (eq & (np.cumsum(eq, axis=1) <= need[:, None]))
        idx[fix] = np.nonzero(chosen)[1].reshape(fix.size, kk)
        vals[fix] = np.take_along_axis(sf, idx[fix], axis=1)

    # order by (score desc, index asc): sort by index, then stable sort by -score
    order = np.argsort(idx, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    idx[np.isneginf(vals)] = -1
    idx_out[:, :kk] = idx
    val_out[:, :kk] = vals
    return idx_out, val_out


# ----------------------------------------------------------------------------- accuracy


def rank_metrics(
    top: np.ndarray,
    relevant: sp.spmatrix,
    ks: Sequence[int],
) -> dict[str, np.ndarray]:
    """Per-user binary-relevance ranking metrics at each cut-off ``k``.

    Args:
        top: ``(n_users, K_max)`` ranked item indices (``-1`` = padding).
        relevant: ``(n_users, n_items)`` sparse matrix; non-zero entries are
            the user's relevant (held-out test) items.
        ks: cut-offs, each ``1 <= k <= K_max``.

    Returns:
        ``{"precision@k", "recall@k", "ndcg@k", "map@k", "mrr@k", "hitrate@k"}``
        for every ``k``, each a ``float64`` array of shape ``(n_users,)``.

    Definitions, with ``rel_r = 1`` iff the item at rank ``r`` (1-based) is
    relevant, ``hits@k = sum_{r<=k} rel_r`` and ``R = |relevant items of u|``:

    * ``precision@k = hits@k / k``
    * ``recall@k    = hits@k / R``
    * ``ndcg@k      = DCG@k / IDCG@k`` with ``DCG@k = sum_{r<=k} rel_r / log2(r + 1)``
      and ``IDCG@k = sum_{r=1}^{min(R, k)} 1 / log2(r + 1)``
    * ``map@k       = (sum_{r<=k} rel_r * hits@r / r) / min(R, k)``
    * ``mrr@k       = 1 / r*`` with ``r*`` the rank of the first hit within
      the top ``k`` (0 if there is none)
    * ``hitrate@k   = 1`` if ``hits@k > 0`` else ``0``

    Every user must have ``R >= 1`` (a ``ValueError`` is raised otherwise):
    users without relevant items are excluded by the caller, as
    :func:`retailgan.evaluation.evaluate` does. Each item may appear at most
    once per list.
    """
    rel = _as_binary_csr(relevant, "relevant")
    top = _check_top(top, rel.shape[1])
    n_users, k_max = top.shape
    if rel.shape[0] != n_users:
        raise ValueError(
            f"top has {n_users} rows (users) but relevant has {rel.shape[0]}; "
            "both must be users x ... with the same users in the same order"
        )
    ks = [_check_k(k, k_max) for k in ks]
    if not ks:
        raise ValueError("ks must contain at least one cut-off")
    n_rel = np.diff(rel.indptr).astype(np.float64)
    if n_users and n_rel.min() == 0:
        bad = int(np.flatnonzero(n_rel == 0)[0])
        raise ValueError(
            f"user row {bad} has no relevant items; exclude such users before calling "
            "rank_metrics (recall/ndcg/map are undefined for them)"
        )
    _check_unique_rows(top)

    hit = _hits_canonical(top, rel).astype(np.float64)
    ranks = np.arange(1, k_max + 1, dtype=np.float64)
    disc = 1.0 / np.log2(ranks + 1.0)
    cum_disc = np.concatenate(([0.0], np.cumsum(disc)))  # cum_disc[m] = sum_{r<=m} disc_r
    cum_hits = np.cumsum(hit, axis=1)
    cum_dcg = np.cumsum(hit * disc, axis=1)
    cum_ap = np.cumsum(hit * cum_hits / ranks, axis=1)
    # rank of the first hit (inf if none); k_max >= 1 is guaranteed by _check_k
    first = np.where(cum_hits[:, -1] > 0, np.argmax(hit, axis=1) + 1.0, np.inf)

    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        denom = np.minimum(n_rel, k)
        out[f"precision@{k}"] = h / k
        out[f"recall@{k}"] = h / n_rel
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / cum_disc[denom.astype(np.int64)]
        out[f"map@{k}"] = cum_ap[:, k - 1] / denom
        out[f"mrr@{k}"] = np.where(first <= k, 1.0 / first, 0.0)
        out[f"hitrate@{k}"] = (h > 0).astype(np.float64)
    return out


# ----------------------------------------------------------------------------- beyond accuracy


def coverage(top: np.ndarray, n_items: int, k: int) -> float:
    """Catalogue coverage@k: fraction of the ``n_items`` items that appear in at
    least one user's top-``k`` list (padding ignored)."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    top = _check_top(top, n_items)
    k = _check_k(k, top.shape[1])
    items = top[:, :k].ravel()
    seen = np.zeros(n_items, dtype=bool)
    seen[items[items >= 0]] = True
    return float(np.count_nonzero(seen)) / n_items


def novelty(
    top: np.ndarray,
    item_popularity: np.ndarray,
    n_users: int,
    k: int,
) -> np.ndarray:
    """Per-user novelty@k: mean self-information of the recommended items.

    ``novelty_u = mean_{i in top_k(u)} -log2(pop_i / n_users)`` where ``pop_i``
    is the number of (training) users who interacted with item ``i``.
    ``pop_i`` is clipped to ``[1, n_users]`` so unseen items get the finite
    maximum ``log2(n_users)``. Padding is ignored; a list with no items gets
    ``NaN``.
    """
    pop = np.asarray(item_popularity, dtype=np.float64)
    if pop.ndim != 1:
        raise ValueError(f"item_popularity must be 1-D (n_items,), got shape {pop.shape}")
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    top = _check_top(top, pop.size)
    k = _check_k(k, top.shape[1])
    info = -np.log2(np.clip(pop, 1.0, float(n_users)) / n_users)
    t = top[:, :k]
    valid = t >= 0
    total = np.where(valid, info[np.where(valid, t, 0)], 0.0).sum(axis=1)
    cnt = np.count_nonzero(valid, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, total / np.maximum(cnt, 1), np.nan)


def intra_list_diversity(
    top: np.ndarray,
    item_features: np.ndarray | sp.spmatrix,
    k: int,
) -> np.ndarray:
    """Per-user intra-list diversity@k: mean pairwise cosine distance in the list.

    ``ILD_u = mean_{i<j in top_k(u)} (1 - cos(f_i, f_j))`` over the ``m``
    non-padding items of the list (``m(m-1)/2`` pairs); ``NaN`` if ``m < 2``.
    Items with an all-zero feature vector have similarity 0 (distance 1) to
    every other item.

    Vectorised with the identity ``sum_{i<j} <g_i, g_j> = (|sum_i g_i|^2 -
    sum_i |g_i|^2) / 2`` on L2-normalised features ``g``: one sparse
    ``(users x items) @ (items x d)`` product, no ``k x k`` Gram matrices.
    """
    g, nonzero = _normalise_features(item_features)
    return _ild_normalised(top, g, nonzero, k)


def _normalise_features(
    item_features: np.ndarray | sp.spmatrix,
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
    """L2-normalised item features (zero rows stay zero) and the non-zero-row mask."""
    if sp.issparse(item_features):
        f = sp.csr_matrix(item_features, dtype=np.float64)
        norms = np.sqrt(np.asarray(f.multiply(f).sum(axis=1)).ravel())
    else:
        f = np.asarray(item_features, dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"item_features must be 2-D (n_items, d), got shape {f.shape}")
        norms = np.linalg.norm(f, axis=1)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    g = sp.csr_matrix(sp.diags(inv) @ f) if sp.issparse(f) else f * inv[:, None]
    return g, norms > 0


def _ild_normalised(
    top: np.ndarray, g: np.ndarray | sp.csr_matrix, nonzero: np.ndarray, k: int
) -> np.ndarray:
    n_items = g.shape[0]
    top = _check_top(top, n_items)
    k = _check_k(k, top.shape[1])
    t = top[:, :k]
    _check_unique_rows(t)
    n_users = t.shape[0]
    valid = t >= 0
    rows = np.repeat(np.arange(n_users), k).reshape(n_users, k)[valid]
    sel = sp.csr_matrix(
        (np.ones(rows.size), (rows, t[valid])), shape=(n_users, n_items), dtype=np.float64
    )
    ssum = sel @ g
    if sp.issparse(ssum):
        sq = np.asarray(ssum.multiply(ssum).sum(axis=1)).ravel()
    else:
        sq = np.einsum("ij,ij->i", ssum, ssum)
    self_sq = np.asarray(sel @ nonzero.astype(np.float64)).ravel()  # sum_i |g_i|^2
    m = np.count_nonzero(valid, axis=1).astype(np.float64)
    pairs = m * (m - 1) / 2
    sim_sum = (sq - self_sq) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, 1.0 - sim_sum / np.maximum(pairs, 1), np.nan)


def revenue(
    top: np.ndarray,
    relevant: sp.spmatrix,
    prices: np.ndarray,
    k: int,
) -> np.ndarray:
    """Per-user revenue@k = sum of unit prices of correctly recommended test items.

    ``revenue_u = sum_{r<=k, rel_r = 1} prices[top[u, r]]`` (binary relevance:
    quantities in ``relevant`` are ignored, each hit counts one unit).
    """
    rel = _as_binary_csr(relevant, "relevant")
    p = np.asarray(prices, dtype=np.float64)
    if p.shape != (rel.shape[1],):
        raise ValueError(f"prices must have shape (n_items,) = ({rel.shape[1]},), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("prices must be finite")
    top = _check_top(top, rel.shape[1])
    k = _check_k(k, top.shape[1])
    if top.shape[0] != rel.shape[0]:
        raise ValueError(f"top has {top.shape[0]} rows (users) but relevant has {rel.shape[0]}")
    t = top[:, :k]
    _check_unique_rows(t)
    hit = _hits_canonical(t, rel)
    return np.where(hit, p[np.where(t >= 0, t, 0)], 0.0).sum(axis=1)
