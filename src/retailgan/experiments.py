"""Side-by-side comparison of recommenders on one leak-free split.

For every model: tune on the validation part (or take the defaults), fit on the whole training
part with the chosen parameters, evaluate once on the test part with full ranking. Per-user metric
arrays are kept so every model can be compared to the best one with a paired test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan import progress
from retailgan.data.dataset import InteractionDataset
from retailgan.data.splits import Split
from retailgan.evaluation.protocols import EvaluationResult, evaluate
from retailgan.evaluation.stats import mean_ci, paired_comparison
from retailgan.models.base import Recommender, TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.tuning import tune

log = logging.getLogger(__name__)


@dataclass
class ModelRun:
    """One model's outcome in a comparison."""

    name: str
    params: dict[str, Any]
    model: Recommender
    result: EvaluationResult
    validation_value: float
    timings: dict[str, float]
    trials: list[dict[str, Any]] = field(default_factory=list)
    views: dict[str, EvaluationResult] = field(default_factory=dict)
    """``cold-items`` split: the cold-only, warm-only and hybrid evaluations (``result`` is the
    hybrid one)."""


def item_features_for_diversity(dataset: InteractionDataset) -> sp.csr_matrix:
    """Features used for intra-list diversity: catalogue categories when the data has them,
    otherwise each item's training users (a collaborative notion of similarity)."""
    if any(c is not None for c in dataset.item_info.categories):
        return dataset.item_info.category_features()
    return dataset.matrix().T.tocsr()


def run_comparison(
    split: Split,
    models: Sequence[str],
    *,
    ks: Sequence[int] = (10, 20),
    seed: int = 0,
    tune_trials: int = 0,
    metric: str | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> list[ModelRun]:
    """Tune (validation only), fit on ``split.train`` and evaluate on ``split.test``, per model."""
    ks = tuple(sorted(set(int(k) for k in ks)))
    metric = metric or f"ndcg@{ks[-1]}"
    params = params or {}
    train = split.train
    prices = train.item_info.prices if train.item_info.has_prices() else None
    features = item_features_for_diversity(train)
    runs: list[ModelRun] = []
    # Models differ too much in cost (pop: a second; a GAN: minutes) for a time-left estimate.
    with progress.steps("compare", len(models), "model", estimate=False) as steps:
        for i, name in enumerate(models, start=1):
            steps.begin(i, f"{name}: tune on validation ({tune_trials} trials), fit, evaluate on test")
            runs.append(_run_one(name, split, ks, seed, tune_trials, metric, params.get(name), prices, features))
            steps.done(i, f"{name}: test {metric} {runs[-1].result.summary()[metric]:.4f}")
    return runs


def _run_one(name, split, ks, seed, tune_trials, metric, fixed, prices, features) -> ModelRun:
    """One model of :func:`run_comparison`: tune, fit on the training part, evaluate on the test part."""
    cls = get_model_class(name)
    train = split.train
    tuned = tune(name, split, n_trials=tune_trials, seed=seed, metric=metric, fixed=fixed)
    model = cls(**tuned.params)
    model.fit(train, TrainingOptions(seed=seed))
    views: dict[str, EvaluationResult] = {}
    if split.cold_test_items is not None:
        from retailgan.evaluation.cold import evaluate_views

        views = evaluate_views(model, split, ks)
        result = views["hybrid"]
    else:
        result = evaluate(model, train.matrix(), split.test.matrix(), ks=ks, item_prices=prices, item_features=features)
    return ModelRun(
        name=name,
        params=tuned.params,
        model=model,
        result=result,
        validation_value=tuned.value,
        timings={"tune_s": tuned.seconds, "fit_s": model.fit_seconds, "eval_s": result.eval_seconds},
        trials=tuned.trials,
        views=views,
    )


def comparison_json(
    runs: Sequence[ModelRun],
    split: Split,
    *,
    dataset_name: str,
    seed: int,
    primary: str,
    ci_metrics: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The JSON document of ``retailgan compare`` (metrics, 95 % CIs, paired tests vs the best)."""
    best = max(runs, key=lambda r: r.result.summary().get(primary, float("-inf")))
    results = []
    for run in runs:
        summary = run.result.summary()
        cis = {}
        for m in ci_metrics or [primary]:
            if m in run.result.per_user:
                ci = mean_ci(run.result.per_user[m], n_boot=2000, seed=seed)
                cis[m] = [ci.low, ci.high]
        entry: dict[str, Any] = {
            "model": run.name,
            "params": run.params,
            "metrics": {k: (None if np.isnan(v) else float(v)) for k, v in summary.items()},
            "ci": cis,
            "validation": {primary: run.validation_value},
            "timings": run.timings,
            "n_users": run.result.n_users,
        }
        if run is not best and primary in run.result.per_user:
            assert np.array_equal(run.result.user_idx, best.result.user_idx)
            pr = paired_comparison(run.result.per_user[primary], best.result.per_user[primary], n_boot=2000, seed=seed)
            entry["vs_best"] = {"best": best.name, "metric": primary, **pr.as_dict()}
        results.append(entry)
    if runs and runs[0].views:
        _add_views(runs, results, primary, seed)
    return {
        "dataset": dataset_name,
        "protocol": split.protocol,
        "seed": seed,
        "split": split.describe(),
        "primary_metric": primary,
        "best": best.name,
        "results": results,
    }


def _add_views(runs: Sequence[ModelRun], results: list[dict[str, Any]], primary: str, seed: int) -> None:
    """Each result's ``views``: per view (cold, warm, hybrid) its metrics, evaluated customers and
    a paired comparison of ``primary`` with the view's best model."""
    for view in runs[0].views:
        best = max(runs, key=lambda r: r.views[view].summary().get(primary, float("-inf")))
        for run, entry in zip(runs, results, strict=True):
            res = run.views[view]
            out: dict[str, Any] = {
                "metrics": {k: (None if np.isnan(v) else float(v)) for k, v in res.summary().items()},
                "n_users": res.n_users,
            }
            if run is not best and res.n_users:
                other = best.views[view].per_user[primary]
                pr = paired_comparison(res.per_user[primary], other, n_boot=2000, seed=seed)
                out["vs_best"] = {"best": best.name, "metric": primary, **pr.as_dict()}
            entry.setdefault("views", {})[view] = out
