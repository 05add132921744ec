"""The offline evaluation protocol: generated vs real test images beside real-vs-real and noise reference rows."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from retailgan.errors import ConfigError
from retailgan.imagegen.data import ImageSet, load_images, to_uint8
from retailgan.imagegen.evaluator import (
    Evaluator,
    compare_sets,
    copy_check,
    train_classifier,
)
from retailgan.imagegen.model import ConditionalGAN
from retailgan.models.base import torch_threads

log = logging.getLogger(__name__)


def balanced_labels(n: int, n_classes: int) -> np.ndarray:
    """``n`` labels, as equal a share per class as possible, sorted."""
    return np.sort(np.arange(n) % n_classes)


def load_or_train_evaluator(
    evaluator_dir: Path, train: ImageSet, test: ImageSet, *, epochs: int = 3, seed: int = 0, num_threads: int = 1
) -> tuple[Evaluator, bool]:
    """The evaluator saved in ``evaluator_dir``, or a new one trained on ``train`` (and saved there)."""
    if (evaluator_dir / "model.json").is_file():
        ev = Evaluator.load(evaluator_dir)
        if tuple(ev.classes) != tuple(train.classes) or tuple(ev.shape) != train.shape:
            raise ConfigError(f"{evaluator_dir}: the evaluator's classes or image shape do not match the data")
        return ev, False
    log.info("training the evaluator on %d real images", len(train))
    ev = train_classifier(
        train.images,
        train.labels,
        train.classes,
        epochs=epochs,
        seed=seed,
        num_threads=num_threads,
        test=(test.images, test.labels),
    )
    ev.save(evaluator_dir)
    return ev, True


def evaluate_gan(
    model: ConditionalGAN,
    *,
    data: str | Path = "fashion-mnist",
    evaluator_dir: str | Path,
    n: int = 10_000,
    seed: int = 0,
    gan_train_n: int | None = None,
    classifier_epochs: int = 3,
    num_threads: int = 1,
    truncation: float = 1.0,
) -> dict[str, Any]:
    """Every quality metric of ``model`` on ``data``'s test split, with reference rows.

    Rows: ``generated`` (``n`` images, classes balanced, seed ``seed``), ``real_train`` (``n``
    random real training images) and ``noise`` (``n`` uniform-noise images), each against the
    ``n`` first real test images. GAN-train trains a classifier of the evaluator's architecture
    and schedule on ``gan_train_n`` generated images (default: as many as real training images),
    tested on all real test images; the ``real_train`` reference is the evaluator itself.
    ``truncation`` scales the generator's noise (< 1 trades variety for fidelity).
    """
    t0 = time.perf_counter()
    train, test = load_images(data, "train"), load_images(data, "test")
    if tuple(model.classes) != tuple(train.classes) or model.shape != train.shape:
        raise ConfigError(f"{data}: classes or image shape differ from the model's ({model.classes}, {model.shape})")
    ev, trained = load_or_train_evaluator(
        Path(evaluator_dir), train, test, epochs=classifier_epochs, seed=seed, num_threads=num_threads
    )
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "data": str(data),
        "model_version": model.version,
        "n": n,
        "seed": seed,
        "truncation": truncation,
        "evaluator": {
            "test_accuracy": ev.test_accuracy,
            "train_seconds": ev.train_seconds,
            "epochs": ev.epochs,
            "trained_now": trained,
        },
    }
    with torch_threads(num_threads):
        real = test.subset(np.arange(min(n, len(test))))
        real_feats = ev.features(real.images)
        gen_labels = balanced_labels(n, model.n_classes)
        gen = to_uint8(model.generate(gen_labels, z=truncation * model.noise(n, seed)))
        sub = train.subset(np.sort(rng.choice(len(train), min(n, len(train)), replace=False)))
        noise = rng.integers(0, 256, size=(n, *model.shape), dtype=np.uint8)
        noise_labels = balanced_labels(n, model.n_classes)
        rows = {
            "generated": compare_sets(ev, real_feats, real.labels, gen, gen_labels, seed=seed),
            "real_train": compare_sets(ev, real_feats, real.labels, sub.images, sub.labels, seed=seed),
            "noise": compare_sets(ev, real_feats, real.labels, noise, noise_labels, seed=seed),
        }
        # GAN-test is the evaluator's accuracy on each set with its intended labels; for the real
        # reference the meaningful number is its accuracy on held-out real images (the test split).
        rows["generated"]["gan_test"] = rows["generated"]["accuracy"]
        rows["real_train"]["gan_test_on_real_test"] = ev.accuracy(test.images, test.labels)
        rows["noise"]["gan_test"] = rows["noise"]["accuracy"]
        m = gan_train_n or len(train)
        gt_labels = balanced_labels(m, model.n_classes)
        gt_images = to_uint8(model.generate(gt_labels, z=truncation * model.noise(m, seed + 1)))
        clf = train_classifier(
            gt_images,
            gt_labels,
            model.classes,
            epochs=classifier_epochs,
            seed=seed,
            num_threads=num_threads,
            test=(test.images, test.labels),
        )
        rows["generated"]["gan_train"] = clf.test_accuracy
        rows["real_train"]["gan_train"] = ev.test_accuracy
        noise_clf = train_classifier(
            rng.integers(0, 256, size=(min(m, n), *model.shape), dtype=np.uint8),
            balanced_labels(min(m, n), model.n_classes),
            model.classes,
            epochs=1,
            seed=seed,
            num_threads=num_threads,
            test=(test.images, test.labels),
        )
        rows["noise"]["gan_train"] = noise_clf.test_accuracy
        out["gan_train_protocol"] = {
            "generated_images": m,
            "epochs": classifier_epochs,
            "noise_images": min(m, n),
            "noise_epochs": 1,
            "tested_on": f"all {len(test)} real test images",
        }
        copies = copy_check(gen, real.images, train.images)
        out["copy_check"] = copies.to_dict()
        # Copy check of the generated set against itself is not needed: the metric is memorisation of training data.
    out["rows"] = rows
    out["seconds"] = time.perf_counter() - t0
    return out
