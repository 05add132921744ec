"""Quality metrics on tiny inputs with known answers, the evaluator network, the copy check."""

from __future__ import annotations

import numpy as np
import pytest

from retailgan.errors import ConfigError, ModelFileError
from retailgan.imagegen.evaluator import (
    Evaluator,
    copy_check,
    frechet_distance,
    kid,
    nearest_train_distance,
    precision_recall_density_coverage,
    train_classifier,
)
from tests.imagegen.conftest import CATEGORIES, synthetic_images


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean shifted by (3, 0, 0, 0): distance = |shift|^2 = 9.
    assert frechet_distance(a, a + np.array([3.0, 0, 0, 0])) == pytest.approx(9.0, abs=1e-6)
    # Scaling by 2: |mu|^2 + tr(S) + tr(4 S) - 2 tr(2 S) = |mu|^2 + tr(S).
    expected = (a.mean(0) ** 2).sum() + np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ConfigError):
        frechet_distance(a[:1], a)


def test_kid_near_zero_for_one_distribution_and_positive_otherwise():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    same, _ = kid(a, b, subsets=5, subset_size=300)
    shifted, _ = kid(a, b + 1.0, subsets=5, subset_size=300)
    assert abs(same) < 0.02
    assert shifted > 10 * max(abs(same), 1e-3)


def test_precision_recall_identical_and_disjoint_sets():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 3)).astype(np.float32)
    same = precision_recall_density_coverage(a, a.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert same["density"] >= 1.0
    far = precision_recall_density_coverage(a, a + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # A generator that covers half the modes: precision stays high, recall drops.
    half = precision_recall_density_coverage(np.concatenate([a, a + 50]), np.concatenate([a, a]), k=5)
    assert half["precision"] == 1.0 and half["recall"] == pytest.approx(0.5, abs=0.02)


def test_nearest_train_distance_and_copy_check():
    images, _ = synthetic_images(10, seed=0)
    train, test = images[:20], images[20:]
    d, idx = nearest_train_distance(train[[3, 7]], train)
    np.testing.assert_allclose(d, 0.0, atol=1e-3)
    assert idx.tolist() == [3, 7]
    copies = np.concatenate([train[:5], test[:5]])
    cc = copy_check(copies, test, train, threshold=0.02)
    assert cc.generated_below_threshold == 5 and cc.generated_min < 1e-3
    assert cc.real_test_below_threshold == 0


def test_evaluator_learns_trains_saves_and_loads(tmp_path):
    images, labels = synthetic_images(40, seed=0)
    test_images, test_labels = synthetic_images(10, seed=1)
    ev = train_classifier(images, labels, CATEGORIES, epochs=3, batch_size=32, seed=0, test=(test_images, test_labels))
    assert ev.test_accuracy >= 0.9
    feats = ev.features(test_images)
    assert feats.shape == (30, 128)
    ev.save(tmp_path / "ev")
    loaded = Evaluator.load(tmp_path / "ev")
    np.testing.assert_array_equal(loaded.features(test_images), feats)
    assert loaded.test_accuracy == ev.test_accuracy and loaded.classes == CATEGORIES
    # The feature distance of a set with itself is ~0, against noise far larger.
    noise = np.random.default_rng(0).integers(0, 256, test_images.shape, dtype=np.uint8)
    assert frechet_distance(feats, feats) < 1e-6 < frechet_distance(feats, ev.features(noise))
    with pytest.raises(ModelFileError, match="missing"):
        Evaluator.load(tmp_path / "nothing")


def test_classifier_training_is_seeded(capsys, monkeypatch):
    from retailgan import progress

    monkeypatch.setattr(progress, "_enabled", True)
    images, labels = synthetic_images(8, seed=0)
    a = train_classifier(images, labels, CATEGORIES, epochs=1, batch_size=8, seed=4)
    assert capsys.readouterr().err.startswith("train the quality evaluator: epoch 1/1 done, last batch loss ")
    b = train_classifier(images, labels, CATEGORIES, epochs=1, batch_size=8, seed=4)
    np.testing.assert_array_equal(a.features(images), b.features(images))


def test_cli_evaluate_writes_json_and_grid(trained_tiny, tmp_path):
    import json

    from typer.testing import CliRunner

    from retailgan.cli import app
    from retailgan.imagegen.provenance import read_provenance

    data = trained_tiny.model_dir.parent / "products"
    out = tmp_path / "eval"
    args = [
        "images",
        "evaluate",
        "--model-dir",
        str(trained_tiny.model_dir),
        "--data",
        str(data),
        "--out",
        str(out),
        "--evaluator-dir",
        str(tmp_path / "ev"),
        "--n",
        "120",
        "--gan-train-n",
        "60",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "evaluation.json").read_text())
    rows = doc["rows"]
    assert set(rows) == {"generated", "real_train", "noise"}
    # The real reference sits far closer to the real test images than noise does.
    assert rows["real_train"]["fd"] < rows["noise"]["fd"]
    assert rows["real_train"]["precision"] > rows["noise"]["precision"]
    assert 0.0 <= rows["generated"]["gan_test"] <= 1.0 and 0.0 <= rows["generated"]["gan_train"] <= 1.0
    assert doc["copy_check"]["real_test_below_threshold"] > 0  # this folder's "test" split is its training images
    assert doc["evaluator"]["trained_now"] is True and (tmp_path / "ev" / "model.json").is_file()
    assert read_provenance(out / "samples.png")["synthetic"] == "true"
    # A second run reuses the saved evaluator.
    res = CliRunner().invoke(app, [*args[:7], str(tmp_path / "eval2"), *args[8:]])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "eval2" / "evaluation.json").read_text())["evaluator"]["trained_now"] is False
