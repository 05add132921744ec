"""Personalised images: preference fitting, latent search, held-out customers, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from retailgan.cli import app
from retailgan.errors import ConfigError
from retailgan.imagegen.data import ImageSet, to_uint8
from retailgan.imagegen.evaluator import train_classifier
from retailgan.imagegen.personalize import (
    average_image,
    define_customers,
    evaluate_customers,
    fit_preference,
    personalise,
)
from retailgan.imagegen.provenance import read_provenance
from tests.imagegen.conftest import CATEGORIES, synthetic_images


@pytest.fixture(scope="module")
def evaluator(trained_tiny):
    images, labels = synthetic_images(40, seed=0)
    ev = train_classifier(images, labels, CATEGORIES, epochs=2, batch_size=32, seed=0)
    ev.save(trained_tiny.model_dir / "evaluator")
    return ev


def test_preference_scores_liked_images_high(evaluator):
    images, labels = synthetic_images(40, seed=2)
    shirts = images[labels == 1]
    # A taste for bands drawn low in the image (offset >= 1).
    low = np.array([im[0, 16].mean() > 150 for im in shirts])
    assert 3 < low.sum() < len(shirts) - 3
    pref = fit_preference(evaluator, shirts[low], shirts, 1)
    assert np.linalg.norm(pref.direction) == pytest.approx(1.0, rel=1e-5)
    assert pref.score(evaluator, shirts).mean() == pytest.approx(0.0, abs=1e-4)
    assert pref.score(evaluator, shirts[low]).mean() > pref.score(evaluator, shirts[~low]).mean()
    with pytest.raises(ConfigError, match="at least one liked"):
        fit_preference(evaluator, shirts[:0], shirts, 1)


def test_search_beats_random_generated(trained_tiny, evaluator):
    model = trained_tiny.model
    images, labels = synthetic_images(40, seed=2)
    catalogue = images[labels == 2]
    pref = fit_preference(evaluator, catalogue[:5], catalogue, 2)
    found, scores = personalise(model, evaluator, pref, 4, seed=0)
    assert found.shape == (4, 1, 28, 28)
    # Scores of the saved uint8 images match the search's (up to 8-bit rounding of the pixels).
    np.testing.assert_allclose(pref.score(evaluator, found), scores, atol=0.02)
    random_scores = pref.score(evaluator, to_uint8(model.generate(np.full(32, 2), seed=5)))
    assert scores.mean() > random_scores.mean()
    again, _ = personalise(model, evaluator, pref, 4, seed=0)
    np.testing.assert_array_equal(found, again)
    with pytest.raises(ConfigError, match="exceeds"):
        personalise(model, evaluator, pref, 99)


def test_held_out_customers_and_their_evaluation(trained_tiny, evaluator):
    images, labels = synthetic_images(60, seed=3)
    test = ImageSet(images, labels, CATEGORIES, "tiny-test")
    train_images, train_labels = synthetic_images(30, seed=4)
    train = ImageSet(train_images, train_labels, CATEGORIES, "tiny-train")
    customers = define_customers(test, evaluator, n_customers=4, styles=2, liked=5, held_out=5, seed=0)
    assert [c.labels for c in customers] == [[0], [1], [2], [0, 1]]
    for c in customers:
        for lab in c.labels:
            assert (test.labels[c.liked[lab]] == lab).all()
            assert not set(c.liked[lab]) & set(c.held_out[lab])
    again = define_customers(test, evaluator, n_customers=4, styles=2, liked=5, held_out=5, seed=0)
    assert all(np.array_equal(a.liked[k], b.liked[k]) for a, b in zip(customers, again, strict=True) for k in a.liked)
    result = evaluate_customers(trained_tiny.model, evaluator, train, test, customers[:3], n=2, n_random=8)
    assert result["summary"]["pairs"] == 3
    row = result["rows"][0]
    assert row["catalogue_mean"] == pytest.approx(0.0, abs=1e-4)
    assert set(row) >= {"personalised", "random_generated", "average_catalogue_image", "category_kept", "seconds"}
    assert average_image(train_images).shape == (1, 1, 28, 28)


def test_cli_personalize_with_liked_images(trained_tiny, evaluator, image_folder, tmp_path):
    liked = sorted((image_folder / "bag").glob("*.png"))[:3]
    args = [
        "images",
        "personalize",
        "--model-dir",
        str(trained_tiny.model_dir),
        "--data",
        str(image_folder),
        "--category",
        "bag",
        "--n",
        "2",
        "--out",
        str(tmp_path / "p"),
    ]
    res = CliRunner().invoke(app, [*args, *[a for p in liked for a in ("--liked", str(p))]])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["files"]) == 2 and out["category"] == "bag"
    meta = read_provenance(out["files"][0])
    assert meta["synthetic"] == "true" and meta["customer"] == "liked" and "preference_score" in meta
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "give either --customer ID or --liked IMAGE" in res.output
