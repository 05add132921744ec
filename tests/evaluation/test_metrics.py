"""Tests of retailgan.evaluation.metrics: hand-computed cases, topk semantics, and
property tests against a deliberately naive per-user pure-Python reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retailgan.evaluation import (
    coverage,
    hit_matrix,
    intra_list_diversity,
    novelty,
    rank_metrics,
    revenue,
    topk,
)

# ----------------------------------------------------------------------------- reference


def ref_ranking(scores: list[float], excluded: set[int], k: int) -> list[int]:
    """Items by (score desc, index asc), excluded / NaN / -inf removed, cut at k."""
    cands = [
        i
        for i, s in enumerate(scores)
        if i not in excluded and not math.isnan(s) and s != -math.inf
    ]
    cands.sort(key=lambda i: (-scores[i], i))
    return cands[:k]


def ref_metrics(ranking: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Per-user metrics straight from the definitions (ranking may be shorter than k)."""
    ranked = ranking[:k]
    hits = [1 if item in relevant else 0 for item in ranked]
    n_rel = len(relevant)
    dcg = sum(h / math.log2(r + 1) for r, h in enumerate(hits, start=1))
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(n_rel, k) + 1))
    ap, seen = 0.0, 0
    for r, h in enumerate(hits, start=1):
        if h:
            seen += 1
            ap += seen / r
    rr = 0.0
    for r, h in enumerate(hits, start=1):
        if h:
            rr = 1.0 / r
            break
    return {
        "precision": sum(hits) / k,
        "recall": sum(hits) / n_rel,
        "ndcg": dcg / idcg,
        "map": ap / min(n_rel, k),
        "mrr": rr,
        "hitrate": 1.0 if sum(hits) else 0.0,
    }


def ndcg_second_formulation(
    scores: list[float], excluded: set[int], relevant: set[int], k: int
) -> float:
    """NDCG via gain vectors: exponential gains (2^rel - 1) in score order, the
    ideal DCG from the relevance vector sorted descending (sklearn-style)."""
    order = sorted(
        (i for i in range(len(scores)) if i not in excluded), key=lambda i: (-scores[i], i)
    )
    gains = np.array([2.0 ** (1 if i in relevant else 0) - 1 for i in order])
    disc = 1.0 / np.log2(np.arange(2, len(order) + 2))
    dcg = float(np.sum(gains[:k] * disc[:k]))
    ideal = np.sort(np.array([1.0 if i in relevant else 0.0 for i in range(len(scores))]))[::-1]
    ideal_gains = 2.0**ideal - 1
    idisc = 1.0 / np.log2(np.arange(2, len(scores) + 2))
    idcg = float(np.sum(ideal_gains[:k] * idisc[:k]))
    return dcg / idcg


def csr_from_sets(sets: list[set[int]], n_items: int) -> sp.csr_matrix:
    rows = [u for u, s in enumerate(sets) for _ in s]
    cols = [i for s in sets for i in sorted(s)]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sets), n_items))


# ----------------------------------------------------------------------------- hand-computed


def test_rank_metrics_hand_computed_hits_at_ranks_1_and_3() -> None:
    # list [a, x, b, y], relevant {a, b}: hits at ranks 1 and 3, |rel| = 2
    top = np.array([[0, 5, 1, 7]])
    rel = csr_from_sets([{0, 1}], 10)
    m = rank_metrics(top, rel, [1, 2, 3, 4])
    assert m["precision@1"][0] == pytest.approx(1 / 1)
    assert m["precision@2"][0] == pytest.approx(1 / 2)
    assert m["precision@3"][0] == pytest.approx(2 / 3)
    assert m["precision@4"][0] == pytest.approx(2 / 4)
    assert m["recall@1"][0] == pytest.approx(1 / 2)
    assert m["recall@3"][0] == pytest.approx(2 / 2)
    # NDCG@3 = (1/log2(2) + 1/log2(4)) / (1/log2(2) + 1/log2(3))
    assert m["ndcg@3"][0] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    # NDCG@1: ideal DCG over min(2, 1) = 1 position -> 1/1
    assert m["ndcg@1"][0] == pytest.approx(1.0)
    # NDCG@2 = (1) / (1 + 1/log2(3))
    assert m["ndcg@2"][0] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # MAP@3 = (P@1 + P@3) / min(2, 3) = (1 + 2/3) / 2
    assert m["map@3"][0] == pytest.approx((1 + 2 / 3) / 2)
    # MAP@2 = P@1 / min(2, 2) = 1 / 2
    assert m["map@2"][0] == pytest.approx(1 / 2)
    # MAP@1 = P@1 / min(2, 1) = 1
    assert m["map@1"][0] == pytest.approx(1.0)
    assert m["mrr@4"][0] == pytest.approx(1.0)
    assert m["hitrate@1"][0] == 1.0


