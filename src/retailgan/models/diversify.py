"""Greedy re-ranking of a candidate pool into a diverse top-k list.

Both functions take the pool's relevance (``rel``, sorted best first), the pool's similarity
matrix (``sim``, the Gram matrix of the products' vectors, e.g. cosines of unit vectors:
:func:`gram`), the list length ``k`` and a diversity weight in ``[0, 1]`` (0: the pool's own
order), and return the chosen positions in the pool, in list order.

* :func:`mmr`, maximal marginal relevance (Carbonell and Goldstein, SIGIR 1998): each step picks
  the candidate maximising ``(1 - diversity) * rel - diversity * (max similarity to the picks)``.
  It counts only the most similar pick, so a candidate moderately similar to every pick (inside
  the span of the list so far) is penalised no more than one similar to a single pick.
* :func:`dpp`, greedy MAP inference of a determinantal point process (Chen, Zhang and Zhou,
  NeurIPS 2018): the kernel is ``L = diag(q) S diag(q)`` with ``S`` the similarity matrix and
  ``q = exp(alpha * rel / temperature)``, ``alpha = (1 - diversity) / (2 * diversity)``; each
  step adds the candidate that most increases ``log det L`` of the picks, i.e. its quality
  ``q^2`` times the part of its vector not spanned by the picks. ``diversity = 0.5`` weighs the
  picks by ``prod exp(rel / temperature)`` (relevance read as softmax logits) times the squared
  volume their vectors span; lower values lean towards relevance, 1 ignores it.
"""

from __future__ import annotations

import numpy as np


def gram(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarities of the rows of ``vectors`` (zero rows: similarity 0 to everything)."""
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v @ v.T


def _check(rel: np.ndarray, sim: np.ndarray, k: int, diversity: float) -> None:
    if sim.shape != (len(rel), len(rel)):
        raise ValueError(f"sim must be candidates x candidates: {sim.shape} for {len(rel)} candidates")
    if not 0 <= k <= len(rel):
        raise ValueError(f"k must be in [0, {len(rel)}], got {k}")
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")


def mmr(rel: np.ndarray, sim: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Greedy maximal marginal relevance (module docstring); ``rel`` sorted best first."""
    _check(rel, sim, k, diversity)
    if diversity == 0.0:
        return np.arange(k)  # candidates arrive sorted by relevance
    chosen: list[int] = []
    max_sim = np.full(len(rel), -np.inf)
    available = np.ones(len(rel), bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = np.where(available, (1 - diversity) * rel - diversity * penalty, -np.inf)
        j = int(np.argmax(value))
        chosen.append(j)
        available[j] = False
        max_sim = np.maximum(max_sim, sim[j])
    return np.asarray(chosen, np.int64)


def dpp(rel: np.ndarray, sim: np.ndarray, k: int, diversity: float, temperature: float = 1.0) -> np.ndarray:
    """Greedy DPP MAP inference (module docstring); ``rel`` sorted best first, in units of
    ``temperature`` (featgan passes its softmax temperature, so ``rel / temperature`` are logits);
    ``sim`` must be positive semi-definite (a Gram matrix)."""
    _check(rel, sim, k, diversity)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if diversity == 0.0:
        return np.arange(k)
    rel = np.asarray(rel, np.float64)
    alpha = (1.0 - diversity) / (2.0 * diversity)
    q = np.exp(alpha * (rel - rel.max()) / temperature)  # shifted: only ratios matter
    kernel = q[:, None] * np.asarray(sim, np.float64) * q[None, :]
    # Cholesky-style incremental update (Chen et al., Algorithm 1): c holds the picks'
    # orthogonalised coordinates, gain[i] = q_i^2 * (residual of i's vector off the picks' span).
    n = len(rel)
    c = np.zeros((k, n))
    gain = np.diag(kernel).copy()
    available = np.ones(n, bool)
    chosen: list[int] = []
    for t in range(k):
        # A candidate whose vector the picks already span adds nothing to the volume; once every
        # one is spanned (a low-rank similarity), the rest of the list follows relevance.
        eligible = available & (gain > 1e-12 * max(float(q.max()) ** 2, 1e-300))
        if not eligible.any():
            chosen.extend(np.flatnonzero(available)[: k - t].tolist())
            break
        j = int(np.argmax(np.where(eligible, gain, -np.inf)))
        chosen.append(j)
        available[j] = False
        if t + 1 == k:
            break
        e = (kernel[j] - c[:t, j] @ c[:t]) / np.sqrt(gain[j])
        c[t] = e
        gain = gain - e**2
    return np.asarray(chosen, np.int64)
