"""Tests of retailgan.evaluation.evaluate with tiny fake models of known scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from retailgan.evaluation import EvaluationResult, evaluate


class FakeModel:
    """Returns rows of a fixed score matrix; records the users of every call."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores, dtype=np.float32)
        self.calls: list[np.ndarray] = []

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        assert user_idx.dtype == np.int64
        self.calls.append(user_idx.copy())
        return self.scores[user_idx]


def csr(dense: list[list[int]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(dense, dtype=np.float32))


# 4 users x 6 items
TRAIN = csr(
    [
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 1],
        [1, 0, 0, 0, 0, 0],
    ]
)
TEST = csr(
    [
        [0, 0, 1, 0, 1, 0],  # items 2, 4
        [0, 0, 0, 0, 0, 0],  # no test items -> skipped
        [1, 0, 0, 0, 0, 0],  # item 0
        [0, 0, 0, 1, 0, 0],  # item 3
    ]
)
SCORES = np.array(
    [
        # training items 0, 1 score highest; then 2 > 3 > 4 > 5
        [9.0, 8.0, 5.0, 4.0, 3.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        # train item 5 highest; test item 0 lowest of the rest
        [0.0, 4.0, 3.0, 2.0, 1.0, 9.0],
        # all tied: tie-break by lower index; item 0 excluded -> list 1, 2, 3, ...
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    ]
)


def test_known_scores_give_known_metrics() -> None:
    model = FakeModel(SCORES)
    res = evaluate(model, TRAIN, TEST, ks=(1, 3))
    assert isinstance(res, EvaluationResult)
    np.testing.assert_array_equal(res.user_idx, [0, 2, 3])
    assert res.n_users == 3
    m = res.per_user
    # user 0: list (train 0, 1 excluded) = [2, 3, 4]; relevant {2, 4}: hits at ranks 1, 3
    # user 2: list = [1, 2, 3] (5 excluded); relevant {0}: no hit in top 3
    # user 3: list = [1, 2, 3] (0 excluded, ties -> index order); relevant {3}: hit at rank 3
    np.testing.assert_allclose(m["precision@1"], [1, 0, 0])
    np.testing.assert_allclose(m["precision@3"], [2 / 3, 0, 1 / 3])
    np.testing.assert_allclose(m["recall@3"], [1, 0, 1])
    np.testing.assert_allclose(
        m["ndcg@3"], [(1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)), 0, 1 / math.log2(4)]
    )
    np.testing.assert_allclose(m["map@3"], [(1 + 2 / 3) / 2, 0, (1 / 3) / 1])
    np.testing.assert_allclose(m["mrr@3"], [1, 0, 1 / 3])
    np.testing.assert_allclose(m["hitrate@1"], [1, 0, 0])
    summary = res.summary()
    assert summary["recall@3"] == pytest.approx(2 / 3)
    assert summary["hitrate@3"] == pytest.approx(2 / 3)
    # top-3 lists {2,3,4} u {1,2,3} u {1,2,3} = {1,2,3,4} -> 4 of 6 items
    assert summary["coverage@3"] == pytest.approx(4 / 6)
    assert summary["coverage@1"] == pytest.approx(2 / 6)  # {2} u {1}
    assert res.eval_seconds >= 0.0


def test_users_without_test_items_are_never_scored() -> None:
    model = FakeModel(SCORES)
    evaluate(model, TRAIN, TEST, ks=(2,), batch_size=2)
    called = np.concatenate(model.calls)
    np.testing.assert_array_equal(called, [0, 2, 3])
    assert [c.size for c in model.calls] == [2, 1]


def test_training_items_scored_highest_are_excluded() -> None:
    # every user's training items get the top scores, the test item comes next
    rng = np.random.default_rng(0)
    n_users, n_items = 20, 30
    train = sp.random(n_users, n_items, density=0.2, random_state=1, format="csr")
    train.data[:] = 1
    test_items = np.array(
        [rng.choice(np.flatnonzero(train[u].toarray().ravel() == 0)) for u in range(n_users)]
    )
    test = sp.csr_matrix(
        (np.ones(n_users), (np.arange(n_users), test_items)), shape=(n_users, n_items)
    )
    scores = rng.random((n_users, n_items))
    scores[np.arange(n_users), test_items] = 5.0
    scores += 10.0 * train.toarray()
    res = evaluate(FakeModel(scores), train, test, ks=(1,))
    np.testing.assert_allclose(res.per_user["ndcg@1"], 1.0)
    np.testing.assert_allclose(res.per_user["recall@1"], 1.0)


