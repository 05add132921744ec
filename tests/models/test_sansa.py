"""SANSA: sparse factors of EASE^R's inverse (retailgan.models.sansa)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from retailgan.errors import ConfigError
from retailgan.models import memory
from retailgan.models.baselines import EASE, ease_weights
from retailgan.models.sansa import SANSA, sansa_bytes, sansa_factors, sparsified_gram
from tests.conftest import oracle_dataset


def _dense_log(n_users: int = 400, n_items: int = 40, seed: int = 0) -> sp.csr_matrix:
    """Binary purchases where every pair of products is bought together by someone."""
    rng = np.random.default_rng(seed)
    X = (rng.random((n_users, n_items)) < 0.3).astype(np.float32)
    X[np.arange(n_users) % 2 == 0, :] = 1.0  # every pair co-purchased
    X[::2, :] *= rng.random((n_users // 2, n_items)) < 0.9
    return sp.csr_matrix(X)


def _weights(Ut: sp.csr_matrix, V: sp.csr_matrix) -> np.ndarray:
    return (Ut @ V).toarray() + np.eye(Ut.shape[0])


def test_full_pattern_is_ease_exactly():
    """With every preceding product in the pattern the factors are exact: EASE^R's weights."""
    X = _dense_log()
    n = X.shape[1]
    Ut, V, info = sansa_factors(X, 10.0, n)
    assert info["factor_nnz"] == n * (n + 1) // 2 and info["not_positive_definite"] == 0
    np.testing.assert_allclose(_weights(Ut, V), ease_weights(X, 10.0), atol=2e-6)


def test_sparse_pattern_keeps_neighbors_per_row_and_stays_close():
    X = _dense_log(n_items=60)
    Ut, V, info = sansa_factors(X, 10.0, 8)
    U = Ut.T.tocsr()
    assert np.diff(U.indptr).max() <= 9  # itself and at most 8 neighbours
    assert info["factor_nnz"] == U.nnz < 60 * 61 // 2
    W, B = _weights(Ut, V), ease_weights(X, 10.0)
    np.testing.assert_allclose(np.diag(W), 0.0, atol=1e-6)  # zero diagonal, as EASE^R
    # Half of the preceding products per row already gives EASE^R's weights within 50 %.
    Ut, V, _ = sansa_factors(X, 10.0, 32)
    assert np.linalg.norm(_weights(Ut, V) - B) < 0.5 * np.linalg.norm(B)


def test_sparsified_gram_keeps_the_strongest_pairs_with_exact_values():
    X = _dense_log(n_items=30)
    G, diag = sparsified_gram(X, 5.0, 4)
    full = (X.T @ X).toarray()
    np.testing.assert_array_equal(diag, np.diag(full))
    assert (G != G.T).nnz == 0  # symmetric pattern and values
    r, c = G.nonzero()
    np.testing.assert_array_equal(np.asarray(G[r, c]).ravel(), full[r, c])
    # Each row's strongest normalised partner is kept.
    norm = full / np.sqrt(np.outer(diag + 5.0, diag + 5.0))
    np.fill_diagonal(norm, -1)
    best = norm.argmax(axis=1)
    assert all(G[i, best[i]] != 0 for i in range(30))


def test_scores_rank_like_ease_on_the_oracle():
    ds, answer = oracle_dataset()
    sansa = SANSA(l2=1.0, neighbors=50).fit(ds)
    ease = EASE(l2=1.0).fit(ds)
    users = list(answer)
    assert sansa.recommend(users, k=1).item_ids.tolist() == ease.recommend(users, k=1).item_ids.tolist()


def test_refuses_before_allocating(monkeypatch):
    ds, _ = oracle_dataset()
    need = sansa_bytes(ds.n_users, ds.n_items, len(ds), 20)
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)

    def never(*args, **kwargs):
        raise AssertionError("allocated despite the refusal")

    monkeypatch.setattr("retailgan.models.sansa.sansa_factors", never)
    with pytest.raises(ConfigError, match=r"^sansa: needs about .* GiB .* is available; use a smaller neighbors"):
        SANSA(l2=1.0, neighbors=20).fit(ds)


def test_estimate_counts_what_it_allocates():
    rng = np.random.default_rng(0)
    X = sp.random(3000, 1000, density=0.01, format="csr", random_state=rng, dtype=np.float32)
    X.data[:] = 1.0
    tracemalloc.start()
    sansa_factors(X, 10.0, 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= sansa_bytes(3000, 1000, X.nnz, 30)


@pytest.mark.parametrize("bad", [{"l2": 0.0}, {"neighbors": 0}])
def test_config_is_checked(bad):
    ds, _ = oracle_dataset()
    with pytest.raises(ConfigError, match="sansa"):
        SANSA(**bad).fit(ds)