def test_rank_metrics_hand_computed_first_hit_at_rank_2_many_relevant() -> None:
    # list [x, a, y, b, c], relevant {a, b, c, d, e, f} (|rel| = 6): hits at 2, 4, 5
    top = np.array([[9, 0, 8, 1, 2]])
    rel = csr_from_sets([{0, 1, 2, 3, 4, 5}], 12)
    m = rank_metrics(top, rel, [1, 5])
    assert m["precision@5"][0] == pytest.approx(3 / 5)
    assert m["recall@5"][0] == pytest.approx(3 / 6)
    dcg = 1 / math.log2(3) + 1 / math.log2(5) + 1 / math.log2(6)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, 6))  # min(6, 5) = 5 ideal positions
    assert m["ndcg@5"][0] == pytest.approx(dcg / idcg)
    # MAP@5 = (1/2 + 2/4 + 3/5) / min(6, 5)
    assert m["map@5"][0] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 5)
    assert m["mrr@5"][0] == pytest.approx(1 / 2)
    assert m["mrr@1"][0] == 0.0
    assert m["hitrate@1"][0] == 0.0
    assert m["hitrate@5"][0] == 1.0
    assert m["ndcg@1"][0] == 0.0


def test_rank_metrics_padding_counts_as_miss_and_multiple_users() -> None:
    top = np.array([[3, -1, -1], [-1, -1, -1], [2, 0, 1]])
    rel = csr_from_sets([{3}, {1}, {1}], 4)
    m = rank_metrics(top, rel, [3])
    np.testing.assert_allclose(m["precision@3"], [1 / 3, 0, 1 / 3])
    np.testing.assert_allclose(m["recall@3"], [1, 0, 1])
    np.testing.assert_allclose(m["ndcg@3"], [1, 0, 1 / math.log2(4)])
    np.testing.assert_allclose(m["map@3"], [1, 0, (1 / 3) / 1])
    np.testing.assert_allclose(m["mrr@3"], [1, 0, 1 / 3])
    np.testing.assert_allclose(m["hitrate@3"], [1, 0, 1])


def test_rank_metrics_relevance_is_binary_and_duplicates_merge() -> None:
    # counts (3 purchases of item 2) and a duplicate stored entry still mean "relevant once"
    rel = sp.csr_matrix((np.array([3.0, 1.0, 1.0]), ([0, 0, 0], [2, 4, 4])), shape=(1, 6))
    m = rank_metrics(np.array([[2, 4]]), rel, [2])
    assert m["recall@2"][0] == 1.0
    assert m["precision@2"][0] == 1.0


def test_rank_metrics_errors() -> None:
    rel = csr_from_sets([{0}, set()], 3)
    with pytest.raises(ValueError, match="no relevant items"):
        rank_metrics(np.array([[0], [1]]), rel, [1])
    rel = csr_from_sets([{0}, {1}], 3)
    with pytest.raises(ValueError, match="rows"):
        rank_metrics(np.array([[0]]), rel, [1])
    with pytest.raises(ValueError, match="exceeds"):
        rank_metrics(np.array([[0], [1]]), rel, [2])
    with pytest.raises(ValueError, match="more than once"):
        rank_metrics(np.array([[0, 0], [1, 2]]), rel, [2])
    with pytest.raises(ValueError, match="only 3 items"):
        rank_metrics(np.array([[0], [3]]), rel, [1])
    with pytest.raises(TypeError):
        rank_metrics(np.array([[0], [1]]), rel.toarray(), [1])


def test_coverage_hand_computed() -> None:
    top = np.array([[0, 1, 2], [1, 3, -1]])
    # top-2: {0, 1} u {1, 3} = 3 of 10 items
    assert coverage(top, 10, 2) == pytest.approx(3 / 10)
    # top-3: {0, 1, 2, 3} = 4 of 10 (padding ignored)
    assert coverage(top, 10, 3) == pytest.approx(4 / 10)


