"""Uncertainty and significance for per-user metrics (seeded, reproducible)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

__all__ = ["BootstrapCI", "PairedResult", "bootstrap_means", "mean_ci", "paired_comparison"]

# Bootstrap replicates are drawn in chunks of at most this many indices, so
# memory stays bounded (~32 MB of int64) whatever n_boot * n is.
_CHUNK_ELEMS = 4_000_000


@dataclass(frozen=True)
class BootstrapCI:
    """Mean of a sample with its bootstrap percentile confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    alpha: float
    n_boot: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of metric ``a`` vs ``b`` on the same users (``diff = a - b``).

    ``ci_low``/``ci_high``: bootstrap percentile CI of the mean difference at
    level ``1 - alpha``; ``p_ttest``: two-sided paired t-test;
    ``p_wilcoxon``: two-sided Wilcoxon signed-rank test (zero differences
    dropped). Both p-values are 1.0 when all differences are exactly zero;
    ``p_ttest`` is 0.0 for a constant non-zero difference and NaN when ``n < 2``.
    """

    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    p_ttest: float
    p_wilcoxon: float
    n: int
    alpha: float
    n_boot: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _check_sample(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per user), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf; drop those users first")
    return x


def _check_params(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_means(x: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> np.ndarray:
    """``n_boot`` means of resamples (with replacement, size ``len(x)``) of ``x``.

    Deterministic for a given ``(x, n_boot, seed)``.
    """
    x = _check_sample(x, "x")
    _check_params(n_boot, 0.05)
    rng = np.random.default_rng(seed)
    n = x.size
    rows = max(1, _CHUNK_ELEMS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        m = min(rows, n_boot - start)
        out[start : start + m] = x[rng.integers(0, n, size=(m, n))].mean(axis=1)
    return out


def _percentile_ci(boot: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def mean_ci(
    x: np.ndarray, *, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05
) -> BootstrapCI:
    """Mean of ``x`` with a ``1 - alpha`` bootstrap percentile CI."""
    x = _check_sample(x, "x")
    _check_params(n_boot, alpha)
    lo, hi = _percentile_ci(bootstrap_means(x, n_boot, seed), alpha)
    return BootstrapCI(float(x.mean()), lo, hi, int(x.size), alpha, n_boot)


def paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedResult:
    """Compare two models' per-user metric arrays, aligned on the same users.

    Returns the mean difference ``mean(a - b)``, its bootstrap percentile CI
    (users resampled with replacement, ``n_boot`` replicates, ``seed``), the
    paired t-test p-value and the Wilcoxon signed-rank p-value.
    """
    a = _check_sample(a, "a")
    b = _check_sample(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must hold the same users in the same order; shapes {a.shape} != {b.shape}"
        )
    _check_params(n_boot, alpha)
    d = a - b
    lo, hi = _percentile_ci(bootstrap_means(d, n_boot, seed), alpha)
    if not np.any(d):
        p_t = p_w = 1.0
    else:
        p_w = float(sps.wilcoxon(d).pvalue)
        if d.size < 2:
            p_t = float("nan")
        elif np.all(d == d[0]):  # constant non-zero difference: zero variance
            p_t = 0.0
        else:
            p_t = float(sps.ttest_rel(a, b).pvalue)
    return PairedResult(
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_diff=float(d.mean()),
        ci_low=lo,
        ci_high=hi,
        p_ttest=p_t,
        p_wilcoxon=p_w,
        n=int(d.size),
        alpha=alpha,
        n_boot=n_boot,
    )
