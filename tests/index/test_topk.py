"""Top-k indexes: the exact backend against brute force, faiss recall on small data."""

from __future__ import annotations

import numpy as np
import pytest

from retailgan.errors import ConfigError
from retailgan.index import ExactIndex, FaissIndex, faiss_available, make_index


def _vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_matches_brute_force():
    items, queries = _vectors(500, 16), _vectors(20, 16, seed=1)
    scores, ids = ExactIndex(16, items).search(queries, 7)
    full = queries @ items.T
    for r in range(len(queries)):
        expected = np.argsort(-full[r], kind="stable")[:7]
        assert list(ids[r]) == list(expected)
        np.testing.assert_allclose(scores[r], full[r, expected], rtol=1e-6)


def test_exact_ties_by_lower_id_and_padding():
    items = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    scores, ids = ExactIndex(2, items).search(np.array([1.0, 0.0]), 5)
    assert ids.tolist() == [[0, 1, 2, -1, -1]]
    assert np.isneginf(scores[0, 3:]).all()


def test_incremental_add_gets_next_ids():
    index = ExactIndex(4, _vectors(10, 4))
    new = _vectors(1, 4, seed=5)
    index.add(new)
    assert len(index) == 11
    _, ids = index.search(new, 1)
    assert ids[0, 0] == 10


def test_errors():
    with pytest.raises(ConfigError, match="shape"):
        ExactIndex(4, _vectors(3, 5))
    with pytest.raises(ConfigError, match="shape"):
        ExactIndex(4, _vectors(3, 4)).search(_vectors(1, 3), 2)
    with pytest.raises(ConfigError, match="k must be"):
        ExactIndex(4, _vectors(3, 4)).search(_vectors(1, 4), 0)
    with pytest.raises(ConfigError, match="unknown index kind"):
        make_index("lsh", _vectors(3, 4))


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (extra 'ann')")
@pytest.mark.parametrize("kind,params", [("hnsw", {"ef_search": 128}), ("ivf", {"nlist": 16, "nprobe": 8})])
def test_faiss_recall_against_exact(kind, params):
    items, queries = _vectors(3000, 16), _vectors(50, 16, seed=2)
    _, truth = ExactIndex(16, items).search(queries, 10)
    index = make_index(kind, items, **params)
    assert isinstance(index, FaissIndex) and len(index) == 3000
    scores, found = index.search(queries, 10)
    assert _recall(found, truth) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first, inner product


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (extra 'ann')")
def test_faiss_pads_small_index():
    index = make_index("hnsw", _vectors(3, 8))
    scores, ids = index.search(_vectors(1, 8, seed=3), 5)
    assert sorted(ids[0, :3].tolist()) == [0, 1, 2]
    assert ids[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()