def test_novelty_hand_computed() -> None:
    pop = np.array([8.0, 4.0, 1.0, 0.0])
    top = np.array([[0, 1], [2, 3], [1, -1]])
    nov = novelty(top, pop, n_users=8, k=2)
    # user 0: (-log2(8/8) - log2(4/8)) / 2 = (0 + 1) / 2
    # user 1: pop 0 clipped to 1 -> (log2(8) + log2(8)) / 2 = 3
    # user 2: only item 1 -> 1
    np.testing.assert_allclose(nov, [0.5, 3.0, 1.0])
    assert np.isnan(novelty(np.array([[-1, -1]]), pop, 8, 2)[0])


def test_intra_list_diversity_hand_computed_dense_and_sparse() -> None:
    feats = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    top = np.array([[0, 1, 2], [0, 2, -1], [0, 3, -1], [1, -1, -1]])
    c = 1 / math.sqrt(2)
    expected = [
        # pairs (0,1): 1-0, (0,2): 1-c, (1,2): 1-c
        ((1 - 0) + (1 - c) + (1 - c)) / 3,
        1 - c,
        1.0,  # zero vector: similarity 0
        math.nan,  # fewer than 2 items
    ]
    np.testing.assert_allclose(intra_list_diversity(top, feats, 3), expected)
    np.testing.assert_allclose(intra_list_diversity(top, sp.csr_matrix(feats), 3), expected)
    # only the first k columns count: top-1 has a single item -> NaN everywhere
    assert np.isnan(intra_list_diversity(top, feats, 1)).all()


def test_revenue_hand_computed() -> None:
    prices = np.array([10.0, 2.5, 4.0, 7.0])
    rel = csr_from_sets([{0, 2}, {3}], 4)
    top = np.array([[2, 1, 0], [1, -1, -1]])
    # user 0, k=2: hit on item 2 only -> 4.0; k=3: items 2 and 0 -> 14.0; user 1: no hit
    np.testing.assert_allclose(revenue(top, rel, prices, 2), [4.0, 0.0])
    np.testing.assert_allclose(revenue(top, rel, prices, 3), [14.0, 0.0])
    with pytest.raises(ValueError, match="prices"):
        revenue(top, rel, prices[:3], 2)


def test_hit_matrix() -> None:
    rel = csr_from_sets([{1, 3}, {0}], 5)
    np.testing.assert_array_equal(
        hit_matrix(np.array([[3, 0, -1], [4, 0, 1]]), rel),
        [[True, False, False], [False, True, False]],
    )


# ----------------------------------------------------------------------------- topk


def test_topk_basic_order_and_values() -> None:
    s = np.array([[0.1, 0.9, 0.5, 0.7]], dtype=np.float32)
    idx, val = topk(s, 3)
    np.testing.assert_array_equal(idx, [[1, 3, 2]])
    np.testing.assert_allclose(val, [[0.9, 0.7, 0.5]], rtol=1e-6)
    assert idx.dtype == np.int64
    assert val.dtype == np.float32


def test_topk_ties_lower_index_first_including_at_boundary() -> None:
    s = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 3.0], [0.0] * 6])
    idx, _ = topk(s, 3)
    # four items tie at 3.0: keep the three lowest indices, in index order
    np.testing.assert_array_equal(idx[0], [1, 2, 4])
    np.testing.assert_array_equal(idx[1], [0, 1, 2])
    # same with many rows and a large tied block (argpartition's own choice is arbitrary)
    big = np.zeros((50, 500))
    big[:, 7] = 1.0
    idx, _ = topk(big, 10)
    np.testing.assert_array_equal(idx, np.tile([7, 0, 1, 2, 3, 4, 5, 6, 8, 9], (50, 1)))


def test_topk_exclusion_never_returned() -> None:
    rng = np.random.default_rng(1)
    s = rng.random((30, 40))
    ex = sp.random(30, 40, density=0.3, random_state=2, format="csr")
    ex.data[:] = 1.0
    idx, _ = topk(s, 10, exclude=ex)
    dense_ex = ex.toarray() != 0
    for u in range(30):
        assert not dense_ex[u, idx[u][idx[u] >= 0]].any()
    # an excluded item that scores highest must not appear
    s2 = np.array([[5.0, 1.0, 2.0]])
    idx, _ = topk(s2, 2, exclude=sp.csr_matrix([[1, 0, 0]]))
    np.testing.assert_array_equal(idx, [[2, 1]])


