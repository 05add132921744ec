"""In-memory interaction datasets: id vocabularies, the users x items matrix, item metadata.

A dataset holds one row per (user, item) pair, aggregated from the store's events:

* ``timestamp``: the first time the user interacted with the item (seconds since the epoch), so a
  temporal split asks "which items will the user pick up next";
* ``weight``: the strongest implicit signal seen for the pair, by event type (view < cart <
  purchase by default, configurable); ratings count only at or above the rating threshold;
* ``count``: the number of events behind the pair.

Orientation is fixed: rows are users, columns are items, everywhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from retailgan.data.schemas import DEFAULT_EVENT_WEIGHTS
from retailgan.errors import ConfigError, UnknownIdError

if TYPE_CHECKING:
    from retailgan.data.reftime import AsOf

log = logging.getLogger("retailgan.data")


class Vocabulary:
    """A bijection between raw string ids and dense integer indices ``0..n-1``.

    Ids are looked up by binary search in a sorted copy of them (a fixed-width numpy string array
    and the permutation that sorts them), not through a dict: at a million customers a dict takes
    half a second of Python bytecode to build, during which a service's event loop shares the
    interpreter with the model reload; the conversion here runs in C in short chunks and the sort
    releases the interpreter lock. Ids may not end with a NUL character (numpy strings drop them)."""

    __slots__ = ("_ids", "_keys", "_order")

    CHUNK = 1 << 16
    """Ids converted to the sorted key array per C call (other threads run between chunks)."""
    SORTED_QUERIES = 1 << 16
    """Lookups of at least this many ids sort them first (binary searches in order hit the cache)."""

    def __init__(self, ids: Iterable[str]) -> None:
        self._ids = np.asarray([str(i) for i in ids], dtype=object)
        keys, inexact = _str_array(self._ids, self.CHUNK)
        if inexact.any():
            raise ValueError(f"vocabulary id {self._ids[np.flatnonzero(inexact)[0]]!r} ends with a NUL character")
        if len(keys) > 1 and bool((keys[1:] > keys[:-1]).all()):
            self._order = np.arange(len(keys), dtype=np.int64)  # already sorted: no sort, no permutation
        else:
            self._order = np.argsort(keys, kind="stable").astype(np.int64, copy=False)
            keys = keys[self._order]
        if len(keys) > 1 and bool((keys[1:] == keys[:-1]).any()):
            raise ValueError("vocabulary ids must be unique")
        self._keys = keys

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw_id: object) -> bool:
        return self._find(str(raw_id)) >= 0

    def _find(self, raw: str) -> int:
        """Index of one id, or -1 (one binary search, a microsecond: the service's per-request lookup)."""
        if not len(self._keys) or raw.endswith("\x00"):
            return -1
        p = int(self._keys.searchsorted(raw))
        # Compared in full: an id longer than the array's width is never one of ours.
        return int(self._order[p]) if p < len(self._keys) and str(self._keys[p]) == raw else -1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and np.array_equal(self._ids, other._ids)

    def __hash__(self) -> int:  # pragma: no cover - vocabularies are not used as dict keys
        return hash(tuple(self._ids))

    @property
    def ids(self) -> np.ndarray:
        """Raw ids in index order (object array of str)."""
        return self._ids

    def index(self, raw_ids: Iterable[object], *, missing: str = "error", kind: str = "id") -> np.ndarray:
        """Indices of ``raw_ids`` (int64, in the order given). ``missing="error"`` raises
        :class:`UnknownIdError` naming the unknown ids; ``missing="negative"`` maps them to -1."""
        raw = np.asarray([str(r) for r in raw_ids], dtype=object)
        out = np.full(len(raw), -1, dtype=np.int64)
        if len(raw) == 1:
            out[0] = self._find(raw[0])
        elif len(raw) and len(self._keys):
            q, inexact = _str_array(raw, self.CHUNK)
            sort = np.argsort(q, kind="stable") if len(q) >= self.SORTED_QUERIES else None
            pos = np.empty(len(q), dtype=np.int64)
            if sort is None:
                pos[:] = np.searchsorted(self._keys, q)
            else:
                pos[sort] = np.searchsorted(self._keys, q[sort])
            np.minimum(pos, len(self._keys) - 1, out=pos)
            found = (self._keys[pos] == q) & ~inexact  # an id ending in NUL is never one of ours
            out[found] = self._order[pos[found]]
        if missing == "error" and (out < 0).any():
            unknown = [str(r) for r, i in zip(raw, out, strict=True) if i < 0]
            raise UnknownIdError(kind, unknown)
        return out

    def decode(self, idx: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw ids of indices (object array, same shape)."""
        return self._ids[np.asarray(idx, dtype=np.int64)]

    def close_match(self, raw_id: str) -> str | None:
        """A known id that ``raw_id`` differs from only by spaces, letter case or a trailing ``.0``
        (as a spreadsheet writes a numeric id), or None."""

        def norm(s: str) -> str:
            return re.sub(r"\.0+$", "", s.strip()).lower()

        key = norm(str(raw_id))
        if key != raw_id and key in self:
            return key
        return next((i for i in self._ids if norm(i) == key and i != raw_id), None)


def _str_array(ids: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` (object array of str) as one fixed-width numpy string array, converted in chunks
    (each a short C call that holds the interpreter lock), and a mask of the ids it does not hold
    exactly (numpy strings drop trailing NUL characters)."""
    lengths = np.empty(len(ids), dtype=np.int64)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        lengths[start : start + len(part)] = np.fromiter(map(len, part), dtype=np.int64, count=len(part))
    out = np.empty(len(ids), dtype=f"<U{max(int(lengths.max(initial=1)), 1)}")
    for start in range(0, len(ids), chunk):
        out[start : start + chunk] = ids[start : start + chunk]
    return out, np.strings.str_len(out) != lengths


@dataclass(frozen=True)
class ItemInfo:
    """Catalogue metadata aligned with an item vocabulary (missing values are None / NaN)."""

    titles: np.ndarray
    categories: np.ndarray
    prices: np.ndarray

    @classmethod
    def empty(cls, n_items: int) -> ItemInfo:
        return cls(
            titles=np.full(n_items, None, dtype=object),
            categories=np.full(n_items, None, dtype=object),
            prices=np.full(n_items, np.nan, dtype=np.float64),
        )

    def subset(self, idx: np.ndarray) -> ItemInfo:
        return ItemInfo(self.titles[idx], self.categories[idx], self.prices[idx])

    def has_prices(self) -> bool:
        return bool(np.isfinite(self.prices).any())

    def category_features(self) -> sp.csr_matrix:
        """One-hot item x category matrix (items without category get an empty row)."""
        cats = [c if c is not None else "" for c in self.categories]
        uniq = sorted({c for c in cats if c})
        col = {c: j for j, c in enumerate(uniq)}
        rows = [i for i, c in enumerate(cats) if c]
        cols = [col[c] for c in cats if c]
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(cats), max(len(uniq), 1)))


