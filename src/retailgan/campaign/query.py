"""Segment and theme queries of ``retailgan campaign build``.

Segment (who gets the campaign), one of:

* ``all``: every customer of the store;
* ``ids:ID1,ID2``: these customer ids (each must be in the store);
* ``country:NAME``: customers of this country (it must occur in the store);
* ``recent:N``: customers whose last purchase is within N days of the reference time
  (:mod:`retailgan.data.reftime`; events after it do not count);
* ``spend:LOW-HIGH``: customers whose total purchase spend (quantity x price) is in [LOW, HIGH].

Theme (which products may be recommended): ``;``-separated ``category:NAME``, ``keyword:WORD``
(title contains WORD, case-insensitive) and ``max_price:P`` (products with a known price <= P).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from retailgan.data.store import Store
from retailgan.errors import ConfigError


@dataclass(frozen=True)
class Segment:
    """A parsed segment query; ``text`` is the query as given."""

    kind: str
    text: str
    ids: tuple[str, ...] = ()
    country: str | None = None
    days: int | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Theme:
    """A parsed theme; all fields None means no restriction."""

    category: str | None = None
    keyword: str | None = None
    max_price: float | None = None

    @property
    def empty(self) -> bool:
        return self.category is None and self.keyword is None and self.max_price is None


_SEGMENT_HELP = "use all, ids:ID1,ID2, country:NAME, recent:DAYS or spend:LOW-HIGH"


def _number(text: str, what: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise ConfigError(f"{what}: {text!r} must be a finite number >= 0")
    return x


def parse_segment(query: str) -> Segment:
    """Parse a segment query; raises :class:`ConfigError` naming the problem."""
    q = query.strip()
    if q == "all":
        return Segment(kind="all", text=q)
    kind, sep, value = q.partition(":")
    kind, value = kind.strip(), value.strip()
    if not sep or kind not in ("ids", "country", "recent", "spend"):
        raise ConfigError(f"segment {query!r}: unknown segment kind {kind!r}; {_SEGMENT_HELP}")
    if not value:
        raise ConfigError(f"segment {query!r}: missing value after '{kind}:'")
    if kind == "ids":
        ids = [x.strip() for x in value.split(",")]
        if any(not x for x in ids):
            raise ConfigError(f"segment {query!r}: empty customer id in the list")
        return Segment(kind="ids", text=q, ids=tuple(sorted(set(ids))))
    if kind == "country":
        return Segment(kind="country", text=q, country=value)
    if kind == "recent":
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"segment {query!r}: days must be a whole number >= 1, got {value!r}")
        return Segment(kind="recent", text=q, days=int(value))
    low_s, dash, high_s = value.partition("-")
    if not dash:
        raise ConfigError(f"segment {query!r}: spend band must be LOW-HIGH, e.g. spend:100-500")
    low, high = _number(low_s.strip(), f"segment {query!r} low"), _number(high_s.strip(), f"segment {query!r} high")
    if low > high:
        raise ConfigError(f"segment {query!r}: low {low:g} is above high {high:g}")
    return Segment(kind="spend", text=q, low=low, high=high)


def parse_theme(query: str | None) -> Theme:
    """Parse a theme such as ``category:Home;max_price:20``; raises :class:`ConfigError`."""
    if query is None or not query.strip():
        return Theme()
    values: dict[str, str] = {}
    for part in query.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("category", "keyword", "max_price"):
            raise ConfigError(f"theme {query!r}: unknown theme part {part.strip()!r}; "
                              "use category:NAME, keyword:WORD, max_price:P joined by ';'")
        if key in values:
            raise ConfigError(f"theme {query!r}: {key} given twice")
        if not value:
            raise ConfigError(f"theme {query!r}: missing value after '{key}:'")
        values[key] = value
    mp = values.get("max_price")
    return Theme(
        category=values.get("category"),
        keyword=values.get("keyword"),
        max_price=None if mp is None else _number(mp, f"theme {query!r} max_price"),
    )


def theme_mask(theme: Theme, titles: np.ndarray, categories: np.ndarray, prices: np.ndarray, text: str) -> np.ndarray:
    """Boolean mask over the model's items allowed by ``theme``; raises if it allows none."""
    allowed = np.ones(len(titles), dtype=bool)
    if theme.category is not None:
        cats = np.asarray([c if c is not None else "" for c in categories], dtype=object)
        if not (cats == theme.category).any():
            known = sorted({str(c) for c in cats if c})
            shown = ("known: " + ", ".join(repr(c) for c in known[:10])) if known else "no product has a category"
            raise ConfigError(f"theme {text!r}: unknown category {theme.category!r}; {shown}")
        allowed &= cats == theme.category
    if theme.keyword is not None:
        word = theme.keyword.casefold()
        allowed &= np.asarray([t is not None and word in str(t).casefold() for t in titles], dtype=bool)
    if theme.max_price is not None:
        with np.errstate(invalid="ignore"):
            allowed &= np.asarray(prices, dtype=np.float64) <= theme.max_price  # unknown prices never pass
    if not allowed.any():
        raise ConfigError(f"theme {text!r} matches no product of the model")
    return allowed


