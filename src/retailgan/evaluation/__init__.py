"""Leak-free full-ranking evaluation: top-K metrics, protocol, statistics, reports.

Names are imported from their submodules on first use (PEP 562): early stopping during a fit
needs only :mod:`.protocols` and :mod:`.metrics`, not scipy.stats or matplotlib (seconds of
import time).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SOURCES = {
    "metrics": ("RANK_METRICS", "coverage", "hit_matrix", "intra_list_diversity", "novelty", "rank_metrics",
                "revenue", "topk"),
    "protocols": ("EvaluationResult", "ScoringModel", "evaluate"),
    "report": ("plot_results", "results_table_markdown"),
    "stats": ("BootstrapCI", "PairedResult", "bootstrap_means", "mean_ci", "paired_comparison"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "RANK_METRICS",
    "BootstrapCI",
    "EvaluationResult",
    "PairedResult",
    "ScoringModel",
    "bootstrap_means",
    "coverage",
    "evaluate",
    "hit_matrix",
    "intra_list_diversity",
    "mean_ci",
    "novelty",
    "paired_comparison",
    "plot_results",
    "rank_metrics",
    "results_table_markdown",
    "revenue",
    "topk",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from retailgan.evaluation.metrics import (
        RANK_METRICS,
        coverage,
        hit_matrix,
        intra_list_diversity,
        novelty,
        rank_metrics,
        revenue,
        topk,
    )
    from retailgan.evaluation.protocols import EvaluationResult, ScoringModel, evaluate
    from retailgan.evaluation.report import plot_results, results_table_markdown
    from retailgan.evaluation.stats import (
        BootstrapCI,
        PairedResult,
        bootstrap_means,
        mean_ci,
        paired_comparison,
    )
