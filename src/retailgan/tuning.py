"""Hyperparameter search with Optuna, on the validation part of a split only.

Each trial fits on ``split.train_inner`` and is scored on ``split.validation``; the test part is
never seen. Iterative models report their validation metric every epoch so poor trials are pruned,
and the epoch count that early stopping picked becomes a hyperparameter of the final fit (there is
no validation data left when the final model is fitted on all of ``split.train``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from retailgan import progress
from retailgan.data.splits import Split
from retailgan.errors import ConfigError
from retailgan.models.base import IterativeRecommender, TrainingOptions
from retailgan.models.registry import get_model_class

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """Best parameters found (including ``epochs`` for iterative models) and the trial log."""

    model: str
    params: dict[str, Any]
    value: float
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    searched: list[str] = field(default_factory=list)
    """Names of the parameters chosen on validation: the searched ones, and ``epochs`` for
    iterative models (the rest of ``params`` are defaults or fixed)."""


def validate_once(
    name: str, params: dict[str, Any], split: Split, *, seed: int, metric: str, callback: Any = None
) -> tuple[float, dict[str, Any]]:
    """Fit ``name`` with ``params`` on ``train_inner``; its validation score and final params."""
    from retailgan.evaluation.protocols import evaluate

    cls = get_model_class(name)
    model = cls(**params)
    options = TrainingOptions(seed=seed, validation=split.validation, validation_metric=metric, callback=callback)
    model.fit(split.train_inner, options)
    final = dict(model.config.to_dict())
    if isinstance(model, IterativeRecommender):
        value = max(h.get(f"val_{metric}", float("-inf")) for h in model.history)
        final["epochs"] = max(int(model.best_epoch), 1)
    else:
        base, _, k = metric.partition("@")
        res = evaluate(model, split.train_inner.matrix(), split.validation.matrix(), ks=(int(k),))
        value = float(res.summary()[metric])
    return value, final


class _FixedParams:
    """A trial whose ``suggest_*`` return the fixed value for fixed names (not searched, so the
    sampler does not spend trials on them) and ask Optuna for the others."""

    def __init__(self, trial: Any, fixed: dict[str, Any]) -> None:
        self._trial, self._fixed = trial, fixed

    def __getattr__(self, attr: str) -> Any:
        inner = getattr(self._trial, attr)
        if not attr.startswith("suggest_"):
            return inner

        def suggest(name: str, *args: Any, **kwargs: Any) -> Any:
            return self._fixed[name] if name in self._fixed else inner(name, *args, **kwargs)

        return suggest


def tune(
    name: str,
    split: Split,
    *,
    n_trials: int = 20,
    seed: int = 0,
    metric: str = "ndcg@20",
    fixed: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> TuneResult:
    """Search ``name``'s :meth:`search_space` for the best ``metric`` on the validation part.

    ``n_trials=0`` evaluates the default (or ``fixed``) parameters once, so iterative models still
    get their epoch count from validation.
    """
    import optuna

    if n_trials < 0:
        raise ConfigError(f"n_trials must be >= 0, got {n_trials}")
    if "@" not in metric:
        raise ConfigError(f"metric must look like 'ndcg@20', got {metric!r}")
    if len(split.validation) == 0:
        raise ConfigError("the split has an empty validation part; cannot tune")
    cls = get_model_class(name)
    fixed = dict(fixed or {})
    start = time.perf_counter()
    probe = optuna.trial.FixedTrial({})
    try:
        has_space = bool(cls.search_space(probe))
    except ValueError:  # FixedTrial without values raises for each suggest call
        has_space = True
    if n_trials == 0 or not has_space:
        value, params = validate_once(name, fixed, split, seed=seed, metric=metric)
        return TuneResult(
            name, params, value, metric, [{"params": params, "value": value}], time.perf_counter() - start,
            searched=_with_epochs([], cls),
        )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )
    finals: dict[int, dict[str, Any]] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {**cls.search_space(_FixedParams(trial, fixed)), **fixed}

        def report(epoch: int, logged: dict[str, float]) -> None:
            key = f"val_{metric}"
            if key in logged:
                trial.report(logged[key], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        value, final = validate_once(name, params, split, seed=seed, metric=metric, callback=report)
        finals[trial.number] = final
        return value

    with progress.steps(f"tune {name}", n_trials, "trial") as steps:

        def report_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if trial.state == optuna.trial.TrialState.COMPLETE:
                note = f"validation {metric} {trial.value:.4f} (best {max(t.value for t in done):.4f})"
            else:
                note = trial.state.name.lower()  # pruned: its epochs fell behind the median trial
            steps.done(trial.number + 1, note)

        study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(), callbacks=[report_trial])
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise ConfigError(f"tuning {name}: no trial completed")
    best = study.best_trial
    trials = [
        {"number": t.number, "params": {**t.params, **fixed}, "value": t.value, "state": t.state.name}
        for t in study.trials
    ]
    return TuneResult(
        name, finals[best.number], float(best.value), metric, trials, time.perf_counter() - start,
        searched=_with_epochs(list(best.params), cls),
    )


def _with_epochs(names: list[str], cls: type) -> list[str]:
    """``names`` plus ``epochs`` for iterative models (early stopping on validation picks it)."""
    return [*names, "epochs"] if issubclass(cls, IterativeRecommender) and "epochs" not in names else names
