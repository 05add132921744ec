"""Products added to a fitted model's catalogue without retraining (``add_products``), shared by
the models that embed a product from its catalogue record (featgan, the cold-start models)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from retailgan.data.dataset import ItemInfo, Vocabulary
from retailgan.errors import ConfigError


@dataclass(frozen=True)
class NewProducts:
    """Checked catalogue records of products to add (aligned arrays; missing price = NaN)."""

    ids: list[str]
    titles: np.ndarray
    categories: np.ndarray
    prices: np.ndarray


def new_products(
    model: Any,
    item_ids: Sequence[object],
    titles: Sequence[object],
    categories: Sequence[object] | None = None,
    prices: Sequence[float | None] | None = None,
) -> NewProducts:
    """The records as arrays; refuses unequal lengths and ids the fitted ``model`` has or repeats."""
    model._check_fitted()
    ids = [str(i) for i in item_ids]
    n = len(ids)
    cats = np.asarray([None] * n if categories is None else list(categories), dtype=object)
    pr = np.asarray([np.nan if p is None else float(p) for p in (prices if prices is not None else [None] * n)])
    tit = np.asarray(list(titles), dtype=object)
    if not (len(tit) == len(cats) == len(pr) == n):
        raise ConfigError(f"add_products: {n} ids, {len(tit)} titles, {len(cats)} categories, {len(pr)} prices")
    known = model.items.index(ids, missing="negative") >= 0
    dup = [i for i, k in zip(ids, known, strict=True) if k] + [i for i in set(ids) if ids.count(i) > 1]
    if dup:
        raise ConfigError(f"add_products: product id(s) already in the catalogue or repeated: {sorted(set(dup))[:10]}")
    return NewProducts(ids, tit, cats, pr)


def extend_catalogue(model: Any, new: NewProducts) -> None:
    """Append the products to ``model``'s id map, catalogue, purchase matrix (no buyers) and
    popularity (0); the model's own per-product arrays are the caller's."""
    n = len(new.ids)
    model.items = Vocabulary(list(model.items.ids) + new.ids)
    info = model.item_info
    model.item_info = ItemInfo(
        np.concatenate([info.titles, new.titles]),
        np.concatenate([info.categories, new.categories]),
        np.concatenate([info.prices, new.prices]),
    )
    seen = model.seen
    model.seen = sp.csr_matrix((seen.data, seen.indices, seen.indptr), shape=(seen.shape[0], len(model.items)))
    model.popularity = np.concatenate([model.popularity, np.zeros(n, np.float32)])
