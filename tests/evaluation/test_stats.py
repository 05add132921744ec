"""Tests of retailgan.evaluation.stats (bootstrap CIs and paired tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retailgan.evaluation import bootstrap_means, mean_ci, paired_comparison


def test_known_difference_is_detected() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, size=2000)
    a = b + 0.05 + rng.normal(0, 0.1, size=b.size)  # true mean difference 0.05
    res = paired_comparison(a, b, n_boot=2000, seed=1)
    assert res.n == 2000
    assert res.mean_diff == pytest.approx(float(np.mean(a - b)))
    assert res.mean_a == pytest.approx(float(a.mean()))
    assert res.mean_b == pytest.approx(float(b.mean()))
    assert res.ci_low < 0.05 < res.ci_high
    assert res.ci_low > 0.0  # significant: CI excludes 0
    # the CI is about mean +- 1.96 * sd / sqrt(n)
    half = 1.96 * np.std(a - b, ddof=1) / math.sqrt(a.size)
    assert res.ci_high - res.ci_low == pytest.approx(2 * half, rel=0.15)
    assert res.p_ttest < 1e-6
    assert res.p_wilcoxon < 1e-6


def test_no_difference_is_not_significant() -> None:
    rng = np.random.default_rng(5)
    b = rng.uniform(size=500)
    a = b + rng.normal(0, 0.1, size=b.size)  # zero true difference
    res = paired_comparison(a, b, n_boot=1000, seed=0)
    assert res.ci_low < 0.0 < res.ci_high
    assert res.p_ttest > 0.05
    assert res.p_wilcoxon > 0.05


def test_identical_arrays_give_zero_difference() -> None:
    x = np.array([0.1, 0.5, 0.0, 1.0, 0.3])
    res = paired_comparison(x, x.copy(), n_boot=500)
    assert res.mean_diff == 0.0
    assert (res.ci_low, res.ci_high) == (0.0, 0.0)
    assert res.p_ttest == 1.0
    assert res.p_wilcoxon == 1.0


def test_constant_nonzero_difference() -> None:
    b = np.arange(30.0)
    res = paired_comparison(b + 1.0, b, n_boot=200)  # exactly 1.0 for every user
    assert res.mean_diff == 1.0
    assert res.ci_low == pytest.approx(1.0)
    assert res.ci_high == pytest.approx(1.0)
    assert res.p_ttest == 0.0
    assert res.p_wilcoxon < 1e-6


def test_seeded_and_reproducible() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(300), rng.random(300)
    r1 = paired_comparison(a, b, n_boot=700, seed=42)
    r2 = paired_comparison(a, b, n_boot=700, seed=42)
    r3 = paired_comparison(a, b, n_boot=700, seed=43)
    assert r1 == r2
    assert (r1.ci_low, r1.ci_high) != (r3.ci_low, r3.ci_high)
    np.testing.assert_array_equal(bootstrap_means(a, 50, seed=1), bootstrap_means(a, 50, seed=1))


def test_bootstrap_means_chunking_covers_all_replicates() -> None:
    # n large enough that replicates are drawn in several chunks
    x = np.random.default_rng(0).random(1_000_000)
    boot = bootstrap_means(x, n_boot=9, seed=0)
    assert boot.shape == (9,)
    assert np.all(np.abs(boot - x.mean()) < 0.01)
    assert np.unique(boot).size == 9


def test_mean_ci() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(0.3, 0.2, size=1000)
    ci = mean_ci(x, n_boot=2000, seed=0, alpha=0.05)
    assert ci.mean == pytest.approx(float(x.mean()))
    assert ci.low < ci.mean < ci.high
    assert ci.low < 0.3 < ci.high
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert ci.high - ci.low == pytest.approx(2 * half, rel=0.15)
    wider = mean_ci(x, n_boot=2000, seed=0, alpha=0.01)
    assert wider.low < ci.low and wider.high > ci.high
    assert ci.as_dict()["n"] == 1000


def test_errors() -> None:
    with pytest.raises(ValueError, match="same users"):
        paired_comparison(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        mean_ci(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        mean_ci(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="alpha"):
        mean_ci(np.ones(3), alpha=1.5)
    with pytest.raises(ValueError, match="1-D"):
        paired_comparison(np.ones((2, 2)), np.ones((2, 2)))
