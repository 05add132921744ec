import itertools

import numpy as np
import pytest

from retailgan.models.diversify import dpp, gram, mmr

# Two near-duplicates at the top and a distinct, less relevant third candidate.
VECS = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]], np.float32)
SIM = VECS @ VECS.T
REL = np.array([0.9, 0.89, 0.5])


def test_mmr_trades_relevance_for_spread():
    assert mmr(REL, SIM, 2, 0.0).tolist() == [0, 1]
    assert mmr(REL, SIM, 2, 0.5).tolist() == [0, 2]


def test_dpp_weight_moves_from_relevance_to_spread():
    assert dpp(REL, SIM, 2, 0.0, temperature=0.1).tolist() == [0, 1]
    assert dpp(REL, SIM, 2, 0.1, temperature=0.1).tolist() == [0, 1]
    assert dpp(REL, SIM, 2, 0.7, temperature=0.1).tolist() == [0, 2]
    assert dpp(REL, SIM, 3, 1.0).tolist() == [0, 2, 1]  # relevance ignored: volume only


def _greedy_logdet(rel, vecs, k, diversity, temperature):
    """Reference: each step adds the candidate maximising det of the picks' kernel, directly."""
    alpha = (1 - diversity) / (2 * diversity)
    q = np.exp(alpha * (rel - rel.max()) / temperature)
    kernel = q[:, None] * (vecs @ vecs.T) * q[None, :]
    chosen: list[int] = []
    for _ in range(k):
        dets = [
            -np.inf if i in chosen else np.linalg.det(kernel[np.ix_([*chosen, i], [*chosen, i])])
            for i in range(len(rel))
        ]
        chosen.append(int(np.argmax(dets)))
    return chosen


@pytest.mark.parametrize("seed, diversity", list(itertools.product(range(6), (0.2, 0.5, 0.9))))
def test_dpp_is_the_greedy_determinant_maximiser(seed, diversity):
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(9, 5))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rel = np.sort(rng.uniform(-1, 1, 9))[::-1]
    got = dpp(rel, vecs @ vecs.T, 4, diversity, temperature=0.5)
    assert got.tolist() == _greedy_logdet(rel, vecs, 4, diversity, 0.5)
    assert len(set(got.tolist())) == 4


def test_dpp_low_rank_similarity_falls_back_to_relevance():
    # Every vector is the same direction: after the first pick none adds volume, and the rest
    # of the list keeps the relevance order instead of an arbitrary one.
    vecs = np.ones((5, 3))
    assert dpp(np.linspace(1, 0, 5), gram(vecs), 4, 0.5).tolist() == [0, 1, 2, 3]


def test_diversifiers_check_their_inputs():
    for fn in (mmr, dpp):
        with pytest.raises(ValueError, match="candidates x candidates"):
            fn(REL, SIM[:2], 2, 0.5)
        with pytest.raises(ValueError, match="k must be"):
            fn(REL, SIM, 4, 0.5)
        with pytest.raises(ValueError, match="diversity"):
            fn(REL, SIM, 2, 1.5)
    with pytest.raises(ValueError, match="temperature"):
        dpp(REL, SIM, 2, 0.5, temperature=0.0)


def test_gram_is_cosine_and_zero_rows_are_like_nothing():
    sim = gram(np.array([[3.0, 4.0], [6.0, 8.0], [0.0, 0.0], [4.0, -3.0]]))
    np.testing.assert_allclose(sim[0], [1.0, 1.0, 0.0, 0.0], atol=1e-12)
    assert sim[2].tolist() == [0.0, 0.0, 0.0, 0.0]
