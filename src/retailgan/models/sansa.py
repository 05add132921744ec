"""SANSA: EASE^R's item-item weights as a sparse factored inverse (Spisak et al., RecSys 2023).

EASE^R scores a history ``x`` with ``x B``, ``B = I - P diag(1 / diag P)`` and
``P = (X^T X + l2 I)^-1``: a dense items x items matrix (``12 * n_items**2`` bytes to compute).
SANSA keeps ``P`` factored, ``P ~= U^T D U`` with ``U`` sparse and unit lower triangular in some
item order and ``D`` diagonal, so ``x B = (x U^T) (D U diag(-1 / diag P)) + x``: two sparse
products, memory linear in the catalogue (about ``neighbors + 1`` weights per item and factor).

The factors are those of the paper (``W = A^T D^-1 A`` with ``A`` the sparse approximate inverse
of the LDL^T factor ``L``), but found another way. The paper sparsifies ``X^T X``, factors it with
CHOLMOD (COLAMD ordering) or an incomplete Cholesky, and then approximates ``L^-1`` by minimal
residual iterations (scikit-sparse, i.e. SuiteSparse, and numba; neither is available as a plain
wheel here). This module uses numpy and scipy only and computes the inverse factor directly, as a
factorized sparse approximate inverse (FSAI, Kolotilina & Yeremin 1993):

1. **Sparsified Gram matrix.** ``X^T X`` in row blocks; per item its ``GRAM_FACTOR * neighbors``
   strongest co-purchases by ``G_ij / sqrt((G_ii + l2)(G_jj + l2))``, symmetrised, exact values.
2. **Order and pattern.** Items by decreasing popularity (instead of a fill-reducing ordering:
   nothing is filled in, and a product's strongest co-purchases are mostly with more popular
   products, which then precede it). Row ``i`` of ``U`` may hold item ``i`` and its ``neighbors``
   strongest preceding neighbours ``S_i``.
3. **Rows of the inverse factor.** ``(G + l2 I)[S, S] y = e_i`` on ``S = {i} + S_i`` (small dense
   systems, solved in batches), ``D_ii = y_i``, ``U_i = y / y_i``. With every predecessor in
   ``S_i`` this is exactly ``L^-1`` and ``D^-1`` of ``G + l2 I = L D L^T`` (row ``i`` is the
   regression of item ``i`` on the items before it); with a sparse pattern it is the classical
   FSAI approximation on that pattern, where the paper's UMR drops the smallest entries of an
   iterative approximation.

Entries of ``G`` outside the sparsified Gram matrix count as zero in step 3; where that leaves a
local system not positive definite (counted in ``fit_info``; none at S) the item keeps the diagonal
only. Neighbours and l2 were tuned on validation at S (docs/benchmarks.md 12): 25 neighbours beat
50 at every l2 and matched EASE^R.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.data.dataset import InteractionDataset
from retailgan.models.base import ModelConfig, Recommender, TrainingOptions
from retailgan.models.baselines import _feedback, _ItemItem
from retailgan.models.fast_topk import sparse_item_top_k
from retailgan.models.memory import require_memory
from retailgan.persistence import take_csr

log = logging.getLogger(__name__)

GRAM_FACTOR = 4
"""Co-purchases kept per item in the sparsified Gram matrix, as a multiple of ``neighbors``: the
local systems of step 3 read their off-diagonal entries from it."""
GRAM_BLOCK_ELEMENTS = 1 << 24
"""Gram rows computed at once: this many entries' worth (``n_items`` per row) at most."""
SOLVE_BLOCK_ELEMENTS = 1 << 23
"""Entries of the batched local systems held at once."""


@dataclass(frozen=True)
class SANSAConfig(ModelConfig):
    l2: float = 500.0
    """L2 penalty lambda, as EASE^R's ``l2``."""
    neighbors: int = 25
    """Weights per item in each sparse factor besides its own (the paper's target density is
    about ``(neighbors + 1) / n_items``)."""
    feedback: str = "binary"

    def validate(self) -> None:
        self.require("sansa", [(self.l2 > 0, "l2 > 0"), (self.neighbors >= 1, "neighbors >= 1")])