def test_batch_size_does_not_change_results() -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 37, 50
    train = sp.random(n_users, n_items, density=0.15, random_state=4, format="csr")
    test = sp.random(n_users, n_items, density=0.1, random_state=5, format="csr")
    # integer-valued scores: many ties, exercising the deterministic tie-break
    scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)
    feats = rng.normal(size=(n_items, 4))
    prices = rng.uniform(1, 5, size=n_items)
    kwargs = {"ks": (5, 10), "item_features": feats, "item_prices": prices}
    ref = evaluate(FakeModel(scores), train, test, batch_size=1024, **kwargs)
    assert ref.n_users > 0
    for bs in (1, 2, 7, 36):
        res = evaluate(FakeModel(scores), train, test, batch_size=bs, **kwargs)
        np.testing.assert_array_equal(res.user_idx, ref.user_idx)
        assert res.per_user.keys() == ref.per_user.keys()
        for name in ref.per_user:
            np.testing.assert_array_equal(res.per_user[name], ref.per_user[name])
        assert res.aggregate == ref.aggregate


def test_prefetch_gives_identical_results_and_propagates_errors() -> None:
    rng = np.random.default_rng(11)
    n_users, n_items = 50, 30
    train = sp.random(n_users, n_items, density=0.2, random_state=12, format="csr")
    test = sp.random(n_users, n_items, density=0.1, random_state=13, format="csr")
    model = FakeModel(rng.random((n_users, n_items)))
    a = evaluate(model, train, test, ks=(5,), batch_size=8, prefetch=True)
    b = evaluate(model, train, test, ks=(5,), batch_size=8, prefetch=False)
    np.testing.assert_array_equal(a.user_idx, b.user_idx)
    for name in a.per_user:
        np.testing.assert_array_equal(a.per_user[name], b.per_user[name])
    # the model is called once per batch, in user order, never concurrently
    called = np.concatenate(model.calls[: len(model.calls) // 2])
    np.testing.assert_array_equal(called, a.user_idx)

    class Failing(FakeModel):
        def score_users(self, user_idx: np.ndarray) -> np.ndarray:
            if user_idx[0] >= 20:
                raise RuntimeError("model failed")
            return super().score_users(user_idx)

    with pytest.raises(RuntimeError, match="model failed"):
        evaluate(Failing(model.scores), train, test, ks=(5,), batch_size=8)


def test_matches_per_user_reference_loop() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, k = 25, 40, 7
    train = (rng.random((n_users, n_items)) < 0.2).astype(float)
    test = (rng.random((n_users, n_items)) < 0.1).astype(float) * (1 - train)
    scores = rng.random((n_users, n_items))
    res = evaluate(FakeModel(scores), sp.csr_matrix(train), sp.csr_matrix(test), ks=(k,))
    expected_users = [u for u in range(n_users) if test[u].sum() > 0]
    assert res.user_idx.tolist() == expected_users
    for j, u in enumerate(expected_users):
        cands = [i for i in range(n_items) if train[u, i] == 0]
        ranking = sorted(cands, key=lambda i: (-np.float32(scores[u, i]), i))[:k]
        rel = {i for i in range(n_items) if test[u, i] > 0}
        hits = [i in rel for i in ranking]
        dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        assert res.per_user[f"ndcg@{k}"][j] == pytest.approx(dcg / idcg, abs=1e-9)
        assert res.per_user[f"recall@{k}"][j] == pytest.approx(sum(hits) / len(rel), abs=1e-9)


def test_optional_beyond_accuracy_metrics() -> None:
    prices = np.array([1.0, 2.0, 10.0, 3.0, 20.0, 5.0])
    feats = np.eye(6)
    pop = np.array([4.0, 2.0, 1.0, 1.0, 1.0, 2.0])
    res = evaluate(
        FakeModel(SCORES),
        TRAIN,
        TEST,
        ks=(3,),
        item_prices=prices,
        item_features=feats,
        item_popularity=pop,
    )
    # user 0 hits items 2 and 4 -> 10 + 20; user 3 hits item 3 -> 3
    np.testing.assert_allclose(res.per_user["revenue@3"], [30.0, 0.0, 3.0])
    # orthogonal features: every pair has cosine distance 1
    np.testing.assert_allclose(res.per_user["ild@3"], [1.0, 1.0, 1.0])
    # novelty with n_users = 4: user 0 list [2,3,4] pops 1,1,1 -> log2(4) = 2
    assert res.per_user["novelty@3"][0] == pytest.approx(2.0)
    # user 2 list [1,2,3]: (log2(4/2) + 2 + 2) / 3
    assert res.per_user["novelty@3"][1] == pytest.approx((1 + 2 + 2) / 3)


def test_default_popularity_is_training_user_count() -> None:
    res = evaluate(FakeModel(SCORES), TRAIN, TEST, ks=(3,))
    # training popularity per item: [2, 1, 1, 0, 0, 1], n_users = 4, clipped at >= 1
    info = -np.log2(np.array([2, 1, 1, 1, 1, 1]) / 4)
    np.testing.assert_allclose(
        res.per_user["novelty@3"],
        [info[[2, 3, 4]].mean(), info[[1, 2, 3]].mean(), info[[1, 2, 3]].mean()],
    )


def test_users_subset_and_scores_fn() -> None:
    calls: list[list[int]] = []

    def scores_fn(u: np.ndarray) -> np.ndarray:
        calls.append(u.tolist())
        return SCORES[u]

    # user 1 has no test items and is dropped; duplicates / order are normalised
    res = evaluate(None, TRAIN, TEST, ks=(3,), users=[3, 1, 3], scores_fn=scores_fn)
    assert res.user_idx.tolist() == [3]
    assert calls == [[3]]
    assert res.per_user["recall@3"].tolist() == [1.0]


def test_remove_train_from_test() -> None:
    train = csr([[1, 0, 0, 0]])
    test = csr([[1, 0, 1, 0]])  # item 0 bought again: cannot be recommended
    scores = np.array([[4.0, 3.0, 2.0, 1.0]])
    res = evaluate(FakeModel(scores), train, test, ks=(1,))
    assert res.per_user["recall@1"].tolist() == [0.0]  # list [1], relevant {2}
    res = evaluate(FakeModel(scores), train, test, ks=(2,))
    assert res.per_user["recall@2"].tolist() == [1.0]
    res = evaluate(FakeModel(scores), train, test, ks=(2,), remove_train_from_test=False)
    assert res.per_user["recall@2"].tolist() == [0.5]
    # a user whose only test item is a training item is skipped
    res = evaluate(FakeModel(scores), train, csr([[1, 0, 0, 0]]), ks=(1,))
    assert res.n_users == 0
    assert res.per_user["ndcg@1"].shape == (0,)


def test_empty_evaluation_keeps_keys() -> None:
    res = evaluate(FakeModel(SCORES), TRAIN, sp.csr_matrix(TEST.shape), ks=(2,))
    assert res.n_users == 0
    assert set(res.per_user) >= {"ndcg@2", "recall@2", "novelty@2"}
    assert math.isnan(res.summary()["ndcg@2"])
    assert res.summary()["coverage@2"] == 0.0


def test_argument_errors() -> None:
    model = FakeModel(SCORES)
    with pytest.raises(ValueError, match="shape"):
        evaluate(model, TRAIN, TEST[:, :5])
    with pytest.raises(ValueError, match="exactly one"):
        evaluate(None, TRAIN, TEST)
    with pytest.raises(ValueError, match="exactly one"):
        evaluate(model, TRAIN, TEST, scores_fn=lambda u: SCORES[u])
    with pytest.raises(ValueError, match=r"must have shape \(2, 6\)"):
        evaluate(None, TRAIN, TEST, scores_fn=lambda u: SCORES[u][:, :5], batch_size=2)
    with pytest.raises(ValueError, match="users must be in"):
        evaluate(model, TRAIN, TEST, users=[0, 4])
    with pytest.raises(ValueError, match="item_prices"):
        evaluate(model, TRAIN, TEST, item_prices=np.ones(5))
    with pytest.raises(ValueError, match="item_features"):
        evaluate(model, TRAIN, TEST, item_features=np.ones((5, 2)))
    with pytest.raises(TypeError):
        evaluate(model, TRAIN.toarray(), TEST)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, TRAIN, TEST, batch_size=0)
    with pytest.raises(ValueError, match="ks"):
        evaluate(model, TRAIN, TEST, ks=(0, 5))


def test_users_without_training_history_get_the_fallback_ranking():
    """A customer whose first purchase falls in the test period is ranked by popularity (as
    ``recommend`` does), not by a model's all-equal scores for an empty history."""
    from retailgan.data.dataset import InteractionDataset
    from retailgan.data.splits import split
    from retailgan.models.baselines import EASE

    users, items = [], []
    for u in range(12):  # "z_hit" (the last item id) is bought by everyone: the most popular item
        for it in ("a", "b", "z_hit") if u % 2 else ("c", "z_hit"):
            users.append(f"u{u:02d}")
            items.append(it)
    users.append("late")
    items.append("z_hit")
    ds = InteractionDataset.from_arrays(users, items, timestamps=np.arange(len(users)))
    s = split(ds, "temporal", seed=0, test_fraction=0.05)
    model = EASE(l2=1.0).fit(s.train)
    late = s.train.users.index(["late"])[0]
    assert s.train.matrix()[late].nnz == 0 and s.test.matrix()[late].nnz == 1
    assert model.items.index(["z_hit"])[0] != 0  # index order would not put it first

    res = evaluate(model, s.train.matrix(), s.test.matrix(), ks=(1,))
    row = int(np.flatnonzero(res.user_idx == late)[0])
    assert res.per_user["hitrate@1"][row] == 1.0
    recs = model.recommend(["late"], k=1)
    assert not recs.known[0] and recs.item_ids[0, 0] == "z_hit"
