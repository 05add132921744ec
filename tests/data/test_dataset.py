"""Dataset: vocabularies, aggregation, matrix orientation, k-core."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retailgan.data.dataset import InteractionDataset, Vocabulary, compact, k_core
from retailgan.errors import UnknownIdError


def test_vocabulary_round_trip_and_unknown_ids():
    v = Vocabulary(["a", "b", "c"])
    assert v.index(["c", "a"]).tolist() == [2, 0]
    assert v.decode([1, 2]).tolist() == ["b", "c"]
    assert v.index(["a", "zz"], missing="negative").tolist() == [0, -1]
    with pytest.raises(UnknownIdError, match="unknown user.*'zz'"):
        v.index(["zz"], kind="user")
    with pytest.raises(ValueError, match="unique"):
        Vocabulary(["a", "a"])


def test_aggregation_keeps_first_time_max_weight_and_count():
    ds = InteractionDataset.from_arrays(
        ["u1", "u1", "u1", "u2"], ["x", "x", "y", "x"], timestamps=[5, 3, 9, 1], weights=[1, 3, 2, 1]
    )
    assert len(ds) == 3
    rows = {
        (ds.users.ids[u], ds.items.ids[i]): (t, w, c)
        for u, i, t, w, c in zip(ds.user_idx, ds.item_idx, ds.timestamp, ds.weight, ds.count, strict=True)
    }
    assert rows[("u1", "x")] == (3, 3.0, 2)
    assert rows[("u1", "y")] == (9, 2.0, 1)


def test_matrix_is_users_by_items():
    ds = InteractionDataset.from_arrays(["u1", "u2", "u3"], ["x", "x", "y"], weights=[1, 2, 3])
    m = ds.matrix()
    assert m.shape == (3, 2) == (ds.n_users, ds.n_items)
    assert m[ds.users.index(["u2"])[0], ds.items.index(["x"])[0]] == 1.0
    assert ds.matrix(binary=False).sum() == 6.0


def test_numeric_ids_sort_naturally():
    ds = InteractionDataset.from_arrays(["10", "2", "1"], ["b", "a", "c"])
    assert ds.users.ids.tolist() == ["1", "2", "10"]


def test_subset_checks_mask_shape():
    ds = InteractionDataset.from_arrays(["u"], ["i"])
    with pytest.raises(ValueError, match="mask has shape"):
        ds.subset(np.ones(3, bool))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=80),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_k_core_invariant(pairs, min_user, min_item):
    users, items = zip(*pairs, strict=True)
    ds = InteractionDataset.from_arrays([f"u{u}" for u in users], [f"i{i}" for i in items])
    core = compact(k_core(ds, min_user=min_user, min_item=min_item))
    if len(core):
        assert np.bincount(core.user_idx).min() >= min_user
        assert np.bincount(core.item_idx).min() >= min_item
    # Maximality: every pair of the original whose user and item survive is kept.
    kept = set(zip(core.users.decode(core.user_idx), core.items.decode(core.item_idx), strict=True))
    orig = set(zip(ds.users.decode(ds.user_idx), ds.items.decode(ds.item_idx), strict=True))
    surv_u, surv_i = set(core.users.ids), set(core.items.ids)
    assert kept == {(u, i) for u, i in orig if u in surv_u and i in surv_i}


def test_vocabulary_close_match_forgives_spaces_case_and_a_trailing_point_zero():
    vocab = Vocabulary(["17850", "C12", "85123A"])
    assert vocab.close_match("17850.0") == "17850"
    assert vocab.close_match(" 17850 ") == "17850"
    assert vocab.close_match("c12") == "C12" and vocab.close_match("85123a") == "85123A"
    assert vocab.close_match("17850") is None and vocab.close_match("17851") is None


def test_vocabulary_lookup_keeps_query_order_and_dtype_for_unsorted_ids():
    ids = ["C10", "C2", "b", "A", "c1", "é", ""]  # natural order, not code-point order
    v = Vocabulary(ids)
    query = ["é", "C2", "nope", "", "C10", "C1", "A"]
    out = v.index(query, missing="negative")
    assert out.dtype == np.int64
    assert out.tolist() == [5, 1, -1, 6, 0, -1, 3]
    assert v.index([]).tolist() == [] and v.index([]).dtype == np.int64
    assert "b" in v and "B" not in v and 2 not in Vocabulary(["1"])
    assert 1 in Vocabulary(["1"])  # raw ids are compared as strings, as before


def test_vocabulary_unknown_ids_near_the_ends_and_prefixes_are_unknown():
    v = Vocabulary(["b", "bb", "d"])
    assert v.index(["a", "ba", "bbb", "c", "e", "b"], missing="negative").tolist() == [-1, -1, -1, -1, -1, 0]
    with pytest.raises(UnknownIdError, match="'bbb'"):
        v.index(["b", "bbb"])
    assert Vocabulary([]).index(["x"], missing="negative").tolist() == [-1] and "x" not in Vocabulary([])
    # One id (the service's per-request lookup) takes its own path: the same answers.
    for q in ["a", "b", "bb", "bbb", "bbbbbbbbbbbb", "d", "e", "b\x00", "d\x00"]:
        assert v.index([q], missing="negative")[0] == v.index([q, "zz"], missing="negative")[0]
        assert (q in v) == (q in {"b", "bb", "d"})


def test_vocabulary_refuses_ids_that_numpy_strings_would_shorten():
    with pytest.raises(ValueError, match="NUL"):
        Vocabulary(["a", "b\x00"])
    v = Vocabulary(["a", "b"])
    assert v.index(["a\x00", "b"], missing="negative").tolist() == [-1, 1]  # an inner NUL is an id like any
    assert Vocabulary(["a\x00b", "a"]).index(["a\x00b"]).tolist() == [0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(exclude_characters="\x00"), max_size=6), unique=True, max_size=40),
       st.lists(st.text(max_size=6), max_size=40))
def test_vocabulary_lookup_is_a_dict_lookup(ids, others):
    v = Vocabulary(ids)
    ref = {s: i for i, s in enumerate(ids)}
    query = ids[::-1] + others
    assert v.index(query, missing="negative").tolist() == [ref.get(q, -1) for q in query]


def test_vocabulary_large_lookup_sorts_the_queries_and_gives_the_same_answer(monkeypatch):
    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in rng.permutation(500)]
    query = [f"u{i}" for i in rng.integers(0, 600, 2_000)]
    v = Vocabulary(ids)
    small = v.index(query, missing="negative")
    monkeypatch.setattr(Vocabulary, "SORTED_QUERIES", 10)
    monkeypatch.setattr(Vocabulary, "CHUNK", 7)
    assert v.index(query, missing="negative").tolist() == small.tolist()
    ref = {s: i for i, s in enumerate(ids)}
    assert small.tolist() == [ref.get(q, -1) for q in query]
    with pytest.raises(ValueError, match="unique"):
        Vocabulary([*ids, ids[3]])
