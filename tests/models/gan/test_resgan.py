"""ResGAN: EASE starting point, denoising split, cross-fitting, adversarial switch, fold-in, files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from retailgan.errors import ConfigError
from retailgan.models.base import TrainingOptions
from retailgan.models.baselines import EASE
from retailgan.models.gan.resgan import ResGAN, ease_weights
from retailgan.persistence import load_model
from tests.conftest import oracle_dataset

FAST = {"l2": 1.0, "hidden": 16, "d_hidden": 16, "batch_size": 16, "epochs": 5, "crossfit": 2}


def test_ease_weights_match_the_ease_baseline():
    ds, _ = oracle_dataset()
    ease = EASE(l2=3.0).fit(ds)
    np.testing.assert_allclose(ease_weights(ds.matrix().astype(np.float32), 3.0), ease.W, atol=1e-5)


def test_untrained_generator_ranks_exactly_like_ease():
    """The residual starts at zero: before any step, G's ranking is EASE's."""
    ds, answer = oracle_dataset()
    model = ResGAN(**FAST)
    model.fit(ds, TrainingOptions(seed=0))  # sets vocabularies; then rebuild at the start point
    model.init_training(ds, TrainingOptions(seed=0))
    ease = EASE(l2=FAST["l2"]).fit(ds)
    users = np.arange(ds.n_users)
    ours, theirs = model.score_users(users), ease.score_users(users)
    assert np.array_equal(np.argsort(-ours, axis=1, kind="stable"), np.argsort(-theirs, axis=1, kind="stable"))


def test_denoising_split_keeps_one_visible_and_one_hidden_item():
    ds, _ = oracle_dataset()
    model = ResGAN(**{**FAST, "dropout": 0.9})
    model.fit(ds, TrainingOptions(seed=0))
    model.init_training(ds, TrainingOptions(seed=0))
    x = model._X[:32]
    for _ in range(20):
        x_in, x_out = model._split_history(x)
        assert torch.equal(x_in + x_out, x)  # a partition of the history
        assert (x_in * x_out).sum() == 0
        assert torch.all(x_in.sum(dim=1) >= 1) and torch.all(x_out.sum(dim=1) >= 1)


def test_cross_fitted_bases_never_saw_their_customers():
    ds, _ = oracle_dataset()
    model = ResGAN(**{**FAST, "crossfit": 3})
    model.fit(ds, TrainingOptions(seed=0))
    model.init_training(ds, TrainingOptions(seed=0))
    X = ds.matrix().astype(np.float32)
    folds = model._folds.numpy()
    assert set(folds) == {0, 1, 2}
    for k, B in enumerate(model._fold_bases):
        np.testing.assert_allclose(B.numpy(), ease_weights(X[folds != k], FAST["l2"]), atol=1e-5)


def test_without_adversary_there_is_no_discriminator_and_it_still_learns():
    ds, answer = oracle_dataset()
    model = ResGAN(**{**FAST, "adv_weight": 0.0}).fit(ds, TrainingOptions(seed=0))
    assert all("loss_d" not in h for h in model.history)
    recs = model.recommend(list(answer), k=1)
    assert np.mean([recs.item_ids[r, 0] == answer[u] for r, u in enumerate(answer)]) >= 0.95


def test_adversarial_training_logs_both_players():
    ds, _ = oracle_dataset()
    model = ResGAN(**FAST).fit(ds, TrainingOptions(seed=0))
    assert {"loss_rec", "loss_d", "loss_adv"} <= set(model.history[0])


def test_fold_in_equals_scores_of_the_training_rows():
    ds, _ = oracle_dataset()
    model = ResGAN(**FAST).fit(ds, TrainingOptions(seed=0))
    users = np.arange(10)
    np.testing.assert_allclose(model.score_histories(ds.matrix()[users]), model.score_users(users), atol=1e-5)
    with pytest.raises(ValueError, match="item columns"):
        model.score_histories(sp.csr_matrix((1, 3)))


@pytest.mark.parametrize("base", ["finetune", "none"])
def test_other_bases_train_and_round_trip(base, tmp_path):
    ds, _ = oracle_dataset()
    model = ResGAN(**{**FAST, "base": base}).fit(ds, TrainingOptions(seed=0))
    loaded = load_model(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score_users(np.arange(5)), model.score_users(np.arange(5)))


@pytest.mark.parametrize(
    "bad",
    [{"base": "learned"}, {"loss": "wgan"}, {"dropout": 1.0}, {"l2": 0.0}, {"crossfit": 1}, {"adv_weight": -1.0}],
)
def test_invalid_configs_are_refused(bad):
    ds, _ = oracle_dataset()
    with pytest.raises(ConfigError, match="resgan"):
        ResGAN(**{**FAST, **bad}).fit(ds, TrainingOptions(seed=0))