def _ids(store: Store, sql: str, params: list | None = None) -> list[str]:
    # Column-wise fetch: no per-row tuples, so a large segment costs only its id strings.
    col = store.con.execute(sql, params or []).fetchnumpy()["user_id"]
    return [str(x) for x in col.tolist()]


def segment_customers(store: Store, seg: Segment, now: datetime | None) -> list[str]:
    """Sorted customer ids of the segment (possibly empty); raises on unknown ids / countries.
    ``now`` is the reference time ``recent:N`` counts back from (``None``: no timestamps)."""
    con = store.con
    if seg.kind == "all":
        return _ids(store, "SELECT user_id FROM users ORDER BY user_id")
    if seg.kind == "ids":
        ids = _ids(store, "SELECT user_id FROM users WHERE user_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY user_id",
                   [list(seg.ids)])
        missing = sorted(set(seg.ids) - set(ids))
        if missing:
            raise ConfigError(f"segment {seg.text!r}: unknown customer id(s) {', '.join(missing[:10])}")
        return ids
    if seg.kind == "country":
        ids = _ids(store, "SELECT user_id FROM users WHERE country = ? ORDER BY user_id", [seg.country])
        if not ids:
            known = [r[0] for r in con.execute(
                "SELECT DISTINCT country FROM users WHERE country IS NOT NULL ORDER BY 1 LIMIT 10").fetchall()]
            raise ConfigError(f"segment {seg.text!r}: no customer has country {seg.country!r}; "
                              f"known: {', '.join(known) or 'none (the store has no countries)'}")
        return ids
    if seg.kind == "recent":
        if now is None:
            raise ConfigError(f"segment {seg.text!r}: the store's events have no timestamps")
        return _ids(store,
                    "SELECT user_id FROM events WHERE event_type = 'purchase' AND ts <= ? GROUP BY user_id "
                    "HAVING max(ts) >= ?::TIMESTAMP - to_days(?) ORDER BY user_id",
                    [now, now, int(seg.days or 0)])
    return _ids(store,
                "SELECT e.user_id AS user_id FROM events e LEFT JOIN items i ON i.item_id = e.item_id "
                "WHERE e.event_type = 'purchase' GROUP BY e.user_id "
                "HAVING coalesce(sum(coalesce(e.quantity, 1) * coalesce(e.price, i.price)), 0) BETWEEN ? AND ? "
                "ORDER BY e.user_id",
                [seg.low, seg.high])


def recent_purchases(store: Store, customers: list[str], days: int, now: datetime | None) -> dict[str, list[str]]:
    """Products each customer bought within ``days`` before the reference time ``now`` (0 days or
    no timestamps: none)."""
    if days <= 0 or not customers or now is None:
        return {}
    rows = store.con.execute(
        "SELECT user_id, item_id FROM events WHERE event_type = 'purchase' "
        "AND ts <= ? AND ts >= ?::TIMESTAMP - to_days(?) "
        "AND user_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1, 2 ORDER BY 1, 2",
        [now, now, int(days), customers],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for u, i in rows:
        out.setdefault(str(u), []).append(str(i))
    return out
