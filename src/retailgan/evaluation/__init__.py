"""Leak-free full-ranking evaluation: top-K metrics, protocol, statistics, reports."""

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
