"""A small generic epoch loop for the image GAN.

The recommenders' loop (``retailgan.models.base.IterativeRecommender``) is tied to interaction
data: it validates by ranking metrics on held-out purchases, restores the best epoch by that
metric and saves through the recommender persistence (users, items, catalogue). None of that
applies to an image GAN, which has no ranking metric and whose last EMA generator is the one
to keep. This loop keeps the same pattern and pieces (``init_training`` / ``train_epoch`` /
``finish_training``, the one-thread default via :func:`retailgan.models.base.torch_threads`, a
per-epoch callback, progress bar, checkpoints) without the recommender parts, and adds a
wall-clock budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from retailgan import progress
from retailgan.models.base import torch_threads

log = logging.getLogger(__name__)


class EpochModel(Protocol):
    history: list[dict[str, float]]
    train_seconds: float

    def init_training(self, images: np.ndarray, labels: np.ndarray, seed: int) -> None: ...

    def train_epoch(self, epoch: int) -> dict[str, float]: ...

    def finish_training(self) -> None: ...

    def save(self, path: str | Path) -> Path: ...


@dataclass
class LoopOptions:
    epochs: int = 10
    seed: int = 0
    num_threads: int = 1
    time_budget_s: float | None = None
    """Stop after the epoch whose end leaves too little time for another one (as long as the last)."""
    checkpoint_dir: Path | None = None
    """Save the model here after every epoch."""
    progress: bool = False
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    """Called after every epoch (e.g. to save the fixed-noise sample grid)."""


def run_epochs(model: EpochModel, images: np.ndarray, labels: np.ndarray, options: LoopOptions) -> EpochModel:
    """Train ``model`` for ``options.epochs`` epochs (or until the time budget); returns it."""
    start = time.perf_counter()
    with torch_threads(options.num_threads):
        model.init_training(images, labels, options.seed)
        model.history = []
        with progress.steps(
            "train images", options.epochs, "epoch", every_s=5.0, upper_bound=options.time_budget_s is not None,
            enabled=True if options.progress else None,
        ) as steps:
            _epochs(model, options, start, steps)
        model.finish_training()
    model.train_seconds = time.perf_counter() - start
    return model


def _epochs(model: EpochModel, options: LoopOptions, start: float, steps: progress.Steps) -> None:
    """The epochs of :func:`run_epochs` (until ``options.epochs`` or the time budget)."""
    for epoch in range(1, options.epochs + 1):
        t0 = time.perf_counter()
        logged = dict(model.train_epoch(epoch))
        logged["epoch"] = epoch
        logged["epoch_s"] = time.perf_counter() - t0
        logged["elapsed_s"] = time.perf_counter() - start
        model.history.append(logged)
        model.train_seconds = logged["elapsed_s"]
        if options.on_epoch is not None:
            options.on_epoch(epoch, logged)
        if options.checkpoint_dir is not None:
            model.save(options.checkpoint_dir)
        steps.done(epoch, ", ".join(f"{k} {v:.3g}" for k, v in logged.items() if k.startswith("loss")))
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in logged.items()})
        if options.time_budget_s is not None and epoch < options.epochs:
            elapsed = time.perf_counter() - start
            # The last epoch's time predicts the next one best on a machine whose load changes.
            if elapsed + logged["epoch_s"] > options.time_budget_s:
                log.info("time budget: stopping after epoch %d (%.0f s)", epoch, elapsed)
                steps.stop(epoch, "time budget reached")
                break