@dataclass
class InteractionDataset:
    """Aggregated (user, item) interactions with their vocabularies.

    All arrays have one entry per pair; ``user_idx``/``item_idx`` index into ``users``/``items``.
    Splits share the vocabularies of the dataset they come from, so indices agree across parts.
    """

    users: Vocabulary
    items: Vocabulary
    user_idx: np.ndarray
    item_idx: np.ndarray
    timestamp: np.ndarray
    weight: np.ndarray
    count: np.ndarray
    item_info: ItemInfo
    name: str = "dataset"
    _matrix: sp.csr_matrix | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        for attr in ("item_idx", "timestamp", "weight", "count"):
            if len(getattr(self, attr)) != n:
                raise ValueError(f"InteractionDataset.{attr} has {len(getattr(self, attr))} rows, expected {n}")
        if len(self.item_info.titles) != len(self.items):
            raise ValueError("item_info is not aligned with the item vocabulary")
        if n:
            if self.user_idx.min() < 0 or self.user_idx.max() >= len(self.users):
                raise ValueError("user_idx out of range of the user vocabulary")
            if self.item_idx.min() < 0 or self.item_idx.max() >= len(self.items):
                raise ValueError("item_idx out of range of the item vocabulary")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        user_ids: Sequence[object],
        item_ids: Sequence[object],
        *,
        timestamps: Sequence[int] | np.ndarray | None = None,
        weights: Sequence[float] | np.ndarray | None = None,
        item_info: Mapping[str, Mapping[str, object]] | None = None,
        name: str = "dataset",
    ) -> InteractionDataset:
        """Build from raw (user, item) pairs; duplicates are merged (first time, max weight)."""
        users_raw = np.asarray([str(u) for u in user_ids], dtype=object)
        items_raw = np.asarray([str(i) for i in item_ids], dtype=object)
        if len(users_raw) != len(items_raw):
            raise ValueError("user_ids and item_ids differ in length")
        n = len(users_raw)
        ts = np.zeros(n, np.int64) if timestamps is None else np.asarray(timestamps, np.int64)
        w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
        user_vocab = Vocabulary(sorted(set(users_raw.tolist()), key=_natural_key))
        item_names = set(items_raw.tolist()) | set((item_info or {}).keys())
        item_vocab = Vocabulary(sorted(item_names, key=_natural_key))
        u = user_vocab.index(users_raw)
        i = item_vocab.index(items_raw)
        info = ItemInfo.empty(len(item_vocab))
        for raw, meta in (item_info or {}).items():
            j = item_vocab.index([raw])[0]
            info.titles[j] = meta.get("title")
            info.categories[j] = meta.get("category")
            price = meta.get("price")
            info.prices[j] = np.nan if price is None else float(price)  # type: ignore[arg-type]
        return cls._aggregate(user_vocab, item_vocab, u, i, ts, w, np.ones(n, np.int64), info, name)

    @classmethod
    def _aggregate(
        cls,
        users: Vocabulary,
        items: Vocabulary,
        u: np.ndarray,
        i: np.ndarray,
        ts: np.ndarray,
        w: np.ndarray,
        c: np.ndarray,
        info: ItemInfo,
        name: str,
    ) -> InteractionDataset:
        key = u.astype(np.int64) * len(items) + i
        order = np.lexsort((ts, key))
        key_sorted = key[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = key_sorted[1:] != key_sorted[:-1]
        starts = np.flatnonzero(first)
        pick = order[starts]
        return cls(
            users=users,
            items=items,
            user_idx=u[pick].astype(np.int32),
            item_idx=i[pick].astype(np.int32),
            timestamp=ts[pick].astype(np.int64),
            weight=np.maximum.reduceat(w[order], starts).astype(np.float32) if len(order) else w[:0],
            count=np.add.reduceat(c[order], starts).astype(np.int64) if len(order) else c[:0],
            item_info=info,
            name=name,
        )

    # -- views --------------------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return len(self.user_idx)

    def matrix(self, *, binary: bool = True) -> sp.csr_matrix:
        """The users x items CSR matrix (float32; 1 per pair, or the pair weights)."""
        if binary and self._matrix is not None:
            return self._matrix
        data = np.ones(len(self), np.float32) if binary else self.weight.astype(np.float32)
        m = sp.csr_matrix((data, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        m.sort_indices()
        assert m.shape == (self.n_users, self.n_items)
        if binary:
            self._matrix = m
        return m

    def subset(self, mask: np.ndarray, *, name: str | None = None) -> InteractionDataset:
        """The pairs selected by a boolean mask, with the same vocabularies."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise ValueError(f"mask has shape {mask.shape}, expected ({len(self)},)")
        return InteractionDataset(
            users=self.users,
            items=self.items,
            user_idx=self.user_idx[mask],
            item_idx=self.item_idx[mask],
            timestamp=self.timestamp[mask],
            weight=self.weight[mask],
            count=self.count[mask],
            item_info=self.item_info,
            name=name or self.name,
        )

    def item_popularity(self) -> np.ndarray:
        """Number of distinct users per item (length n_items)."""
        return np.bincount(self.item_idx, minlength=self.n_items).astype(np.int64)

    def stats(self) -> dict[str, float]:
        n_u = int(np.unique(self.user_idx).size)
        n_i = int(np.unique(self.item_idx).size)
        return {
            "pairs": len(self),
            "users": n_u,
            "items": n_i,
            "density": len(self) / max(n_u * n_i, 1),
        }


def _natural_key(s: str) -> tuple[int, int | str]:
    """Sort numeric ids numerically and the rest lexically, so '2' < '10'."""
    return (0, int(s)) if s.isdigit() else (1, s)


def k_core(dataset: InteractionDataset, *, min_user: int = 1, min_item: int = 1) -> InteractionDataset:
    """Iteratively drop users with < ``min_user`` and items with < ``min_item`` interactions."""
    if min_user <= 1 and min_item <= 1:
        return dataset
    keep = np.ones(len(dataset), dtype=bool)
    while True:
        ucount = np.bincount(dataset.user_idx[keep], minlength=dataset.n_users)
        icount = np.bincount(dataset.item_idx[keep], minlength=dataset.n_items)
        bad = keep & ((ucount[dataset.user_idx] < min_user) | (icount[dataset.item_idx] < min_item))
        if not bad.any():
            break
        keep &= ~bad
    return dataset.subset(keep)


def compact(dataset: InteractionDataset) -> InteractionDataset:
    """Re-index to the users and items that still have interactions (after filtering)."""
    u_keep = np.unique(dataset.user_idx)
    i_keep = np.unique(dataset.item_idx)
    u_map = np.full(dataset.n_users, -1, np.int64)
    u_map[u_keep] = np.arange(len(u_keep))
    i_map = np.full(dataset.n_items, -1, np.int64)
    i_map[i_keep] = np.arange(len(i_keep))
    return InteractionDataset(
        users=Vocabulary(dataset.users.ids[u_keep]),
        items=Vocabulary(dataset.items.ids[i_keep]),
        user_idx=u_map[dataset.user_idx].astype(np.int32),
        item_idx=i_map[dataset.item_idx].astype(np.int32),
        timestamp=dataset.timestamp,
        weight=dataset.weight,
        count=dataset.count,
        item_info=dataset.item_info.subset(i_keep),
        name=dataset.name,
    )


@dataclass(frozen=True)
class LoadOptions:
    """How store events become implicit feedback."""

    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    rating_threshold: float | None = None
    """Ratings below this are dropped (``None``: every rating is a positive)."""
    min_user: int = 1
    min_item: int = 1
    """k-core thresholds, applied iteratively."""
    as_of: AsOf = None
    """Reference time (:mod:`retailgan.data.reftime`): events dated after it are left out."""

    def __post_init__(self) -> None:
        for k, v in self.event_weights.items():
            if not (isinstance(v, int | float) and v > 0):
                raise ConfigError(f"event weight for {k!r} must be a positive number, got {v!r}")
        if self.min_user < 1 or self.min_item < 1:
            raise ConfigError("k-core thresholds must be >= 1")


def load_dataset(store_path: str | Path, options: LoadOptions | None = None) -> InteractionDataset:
    """Read the store's events into an :class:`InteractionDataset` (aggregated per pair).

    Items in the catalogue without any kept interaction are kept out of the vocabulary: a
    collaborative model cannot rank them; content-based models read the catalogue themselves.
    Events dated after the reference time (``options.as_of``) are left out and reported with a
    warning: a stray future-dated event must not become every recency feature's "now".
    """
    from retailgan.data.reftime import reference_time
    from retailgan.data.store import Store

    options = options or LoadOptions()
    weights = dict(options.event_weights)
    with Store.open(store_path, create=False, read_only=True) as store:
        con = store.con
        known = [t for (t,) in con.execute("SELECT DISTINCT event_type FROM events").fetchall()]
        missing = sorted(set(known) - set(weights))
        if missing:
            raise ConfigError(f"no weight configured for event type(s) {missing}; known: {sorted(weights)}")
        case = " ".join(f"WHEN '{k}' THEN {float(v)!r}" for k, v in weights.items() if "'" not in k)
        ref = reference_time(con, options.as_of)
        if ref.notice():
            log.warning("%s: %s", store_path, ref.notice())
        where, params = "TRUE", []
        if ref.ts is not None:
            where, params = "(ts IS NULL OR ts <= ?)", [ref.ts]
        if options.rating_threshold is not None:
            where += " AND (event_type <> 'rating' OR rating >= ?)"
            params.append(float(options.rating_threshold))
        rows = con.execute(
            f"""
            SELECT user_id, item_id,
                   coalesce(epoch(min(ts))::BIGINT, 0) AS t,
                   max(CASE event_type {case} END)::FLOAT AS w,
                   count(*)::BIGINT AS c
            FROM events WHERE {where}
            GROUP BY user_id, item_id
            """,
            params,
        ).fetchnumpy()
        catalogue = con.execute("SELECT item_id, title, category, price FROM items").fetchnumpy()
        name_row = con.execute("SELECT value FROM meta WHERE key = 'dataset_name'").fetchone()
    name = name_row[0] if name_row else Path(store_path).stem
    user_ids = rows["user_id"].astype(object)
    item_ids = rows["item_id"].astype(object)
    users = Vocabulary(sorted(set(user_ids.tolist()), key=_natural_key))
    items = Vocabulary(sorted(set(item_ids.tolist()), key=_natural_key))
    info = ItemInfo.empty(len(items))
    if len(catalogue["item_id"]):
        cat_idx = items.index(catalogue["item_id"].astype(object), missing="negative")
        ok = cat_idx >= 0
        info.titles[cat_idx[ok]] = _nullable(catalogue["title"])[ok]
        info.categories[cat_idx[ok]] = _nullable(catalogue["category"])[ok]
        info.prices[cat_idx[ok]] = _nullable_float(catalogue["price"])[ok]
    ds = InteractionDataset._aggregate(
        users,
        items,
        users.index(user_ids),
        items.index(item_ids),
        np.asarray(rows["t"], np.int64),
        np.asarray(rows["w"], np.float32),
        np.asarray(rows["c"], np.int64),
        info,
        name,
    )
    return compact(k_core(ds, min_user=options.min_user, min_item=options.min_item))


def _nullable(col: np.ndarray) -> np.ndarray:
    if np.ma.isMaskedArray(col):
        out = col.data.astype(object)
        out[np.ma.getmaskarray(col)] = None
        return out
    return col.astype(object)


def _nullable_float(col: np.ndarray) -> np.ndarray:
    if np.ma.isMaskedArray(col):
        return np.ma.filled(col.astype(np.float64), np.nan)
    return col.astype(np.float64)
