"""TF-IDF of product titles / descriptions, reduced to a dense vector with a truncated SVD (LSA).

Fitted once on a catalogue; any later product (a new one included) is transformed with the fitted
vocabulary, IDF weights and SVD basis, without refitting. Words the vocabulary does not know are
ignored; a product with no known word gets the zero vector.

Terms are lower-cased alphanumeric word unigrams and adjacent-word bigrams; a term is kept when it
occurs in at least ``min_df`` fitted products. Term frequencies are sublinear (``1 + log tf``),
IDF is smoothed (``log((1 + n) / (1 + df)) + 1``), rows are L2-normalised before and after the
projection, so inner products of the outputs are cosine similarities.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.errors import ConfigError
from retailgan.features.linalg import randomized_svd

_WORD = re.compile(r"[a-z0-9]+")


def terms(text: object) -> list[str]:
    """Unigrams and bigrams of a title (``None`` or NaN: no terms)."""
    if text is None or (isinstance(text, float) and text != text):
        return []
    words = _WORD.findall(str(text).lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


def _l2_rows(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)


class TextEncoder:
    """TF-IDF + truncated SVD of product texts (see the module docstring)."""

    def __init__(self, dim: int = 64, min_df: int = 2, seed: int = 0) -> None:
        if dim < 1 or min_df < 1:
            raise ConfigError(f"text encoder: dim and min_df must be >= 1, got {dim}, {min_df}")
        self.dim, self.min_df, self.seed = dim, min_df, seed
        self.vocabulary: dict[str, int] = {}
        self.idf = np.zeros(0, np.float64)
        self.components = np.zeros((0, 0), np.float32)

    @property
    def out_dim(self) -> int:
        """Length of the output vectors (``dim`` or fewer when the catalogue is tiny)."""
        return int(self.components.shape[0])

    def fit(self, texts: Sequence[object]) -> TextEncoder:
        docs = [set(terms(t)) for t in texts]
        df = Counter(t for d in docs for t in d)
        kept = sorted(t for t, c in df.items() if c >= self.min_df)
        if not kept:  # tiny catalogues: keep every term rather than none
            kept = sorted(df)
        self.vocabulary = {t: j for j, t in enumerate(kept)}
        n = len(docs)
        dfs = np.array([df[t] for t in kept], dtype=np.float64)
        self.idf = np.log((1.0 + n) / (1.0 + dfs)) + 1.0
        tfidf = self._tfidf(texts)
        if tfidf.shape[1] == 0 or tfidf.nnz == 0:
            self.components = np.zeros((0, tfidf.shape[1]), np.float32)
            return self
        _, _, vt = randomized_svd(tfidf, self.dim, seed=self.seed)
        self.components = vt.astype(np.float32)
        return self

    def _tfidf(self, texts: Iterable[object]) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        n = 0
        for r, text in enumerate(texts):
            n = r + 1
            counts = Counter(j for t in terms(text) if (j := self.vocabulary.get(t)) is not None)
            for j, c in counts.items():
                rows.append(r)
                cols.append(j)
                vals.append((1.0 + np.log(c)) * self.idf[j])
        m = sp.csr_matrix((vals, (rows, cols)), shape=(n, len(self.vocabulary)), dtype=np.float64)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(inv) @ m)

    def tfidf(self, texts: Sequence[object]) -> sp.csr_matrix:
        """``(len(texts), vocabulary size)`` TF-IDF rows, L2-normalised, before the SVD (zero rows
        for texts with no known term): the sharpest text similarity the encoder knows."""
        return self._tfidf(texts)

    def transform(self, texts: Sequence[object]) -> np.ndarray:
        """``(len(texts), out_dim)`` float32, rows L2-normalised (zero for texts with no known term)."""
        if self.out_dim == 0:
            return np.zeros((len(texts), 0), np.float32)
        dense = np.asarray(self._tfidf(texts) @ self.components.T.astype(np.float64))
        return _l2_rows(dense).astype(np.float32)

    # -- persistence: the vocabulary goes to JSON, the numbers to safetensors -------------------

    def meta(self) -> dict[str, Any]:
        terms_in_order = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {"kind": "tfidf", "dim": self.dim, "min_df": self.min_df, "seed": self.seed, "terms": terms_in_order}

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.idf": self.idf.astype(np.float64), f"{prefix}.components": self.components}

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str) -> TextEncoder:
        enc = cls(int(meta["dim"]), int(meta["min_df"]), int(meta["seed"]))
        enc.vocabulary = {str(t): j for j, t in enumerate(meta["terms"])}
        enc.idf = np.asarray(arrays[f"{prefix}.idf"], np.float64)
        enc.components = np.asarray(arrays[f"{prefix}.components"], np.float32)
        if enc.idf.shape != (len(enc.vocabulary),) or enc.components.shape[1:] not in ((len(enc.vocabulary),),):
            raise ConfigError("text encoder: saved arrays do not match the saved vocabulary")
        return enc
