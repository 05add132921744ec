"""The product feature space the feature GAN generates into and retrieves from.

One vector per product, the concatenation of four blocks, each L2-normalised and then scaled by
its weight (so a block's share of a cosine similarity is set by its weight, not by its size):

* ``text``: TF-IDF of the title / description reduced by a truncated SVD
  (:class:`~retailgan.features.text.TextEncoder`; it won against sentence embeddings on
  validation, docs/benchmarks-content.md);
* ``category``: one-hot over the categories seen at fit time (an unseen or missing category:
  zeros);
* ``price``: one-hot price band, bands at quantiles of log price over the fitted catalogue
  (missing price: zeros);
* ``collab``: collaborative embedding, the truncated SVD of the item x customer matrix (rows
  L2-normalised), for products with interactions. A product without interactions (a new one)
  gets an **imputed** collaborative block: the similarity-weighted mean of the collaborative
  blocks of its ``impute_neighbors`` nearest products by text among those with interactions
  (zero when it has no known text). A catalogue without any content (no text, category or price:
  a log of ids only) has nothing but this block, which is then ``collab_dim_no_content`` wide.

Fitting learns the text vocabulary and basis, the category list, the price bands and the
collaborative block of the fitted products; :meth:`FeatureSpace.transform` then embeds any product
from its catalogue record alone, so new products are added incrementally without refitting.
The fitted space and the product vectors are cached with the model that uses them, in a folder
(:meth:`FeatureSpace.save`: JSON + safetensors, never a pickle), or in the DuckDB store
(:mod:`retailgan.features.store_cache`, refreshed incrementally for new catalogue products).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from retailgan.errors import ConfigError, ModelFileError
from retailgan.features.linalg import randomized_svd
from retailgan.features.text import TextEncoder, _l2_rows

BLOCKS = ("text", "category", "price", "collab")


IMPUTE_BLOCK_ENTRIES = 1 << 24
"""Text similarities per block when imputing collaborative blocks (128 MiB of float64)."""

@dataclass(frozen=True)
class FeatureSpaceConfig:
    """Sizes and weights of the blocks."""

    text_dim: int = 64
    min_df: int = 2
    collab_dim: int = 32
    collab_dim_no_content: int = 256
    """Width of the collaborative block when the catalogue carries no content at all: it is then
    the only block, and 32 dimensions are too few to tell the products apart (0: ``collab_dim``)."""
    price_bands: int = 8
    impute_neighbors: int = 20
    w_text: float = 1.0
    w_category: float = 0.5
    w_price: float = 0.25
    w_collab: float = 1.0

    def validate(self) -> None:
        if min(self.text_dim, self.min_df, self.price_bands, self.impute_neighbors) < 1 or min(
            self.collab_dim, self.collab_dim_no_content
        ) < 0:
            raise ConfigError(
                "feature space: text_dim, min_df, price_bands, impute_neighbors >= 1, "
                "collab_dim, collab_dim_no_content >= 0"
            )
        if min(self.w_text, self.w_category, self.w_price, self.w_collab) < 0:
            raise ConfigError("feature space: block weights must be >= 0")


class FeatureSpace:
    """Fitted product feature space (see the module docstring)."""

    def __init__(self, config: FeatureSpaceConfig | None = None) -> None:
        self.config = config or FeatureSpaceConfig()
        self.config.validate()
        self.text: TextEncoder = self._new_text_encoder(0)
        self.categories: list[str] = []
        self.price_edges = np.zeros(0, np.float64)
        self._has_prices = False
        self.collab_basis = np.zeros((0, 0), np.float32)
        """Collaborative blocks of the fitted products that had interactions (rows of ``collab_items``)."""
        self.collab_text = np.zeros((0, 0), np.float32)
        """Text blocks of the same products (the neighbours that impute new products' blocks)."""

    def _new_text_encoder(self, seed: int) -> TextEncoder:
        return TextEncoder(self.config.text_dim, self.config.min_df, seed=seed)

    # -- sizes ----------------------------------------------------------------------------------

    @property
    def block_dims(self) -> dict[str, int]:
        return {
            "text": self.text.out_dim,
            "category": len(self.categories),
            "price": len(self.price_edges) + 1 if self._has_prices else 0,
            "collab": int(self.collab_basis.shape[1]),
        }

    @property
    def dim(self) -> int:
        return sum(self.block_dims.values())

    def block_slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, d in self.block_dims.items():
            out[name] = slice(start, start + d)
            start += d
        return out

    # -- fitting --------------------------------------------------------------------------------

    def fit(
        self,
        titles: np.ndarray,
        categories: np.ndarray,
        prices: np.ndarray,
        interactions: sp.csr_matrix | None = None,
        *,
        seed: int = 0,
    ) -> np.ndarray:
        """Fit on a catalogue and return its ``(n_items, dim)`` feature matrix.

        ``interactions`` is the items x customers matrix of the training data (rows aligned with
        the catalogue); products with an empty row get imputed collaborative blocks. The text
        vocabulary is learned from the products that have interactions when there are any (the
        catalogue "known" at training time); the others are embedded as new products would be.
        """
        cfg = self.config
        n = len(titles)
        has = np.ones(n, bool) if interactions is None else np.diff(interactions.indptr) > 0
        fit_rows = has if has.any() else np.ones(n, bool)
        self.text = self._new_text_encoder(seed).fit(list(titles[fit_rows]))
        self.categories = sorted({str(c) for c in categories[fit_rows] if c is not None})
        logp = np.log(np.asarray(prices, np.float64)[fit_rows & np.isfinite(prices) & (np.asarray(prices) > 0)])
        self._has_prices = logp.size > 0
        if logp.size:
            qs = np.quantile(logp, np.linspace(0, 1, cfg.price_bands + 1)[1:-1])
            self.price_edges = np.unique(qs)
        else:
            self.price_edges = np.zeros(0)
        text = self.text.transform(list(titles))
        collab_dim = self.collab_dim_for(has_content=self.text.out_dim > 0 or bool(self.categories) or self._has_prices)
        if interactions is not None and collab_dim > 0 and has.sum() >= 2:
            rows = interactions[has].astype(np.float64)
            norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
            rows = sp.csr_matrix(sp.diags(1.0 / norms) @ rows)
            u, s, _ = randomized_svd(rows, collab_dim, seed=seed)
            self.collab_basis = _l2_rows(u * s).astype(np.float32)
            self.collab_text = text[has]
        else:
            self.collab_basis = np.zeros((0, 0), np.float32)
            self.collab_text = np.zeros((0, text.shape[1]), np.float32)
        collab = self.impute_collab(text)
        collab[has] = self.collab_basis if len(self.collab_basis) else collab[has]
        return self._assemble(text, categories, prices, collab)

    def collab_dim_for(self, *, has_content: bool) -> int:
        """Width of the collaborative block fitted on a catalogue with or without content."""
        cfg = self.config
        if has_content or cfg.collab_dim == 0 or cfg.collab_dim_no_content == 0:
            return cfg.collab_dim
        return cfg.collab_dim_no_content

    # -- embedding ------------------------------------------------------------------------------

    def impute_collab(self, text: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
        """Collaborative blocks imputed from text: similarity-weighted mean of the blocks of the
        ``impute_neighbors`` fitted products nearest by text (cosine > 0 only).

        ``exclude_self``: ``text`` are the fitted products' own text blocks, in order; each
        product's own block is left out (what its block would be, were it new)."""
        n, d = len(text), int(self.collab_basis.shape[1])
        out = np.zeros((n, d), np.float32)
        if d == 0 or len(self.collab_text) == 0 or text.shape[1] == 0:
            return out
        k = min(self.config.impute_neighbors, len(self.collab_text) - int(exclude_self))
        if k < 1:
            return out
        # Rows per block: at most 2,048 and about IMPUTE_BLOCK_ENTRIES similarities (a few
        # copies of them are alive at once), whatever the catalogue size.
        rows = int(min(2048, max(1, IMPUTE_BLOCK_ENTRIES // len(self.collab_text))))
        for s in range(0, n, rows):
            sim = text[s : s + rows] @ self.collab_text.T
            if exclude_self:
                sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            w = np.clip(np.take_along_axis(sim, top, axis=1), 0.0, None)
            out[s : s + rows] = np.einsum("nk,nkd->nd", w, self.collab_basis[top])
        return _l2_rows(out)

    def transform(
        self,
        titles: np.ndarray,
        categories: np.ndarray,
        prices: np.ndarray,
        collab: np.ndarray | None = None,
    ) -> np.ndarray:
        """Feature vectors of products from their catalogue records, without refitting.

        ``collab``: their collaborative blocks when known; ``None`` imputes them from text (new
        products)."""
        text = self.text.transform(list(titles))
        if collab is None:
            collab = self.impute_collab(text)
        return self._assemble(text, categories, prices, collab)

    def _assemble(self, text: np.ndarray, categories: np.ndarray, prices: np.ndarray, collab: np.ndarray) -> np.ndarray:
        cfg = self.config
        n = len(text)
        dims = self.block_dims
        cat = np.zeros((n, dims["category"]), np.float32)
        col = {c: j for j, c in enumerate(self.categories)}
        for i, c in enumerate(categories):
            j = col.get(str(c)) if c is not None else None
            if j is not None:
                cat[i, j] = 1.0
        price = np.zeros((n, dims["price"]), np.float32)
        if dims["price"]:
            p = np.asarray(prices, np.float64)
            ok = np.isfinite(p) & (p > 0)
            band = np.searchsorted(self.price_edges, np.log(np.where(ok, p, 1.0)), side="right")
            price[np.flatnonzero(ok), band[ok]] = 1.0
        parts = [
            cfg.w_text * _l2_rows(np.asarray(text, np.float32)),
            cfg.w_category * cat,
            cfg.w_price * price,
            cfg.w_collab * _l2_rows(np.asarray(collab, np.float32)),
        ]
        return np.concatenate(parts, axis=1).astype(np.float32)

    # -- persistence ----------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "text": self.text.meta(),
            "categories": self.categories,
            "has_prices": self._has_prices,
        }

    def arrays(self, prefix: str = "features") -> dict[str, np.ndarray]:
        return {
            **self.text.arrays(f"{prefix}.text"),
            f"{prefix}.price_edges": self.price_edges.astype(np.float64),
            f"{prefix}.collab_basis": self.collab_basis,
            f"{prefix}.collab_text": self.collab_text,
        }

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str = "features") -> FeatureSpace:
        try:
            space = cls(FeatureSpaceConfig(**meta["config"]))
            space.text = _restore_text(meta["text"], arrays, f"{prefix}.text")
            space.categories = [str(c) for c in meta["categories"]]
            space._has_prices = bool(meta["has_prices"])
            space.price_edges = np.asarray(arrays[f"{prefix}.price_edges"], np.float64)
            space.collab_basis = np.asarray(arrays[f"{prefix}.collab_basis"], np.float32)
            space.collab_text = np.asarray(arrays[f"{prefix}.collab_text"], np.float32)
        except (KeyError, TypeError) as exc:
            raise ModelFileError(f"feature space: missing or invalid field {exc}") from None
        return space

    def save(self, path: str | Path, item_ids: np.ndarray, features: np.ndarray) -> Path:
        """Cache the fitted space and a feature matrix (rows = ``item_ids``) in directory ``path``
        (``features.json`` + ``features.safetensors``, replaced atomically)."""
        path = Path(path)
        if len(item_ids) != len(features):
            raise ConfigError(f"{len(item_ids)} item ids for {len(features)} feature rows")
        from retailgan.persistence import atomic_directory

        with atomic_directory(path) as tmp:
            arrays = {**self.arrays(), "matrix": np.ascontiguousarray(features, np.float32)}
            save_file(arrays, str(tmp / "features.safetensors"))
            meta = {**self.meta(), "item_ids": [str(i) for i in item_ids]}
            (tmp / "features.json").write_text(json.dumps(meta), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> tuple[FeatureSpace, np.ndarray, np.ndarray]:
        """``(space, item_ids, features)`` cached by :meth:`save`."""
        path = Path(path)
        try:
            meta = json.loads((path / "features.json").read_text(encoding="utf-8"))
            arrays = load_file(str(path / "features.safetensors"))
        except FileNotFoundError as exc:
            raise ModelFileError(f"{exc.filename}: missing") from None
        except Exception as exc:
            raise ModelFileError(f"{path}: corrupt feature cache ({exc})") from None
        ids = np.asarray(meta.get("item_ids", []), dtype=object)
        matrix = arrays.get("matrix")
        if matrix is None or len(matrix) != len(ids):
            raise ModelFileError(f"{path}: feature matrix does not match its item ids")
        return cls.restore(meta, arrays), ids, matrix


def _restore_text(meta: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str) -> TextEncoder:
    """The saved text encoder."""
    if meta.get("kind", "tfidf") != "tfidf":
        raise ModelFileError(f"feature space: unknown text encoder {meta.get('kind')!r}")
    return TextEncoder.restore(meta, arrays, prefix)