def test_topk_explicit_zero_in_exclude_is_not_excluded() -> None:
    ex = sp.csr_matrix((np.array([0.0]), ([0], [0])), shape=(1, 3))
    idx, _ = topk(np.array([[5.0, 1.0, 2.0]]), 1, exclude=ex)
    np.testing.assert_array_equal(idx, [[0]])


def test_topk_padding_when_too_few_items() -> None:
    s = np.array([[0.2, 0.1, 0.3], [0.5, np.nan, -np.inf]])
    ex = sp.csr_matrix([[0, 1, 0], [0, 0, 0]])
    idx, val = topk(s, 5, exclude=ex)
    np.testing.assert_array_equal(idx, [[2, 0, -1, -1, -1], [0, -1, -1, -1, -1]])
    assert np.isneginf(val[0, 2:]).all()
    assert np.isneginf(val[1, 1:]).all()
    # all excluded
    idx, _ = topk(np.ones((1, 2)), 2, exclude=sp.csr_matrix(np.ones((1, 2))))
    np.testing.assert_array_equal(idx, [[-1, -1]])


def test_topk_does_not_modify_input() -> None:
    s = np.array([[1.0, 2.0, np.nan]])
    before = s.copy()
    topk(s, 2, exclude=sp.csr_matrix([[1, 0, 0]]))
    np.testing.assert_array_equal(s, before)


def test_topk_shape_and_argument_errors() -> None:
    with pytest.raises(ValueError, match="exclude has shape"):
        topk(np.zeros((2, 3)), 1, exclude=sp.csr_matrix((3, 2)))
    with pytest.raises(ValueError, match="2-D"):
        topk(np.zeros(3), 1)
    with pytest.raises(ValueError, match="positive"):
        topk(np.zeros((2, 3)), 0)
    with pytest.raises(TypeError):
        topk(np.zeros((1, 3)), 1, exclude=np.zeros((1, 3)))


def test_topk_empty_batch() -> None:
    idx, val = topk(np.zeros((0, 5)), 3)
    assert idx.shape == (0, 3)
    assert val.shape == (0, 3)


# ----------------------------------------------------------------------------- properties


@st.composite
def ranking_problem(draw: st.DrawFn) -> tuple:
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 25))
    # few distinct score levels -> plenty of ties
    levels = draw(st.integers(1, 6))
    scores = [[float(draw(st.integers(0, levels))) for _ in range(n_items)] for _ in range(n_users)]
    excluded = [
        {i for i in range(n_items) if draw(st.booleans()) and draw(st.booleans())}
        for _ in range(n_users)
    ]
    relevant = [
        set(draw(st.lists(st.integers(0, n_items - 1), min_size=1, max_size=n_items)))
        for _ in range(n_users)
    ]
    ks = sorted(set(draw(st.lists(st.integers(1, 30), min_size=1, max_size=3))))
    return scores, excluded, relevant, ks, n_items


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranking_problem())
def test_topk_and_rank_metrics_match_reference(problem: tuple) -> None:
    scores, excluded, relevant, ks, n_items = problem
    n_users = len(scores)
    k_max = max(ks)
    ex = csr_from_sets(excluded, n_items)
    top, vals = topk(np.array(scores), k_max, exclude=ex)
    rel = csr_from_sets(relevant, n_items)
    got = rank_metrics(top, rel, ks)
    for u in range(n_users):
        ranking = ref_ranking(scores[u], excluded[u], k_max)
        assert top[u].tolist() == ranking + [-1] * (k_max - len(ranking))
        assert vals[u, : len(ranking)].tolist() == [scores[u][i] for i in ranking]
        for k in ks:
            want = ref_metrics(ranking, relevant[u], k)
            for name, value in want.items():
                assert got[f"{name}@{k}"][u] == pytest.approx(value, abs=1e-9), (name, k, u)


