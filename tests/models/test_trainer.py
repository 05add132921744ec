"""The shared trainer loop: early stopping on validation, best state restored, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp

from retailgan.data.splits import split
from retailgan.errors import ConfigError
from retailgan.models.base import IterativeRecommender, ModelConfig, TrainingOptions, validation_sample
from retailgan.tuning import tune
from tests.conftest import oracle_dataset


@dataclass(frozen=True)
class ScriptedConfig(ModelConfig):
    epochs: int = 10
    patience: int = 2
    eval_every: int = 1


class Scripted(IterativeRecommender):
    """Epoch 3 produces perfect scores (the held-out answers); every other epoch random ones."""

    name = "scripted"
    config_class = ScriptedConfig

    def init_training(self, dataset, options):
        self.rng = np.random.default_rng(options.seed)
        self.W = np.zeros((self.n_users, self.n_items), np.float32)

    def train_epoch(self, epoch):
        if epoch == 3:
            self.W = self.good.copy()
        else:
            self.W = self.rng.random((self.n_users, self.n_items)).astype(np.float32)
        return {"loss": float(epoch)}

    def score_users(self, user_idx):
        return self.W[user_idx]

    def _state(self):
        return {"W": self.W}

    def _load_state(self, arrays):
        self.W = arrays["W"]


def test_early_stopping_restores_best_epoch(tmp_path, monkeypatch):
    ds, answer = oracle_dataset()
    s = split(ds, "leave-last", seed=0)
    good = np.zeros((ds.n_users, ds.n_items), np.float32)
    good[s.validation.user_idx, s.validation.item_idx] = 1.0
    model = Scripted()
    model.good = good
    seen = []
    saved = []
    monkeypatch.setattr(Scripted, "save", lambda self, path: saved.append(path))
    model.fit(
        s.train_inner,
        TrainingOptions(
            seed=0,
            validation=s.validation,
            callback=lambda e, logged: seen.append(e),
            checkpoint_dir=tmp_path / "ckpt",
        ),
    )
    assert model.best_epoch == 3
    assert len(model.history) == 5  # epochs 4 and 5 did not improve: patience 2
    assert seen == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(model.W, good)
    assert model.history[2]["val_ndcg@20"] == pytest.approx(1.0)
    assert saved and saved[-1] == tmp_path / "ckpt"


class Counting(Scripted):
    """Counts the rows early stopping scores."""

    scored = 0

    def score_users(self, user_idx):
        self.scored += len(user_idx)
        return super().score_users(user_idx)


def _scripted_fit(validation_users: int) -> Counting:
    ds, _ = oracle_dataset()
    s = split(ds, "leave-last", seed=0)
    model = Counting()
    model.good = np.zeros((ds.n_users, ds.n_items), np.float32)
    model.good[s.validation.user_idx, s.validation.item_idx] = 1.0
    model.fit(s.train_inner, TrainingOptions(seed=0, validation=s.validation, validation_users=validation_users))
    return model


def test_sampled_validation_covering_everyone_picks_the_same_epoch():
    everyone, capped = _scripted_fit(0), _scripted_fit(2000)  # 40 validation users < 2000
    assert capped.best_epoch == everyone.best_epoch == 3
    assert [h["val_ndcg@20"] for h in capped.history] == [h["val_ndcg@20"] for h in everyone.history]


def test_validation_cost_is_bounded_by_the_sample():
    full = _scripted_fit(0)
    sampled = _scripted_fit(7)
    checks = len(sampled.history)
    assert full.scored == 40 * len(full.history)  # every validation user, every epoch
    assert sampled.scored == 7 * checks  # never more than the sample, whatever the user count
    assert sampled.best_epoch == 3  # the oracle epoch is still found on the sample


def test_scoring_sampled_rows_equals_scoring_them_in_the_full_matrix():
    from retailgan.evaluation.protocols import evaluate
    from retailgan.models.baselines import IALS

    ds, _ = oracle_dataset()
    s = split(ds, "random", seed=0)
    model = IALS(factors=4, epochs=2).fit(s.train_inner, TrainingOptions(seed=0))
    val = s.validation.matrix()
    users = validation_sample(model.seen, val, 9, seed=0)
    full = evaluate(model, model.seen, val, ks=(20,), users=users).summary()["ndcg@20"]
    assert model.validation_score(s.validation, "ndcg@20", users=users) == pytest.approx(full, abs=1e-12)


def test_validation_sample_is_seeded_and_drawn_from_users_with_held_out_items():
    rng = np.random.default_rng(1)
    train = sp.random(500, 50, density=0.05, format="csr", random_state=rng)
    val = sp.random(500, 50, density=0.02, format="csr", random_state=rng)
    relevant = np.flatnonzero(np.diff(sp.csr_matrix(val - val.multiply(train.astype(bool))).indptr) > 0)
    a, b = validation_sample(train, val, 100, seed=3), validation_sample(train, val, 100, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 100 and np.all(np.diff(a) > 0) and np.isin(a, relevant).all()
    assert not np.array_equal(a, validation_sample(train, val, 100, seed=4))
    assert validation_sample(train, val, len(relevant), seed=3) is None  # covers everyone: all users
    assert validation_sample(train, val, 0, seed=3) is None


def test_validation_must_share_vocabularies():
    ds, _ = oracle_dataset()
    other, _ = oracle_dataset(n_per_cluster=5)
    with pytest.raises(ConfigError, match="vocabularies"):
        Scripted().fit(ds, TrainingOptions(validation=other))


def test_tune_uses_validation_only_and_sets_epochs():
    ds, _ = oracle_dataset()
    s = split(ds, "random", seed=0)
    res = tune("ials", s, n_trials=3, seed=0, fixed={"epochs": 4})
    assert res.params["epochs"] <= 4 and res.params["epochs"] >= 1
    assert len(res.trials) == 3
    assert 0.0 <= res.value <= 1.0
    res0 = tune("ease", s, n_trials=0)
    assert res0.params == {"l2": 500.0, "feedback": "binary"}
    res_pop = tune("pop", s, n_trials=5)
    assert len(res_pop.trials) == 1  # nothing to search
    # A blend with recent sales searches its window and weight around a fixed base model.
    res_recent = tune("recent", s, n_trials=3, seed=0, fixed={"base": "ease", "base_params": {"l2": 1.0}})
    assert res_recent.params["base_params"] == {"l2": 1.0} and res_recent.params["trend_days"] in (3, 7, 14, 28)
    assert len({t["params"]["weight"] for t in res_recent.trials}) == 3


class ThreadProbe(Scripted):
    """Records the BLAS and torch thread counts its training sees."""

    def init_training(self, dataset, options):
        import torch
        from threadpoolctl import threadpool_info

        super().init_training(dataset, options)
        self.blas_threads = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        self.torch_threads = torch.get_num_threads()


@pytest.mark.parametrize("num_threads", [None, 2])
def test_fit_limits_blas_threads_as_torch_threads_and_restores_them(num_threads):
    from threadpoolctl import threadpool_info, threadpool_limits

    ds, _ = oracle_dataset()
    with threadpool_limits(3, user_api="blas"):  # the caller's setting, restored after the fit
        model = ThreadProbe()
        model.good = np.zeros((ds.n_users, ds.n_items), np.float32)
        model.fit(ds, TrainingOptions(seed=0, num_threads=num_threads))
        after = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    expected = num_threads or 1
    assert model.blas_threads == {expected} and model.torch_threads == expected
    assert after == {3}
