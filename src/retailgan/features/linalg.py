"""Seeded randomized truncated SVD (Halko, Martinsson, Tropp 2011) for sparse or dense matrices.

Deterministic for a given seed, which ARPACK-based ``scipy.sparse.linalg.svds`` is not without a
fixed start vector, and fast on the tall sparse matrices of product text and buyers.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def randomized_svd(
    a: sp.spmatrix | np.ndarray, rank: int, *, seed: int = 0, n_iter: int = 5, oversample: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U (m, r), s (r,), Vt (r, n)`` with ``r = min(rank, m, n)``, singular values descending.

    Signs are fixed (largest-magnitude entry of each right singular vector positive) so that the
    result does not depend on the LAPACK build.
    """
    m, n = a.shape
    r = max(min(rank, m, n), 0)
    if r == 0:
        return np.zeros((m, 0)), np.zeros(0), np.zeros((0, n))
    rng = np.random.default_rng(seed)
    width = min(r + oversample, min(m, n))
    omega = rng.standard_normal((n, width))
    y = np.asarray(a @ omega)
    q, _ = np.linalg.qr(y)
    for _ in range(n_iter):
        # Power iterations with re-orthonormalisation, for slowly decaying spectra (text).
        z, _ = np.linalg.qr(np.asarray(a.T @ q))
        q, _ = np.linalg.qr(np.asarray(a @ z))
    b = np.asarray((a.T @ q).T)
    ub, s, vt = np.linalg.svd(b, full_matrices=False)
    u = q @ ub
    u, s, vt = u[:, :r], s[:r], vt[:r]
    flip = np.sign(vt[np.arange(r), np.abs(vt).argmax(axis=1)])
    flip[flip == 0] = 1.0
    return u * flip, s, vt * flip[:, None]