@settings(max_examples=200, deadline=None)
@given(
    n_rows=st.integers(1, 4),
    n_items=st.integers(1, 700),
    k=st.integers(1, 60),
    levels=st.sampled_from([2, 5, 50, 0]),  # 0: continuous scores
    p_exclude=st.sampled_from([0.0, 0.1, 0.6, 0.97]),
    p_nan=st.sampled_from([0.0, 0.05]),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_topk_matches_reference_on_larger_rows(
    n_rows: int,
    n_items: int,
    k: int,
    levels: int,
    p_exclude: float,
    p_nan: float,
    seed: int,
    dtype: type,
) -> None:
    # exercises the block-candidate path (n_items >> k) including ties outside the
    # candidate blocks, NaN / -inf scores and rows with fewer than k candidates
    rng = np.random.default_rng(seed)
    if levels:
        scores = rng.integers(0, levels, size=(n_rows, n_items)).astype(dtype)
    else:
        scores = rng.standard_normal((n_rows, n_items)).astype(dtype)
    scores[rng.random(scores.shape) < p_nan] = np.nan
    scores[rng.random(scores.shape) < p_nan] = -np.inf
    ex_mask = rng.random(scores.shape) < p_exclude
    idx, vals = topk(scores, k, exclude=sp.csr_matrix(ex_mask.astype(np.float32)))
    assert idx.shape == vals.shape == (n_rows, k)
    assert vals.dtype == dtype
    for u in range(n_rows):
        row = scores[u].tolist()
        ranking = ref_ranking(row, set(np.flatnonzero(ex_mask[u]).tolist()), k)
        assert idx[u].tolist() == ranking + [-1] * (k - len(ranking))
        assert vals[u, : len(ranking)].tolist() == [row[i] for i in ranking]
        assert np.isneginf(vals[u, len(ranking) :]).all()


@settings(max_examples=100, deadline=None)
@given(ranking_problem())
def test_ndcg_matches_second_formulation(problem: tuple) -> None:
    scores, _, relevant, ks, n_items = problem
    top, _ = topk(np.array(scores), max(ks))
    got = rank_metrics(top, csr_from_sets(relevant, n_items), ks)
    for u in range(len(scores)):
        for k in ks:
            want = ndcg_second_formulation(scores[u], set(), relevant[u], k)
            assert got[f"ndcg@{k}"][u] == pytest.approx(want, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(2, 20).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.permutations(list(range(n))), min_size=1, max_size=5),
            st.integers(1, 6),
            st.integers(0, 2**31 - 1),
        )
    )
)
def test_beyond_accuracy_match_reference(args: tuple) -> None:
    n_items, perms, k_raw, seed = args
    k = min(k_raw, n_items)
    rng = np.random.default_rng(seed)
    top = np.array([p[:k] for p in perms], dtype=np.int64)
    top[rng.random(top.shape) < 0.2] = -1  # sprinkle padding
    n_users = len(perms)
    feats = rng.normal(size=(n_items, 3))
    feats[rng.random(n_items) < 0.2] = 0.0
    pop = rng.integers(0, 10, size=n_items).astype(float)
    prices = rng.uniform(0, 100, size=n_items)
    relevant = [
        set(rng.choice(n_items, size=rng.integers(1, n_items + 1), replace=False).tolist())
        for _ in range(n_users)
    ]
    rel = csr_from_sets(relevant, n_items)

    ild = intra_list_diversity(top, feats, k)
    ild_sparse = intra_list_diversity(top, sp.csr_matrix(feats), k)
    nov = novelty(top, pop, 10, k)
    rev = revenue(top, rel, prices, k)
    items_seen: set[int] = set()
    for u in range(n_users):
        items = [int(i) for i in top[u, :k] if i >= 0]
        items_seen.update(items)
        # ILD: explicit double loop over pairs
        dists = []
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                fa, fb = feats[items[a]], feats[items[b]]
                na, nb = math.sqrt(sum(x * x for x in fa)), math.sqrt(sum(x * x for x in fb))
                cos = (
                    0.0
                    if na == 0 or nb == 0
                    else sum(x * y for x, y in zip(fa, fb, strict=True)) / (na * nb)
                )
                dists.append(1 - cos)
        if dists:
            assert ild[u] == pytest.approx(sum(dists) / len(dists), abs=1e-9)
            assert ild_sparse[u] == pytest.approx(sum(dists) / len(dists), abs=1e-9)
        else:
            assert math.isnan(ild[u])
        infos = [-math.log2(min(max(pop[i], 1), 10) / 10) for i in items]
        if infos:
            assert nov[u] == pytest.approx(sum(infos) / len(infos), abs=1e-9)
        else:
            assert math.isnan(nov[u])
        assert rev[u] == pytest.approx(sum(prices[i] for i in items if i in relevant[u]), abs=1e-9)
    assert coverage(top, n_items, k) == pytest.approx(len(items_seen) / n_items)