def sansa_bytes(n_users: int, n_items: int, nnz: int, neighbors: int) -> int:
    """Peak bytes of :func:`sansa_factors`, an upper estimate: two float64 copies of the history
    matrix; one block of Gram rows (sparse product, its entries' row, column and strength arrays
    and their sort, up to about 100 bytes per entry); the kept Gram entries while they are
    symmetrised and deduplicated (about 100 bytes each); one batch of local systems; the factors.
    On the generated log at M (99,903 products, 17.1M purchases, 50 neighbours) this gives
    4.5 GiB where the fit's peak RSS was 4.3 GiB above the loaded data (docs/benchmarks.md 12)."""
    history = 2 * (nnz * 16 + 8 * (n_users + n_items + 2))
    block = min(n_items, max(1, GRAM_BLOCK_ELEMENTS // max(n_items, 1))) * n_items * 100
    gram = min(GRAM_FACTOR * neighbors, n_items) * n_items * 100
    solve = SOLVE_BLOCK_ELEMENTS * (8 * 5)
    factors = 4 * (neighbors + 1) * n_items * (4 + 8) + 16 * n_items
    return history + block + gram + solve + factors


def sparsified_gram(X: sp.spmatrix, l2: float, keep: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Off-diagonal entries of ``X^T X`` kept per item (its ``keep`` largest normalised ones,
    union of both directions, exact values) as CSR with sorted indices, and the diagonal."""
    Xr = sp.csr_matrix(X, dtype=np.float64)
    XT = Xr.T.tocsr()
    n = Xr.shape[1]
    diag = np.asarray(Xr.multiply(Xr).sum(axis=0)).ravel()
    scale = 1.0 / np.sqrt(diag + l2)
    keep = min(keep, n - 1)
    rows, cols, vals = [], [], []
    step = max(1, GRAM_BLOCK_ELEMENTS // max(n, 1))
    for s in range(0, n, step):
        e = min(s + step, n)
        g = sp.csr_matrix(XT[s:e] @ Xr)  # (b, n) Gram rows, co-purchased pairs only
        r = np.repeat(np.arange(s, e, dtype=np.int64), np.diff(g.indptr))
        c = g.indices.astype(np.int64)
        v = g.data
        ok = (c != r) & (v != 0)
        r, c, v = r[ok], c[ok], v[ok]
        counts = np.bincount(r - s, minlength=e - s)
        if counts.max(initial=0) > keep:
            # Rows longer than `keep`: their strongest entries. The normalised strength is in
            # (0, 1], so 2 * row + (1 - strength) orders by row, then by decreasing strength.
            order = np.argsort(2.0 * (r - s) + (1.0 - v * scale[r] * scale[c]))
            rank = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
            sel = order[rank < keep]
            r, c, v = r[sel], c[sel], v[sel]
        rows.append(r)
        cols.append(c)
        vals.append(v)
        del g
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    del rows, cols, vals
    # Union of both directions; G is symmetric, so either direction's value is the entry.
    keys, first = np.unique(np.concatenate([r * n + c, c * n + r]), return_index=True)
    v = np.concatenate([v, v])[first]
    del r, c, first
    r, c = np.divmod(keys, n)
    del keys
    G = sp.csr_matrix((v, c, np.searchsorted(r, np.arange(n + 1))), shape=(n, n))
    return G, diag


def sansa_factors(X: sp.spmatrix, l2: float, neighbors: int) -> tuple[sp.csr_matrix, sp.csr_matrix, dict[str, Any]]:
    """``(U^T, V)`` with ``x U^T V + x`` approximating EASE^R's scores for a history ``x`` (see the
    module docstring), and counts describing the fit."""
    n = X.shape[1]
    G, diag = sparsified_gram(X, l2, GRAM_FACTOR * neighbors)
    dl = diag + l2
    # Order: decreasing popularity (ties by index); pos[item] = place in the order.
    order = np.lexsort((np.arange(n), -diag))
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    # Pattern: per row its `neighbors` strongest preceding neighbours.
    r = np.repeat(np.arange(n, dtype=np.int64), np.diff(G.indptr))
    c = G.indices.astype(np.int64)
    strength = G.data / np.sqrt(dl[r] * dl[c])
    pred = pos[c] < pos[r]
    r, c, strength = r[pred], c[pred], strength[pred]
    o = np.lexsort((-strength, r))
    r, c = r[o], c[o]
    counts = np.bincount(r, minlength=n)
    rank = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
    sel = rank < neighbors
    r, c = r[sel], c[sel]
    counts = np.minimum(counts, neighbors)
    starts = np.cumsum(counts) - counts
    # Solve in batches of items with similar pattern sizes (little padding).
    by_size = np.argsort(counts, kind="stable")
    u_rows, u_cols, u_vals = [], [], []
    d = np.empty(n, np.float64)
    failed = 0
    a = 0
    while a < n:
        w = int(counts[by_size[min(n - 1, a)]]) + 1
        # Extend the batch while its widest system stays within the element budget.
        b = a + max(1, SOLVE_BLOCK_ELEMENTS // (w * w))
        b = min(b, n)
        w = int(counts[by_size[b - 1]]) + 1
        items = by_size[a:b]
        m = len(items)
        idx = np.full((m, w), -1, np.int64)
        idx[:, 0] = items
        k = counts[items]
        j = np.repeat(np.arange(m), k)
        slot = 1 + np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
        src = np.repeat(starts[items], k) + slot - 1
        idx[j, slot] = c[src]
        valid = idx >= 0
        # Off-diagonal entries of the local systems from the sparsified Gram matrix (one
        # triangle; the systems are symmetric).
        iu, ju = np.triu_indices(w, 1)
        both = valid[:, iu] & valid[:, ju]
        upper = np.zeros(both.shape)
        # scipy's CSR lookup: a binary search inside each (short, sorted) row.
        upper[both] = np.asarray(G[idx[:, iu][both], idx[:, ju][both]]).ravel()
        A = np.zeros((m, w, w))
        A[:, iu, ju] = upper
        A[:, ju, iu] = upper
        del upper, both
        di = np.arange(w)
        A[:, di, di] = np.where(valid, dl[np.maximum(idx, 0)], 1.0)
        rhs = np.zeros((m, w, 1))
        rhs[:, 0, 0] = 1.0
        try:
            y = np.linalg.solve(A, rhs)[:, :, 0]
            bad = ~(np.isfinite(y).all(axis=1) & (y[:, 0] > 0))
        except np.linalg.LinAlgError:
            y = np.zeros((m, w))
            bad = np.ones(m, bool)
        # A local system that is not positive definite: the item keeps its diagonal only.
        y[bad] = 0.0
        y[bad, 0] = 1.0 / dl[items[bad]]
        failed += int(bad.sum())
        d[items] = y[:, 0]
        u = y / y[:, :1]
        u_rows.append(np.broadcast_to(items[:, None], idx.shape)[valid])
        u_cols.append(idx[valid])
        u_vals.append(u[valid])
        a = b
    U = sp.csr_matrix(
        (np.concatenate(u_vals), (np.concatenate(u_rows), np.concatenate(u_cols))), shape=(n, n)
    )
    diag_p = np.asarray(U.multiply(U).T @ d).ravel()  # diag(U^T D U)
    V = sp.csr_matrix(sp.diags(d) @ U @ sp.diags(-1.0 / diag_p), dtype=np.float32)
    Ut = sp.csr_matrix(U.T, dtype=np.float32)
    Ut.sort_indices()
    V.sort_indices()
    info = {"gram_nnz": int(G.nnz), "factor_nnz": int(U.nnz), "not_positive_definite": failed}
    return Ut, V, info


class SANSA(_ItemItem):
    """Sparse approximate EASE^R: ``x U^T V + x`` with two sparse factors (module docstring)."""

    name = "sansa"
    config_class = SANSAConfig

    Ut: sp.csr_matrix
    V: sp.csr_matrix

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "l2": trial.suggest_float("l2", 1.0, 1e4, log=True),
            "neighbors": trial.suggest_int("neighbors", 10, 150, log=True),
        }

    def _fit(self, dataset: InteractionDataset, options: TrainingOptions) -> None:
        cfg: SANSAConfig = self.config  # type: ignore[assignment]
        cfg.validate()
        X = _feedback(dataset, cfg.feedback)
        require_memory(
            "sansa", sansa_bytes(X.shape[0], X.shape[1], X.nnz, cfg.neighbors),
            "its sparse factors", "a smaller neighbors or ials",
        )
        self._feedback_matrix = X if cfg.feedback != "binary" else None
        self.Ut, self.V, self.fit_info = sansa_factors(X, cfg.l2, cfg.neighbors)
        if self.fit_info["not_positive_definite"]:
            log.info("sansa: %d items kept their diagonal only", self.fit_info["not_positive_definite"])

    def _scores(self, history: sp.csr_matrix) -> sp.csr_matrix:
        h = sp.csr_matrix(history, dtype=np.float32)
        return sp.csr_matrix((h @ self.Ut) @ self.V + h)

    def score_histories(self, history: sp.csr_matrix) -> np.ndarray:
        if history.shape[1] != self.n_items:
            raise ValueError(f"history has {history.shape[1]} item columns, model has {self.n_items}")
        return self._scores(history).toarray().astype(np.float32, copy=False)

    def _top_k_known(
        self, user_idx: np.ndarray, k: int, banned: sp.csr_matrix, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sparse products through both factors, no dense row
        (:func:`~retailgan.models.fast_topk.sparse_item_top_k`)."""
        user_idx = np.asarray(user_idx, dtype=np.int64)

        def dense(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return Recommender._top_k_known(self, user_idx[rows], k, banned[rows], allowed)

        return sparse_item_top_k(self._train_matrix[user_idx], self._scores, k, banned, allowed, dense)

    def _state(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {}
        for key, m in (("Ut", self.Ut), ("V", self.V)):
            state |= {f"{key}.data": m.data.astype(np.float32), f"{key}.indices": m.indices.astype(np.int64),
                      f"{key}.indptr": m.indptr.astype(np.int64)}
        if getattr(self, "_feedback_matrix", None) is not None:
            F = self._feedback_matrix
            state |= {"F.data": F.data, "F.indices": F.indices.astype(np.int64), "F.indptr": F.indptr.astype(np.int64)}
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        shape = (self.n_items, self.n_items)
        self.Ut = take_csr(arrays, "Ut", shape)
        self.V = take_csr(arrays, "V", shape)
        self._load_feedback(arrays)


