"""select_top_k: each row's k best, ties by lower index at every place (also the k-th)."""

from __future__ import annotations

import numpy as np
import pytest

from retailgan.models.base import select_top_k


def _expected(row: np.ndarray, k: int) -> list[int]:
    order = [int(j) for j in np.lexsort((np.arange(len(row)), -row))[:k] if np.isfinite(row[j])]
    return order + [-1] * (k - len(order))


@pytest.mark.parametrize("kind", ["normal", "few_values", "many_values", "mostly_banned"])
@pytest.mark.parametrize("wide", [False, True])  # wide rows take the sampled-threshold path
def test_select_top_k_matches_a_full_sort(kind, wide):
    rng = np.random.default_rng(hash((kind, wide)) % 2**32)
    for _ in range(40):
        n, k = int(rng.integers(1, 7)), int(rng.integers(1, 12))
        m = int(rng.integers(700, 3000)) if wide else int(rng.integers(1, 40))
        if kind == "normal":
            s = rng.standard_normal((n, m)).astype(np.float32)
        elif kind == "few_values":
            s = rng.integers(0, 4, (n, m)).astype(np.float64)
        elif kind == "many_values":
            s = rng.integers(0, 300, (n, m)).astype(np.float32)
        else:
            s = rng.standard_normal((n, m))
            s[rng.random((n, m)) < 0.97] = -np.inf
        top, scores = select_top_k(s.copy(), k)
        for r in range(n):
            want = _expected(s[r], k)
            assert top[r].tolist() == want
            got = scores[r][: sum(j >= 0 for j in want)]
            assert np.array_equal(got, s[r][[j for j in want if j >= 0]])
