"""SQL building blocks of ingest: literals, typed conversions of source columns, reject reasons, the event key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retailgan.errors import IngestError

if TYPE_CHECKING:
    from retailgan.data.ingest.readers import _Source

_SEP = "chr(31)"  # unit separator between hashed fields: cannot be confused with field content
_EPOCH = "TIMESTAMP '1970-01-01 00:00:00'"


def _lit(s: str) -> str:
    """SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def _q(name: str) -> str:
    """SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# -- typed SQL expressions ------------------------------------------------------------------------

_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
                      r"UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL.*)$")
_INTEGER = re.compile(r"^U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)$")
_TZ_SUFFIX = r"[0-9]:[0-9]{2}(:[0-9]{2}(\.[0-9]*)?)?\s*([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"


@dataclass(frozen=True)
class _Typed:
    """SQL for one source column converted to a store type."""

    value: str
    """Expression for the converted value (NULL when empty or unparsable)."""
    present: str | None
    """Expression true when the source cell is non-empty (None: cannot be unparsable)."""
    expected: str
    """What a valid value looks like, for error messages."""


def _text(col: str) -> str:
    return f"NULLIF(trim({_q(col)}), '')"


def _unix(x: str) -> str:
    # Guard against milliseconds and garbage: |t| < 1e11 s covers years 1970 +- 3000.
    return (f"CASE WHEN isfinite({x}) AND abs({x}) < 1e11 "
            f"THEN make_timestamp(CAST(round({x} * 1e6) AS BIGINT)) END")


def _typed(src: _Source, col: str, kind: str, *, ts_format: str | None = None) -> _Typed:
    """Convert column ``col`` of ``src`` to kind id | text | num | ts | unix."""
    t = src.types[col].upper()
    c = _q(col)
    if t == "VARCHAR":
        v = _text(col)
        if kind == "text":
            return _Typed(v, None, "text")
        if kind == "id":
            # Ids written as floats (17850.0) are the same id as 17850.
            return _Typed(
                f"CASE WHEN contains({v}, '.') AND regexp_full_match({v}, '-?[0-9]+\\.0+') "
                f"THEN split_part({v}, '.', 1) ELSE {v} END",
                None,
                "an id",
            )
        if kind == "num":
            d = f"TRY_CAST({v} AS DOUBLE)"
            return _Typed(f"CASE WHEN isfinite({d}) THEN {d} END", f"({v} IS NOT NULL)",
                          "a number")
        if kind == "unix":
            return _Typed(_unix(f"TRY_CAST({v} AS DOUBLE)"), f"({v} IS NOT NULL)",
                          "unix seconds")
        if kind == "ts":
            if ts_format:
                return _Typed(f"TRY_STRPTIME({v}, {_lit(ts_format)})", f"({v} IS NOT NULL)",
                              f"a timestamp in the format {ts_format!r}")
            expr = (
                f"CASE WHEN regexp_full_match({v}, '[+-]?[0-9]+(\\.[0-9]*)?') "
                f"THEN {_unix(f'TRY_CAST({v} AS DOUBLE)')} "
                f"WHEN regexp_matches({v}, {_lit(_TZ_SUFFIX)}) "
                f"THEN CAST(TRY_CAST({v} AS TIMESTAMPTZ) AS TIMESTAMP) "
                f"ELSE TRY_CAST({v} AS TIMESTAMP) END"
            )
            return _Typed(expr, f"({v} IS NOT NULL)",
                          "an ISO 8601 timestamp or unix seconds")
        raise AssertionError(kind)
    # Typed (Parquet) columns: no parsing needed, but the type must fit.
    if kind == "text":
        return _Typed(f"NULLIF(trim(CAST({c} AS VARCHAR)), '')", None, "text")
    if kind == "id":
        if t in ("FLOAT", "DOUBLE"):
            return _Typed(f"CASE WHEN {c} = trunc({c}) AND abs({c}) < 1e18 "
                          f"THEN CAST(CAST({c} AS BIGINT) AS VARCHAR) "
                          f"ELSE CAST({c} AS VARCHAR) END", None, "an id")
        if _INTEGER.match(t):
            return _Typed(f"CAST({c} AS VARCHAR)", None, "an id")
        return _Typed(f"NULLIF(trim(CAST({c} AS VARCHAR)), '')", None, "an id")
    if kind == "num" and _NUMERIC.match(t):
        return _Typed(f"CASE WHEN isfinite(CAST({c} AS DOUBLE)) THEN CAST({c} AS DOUBLE) END",
                      f"({c} IS NOT NULL)", "a finite number")
    if kind in ("ts", "unix"):
        if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
            return _Typed(f"CAST({c} AS TIMESTAMP)", None, "a timestamp")
        if t.startswith("TIMESTAMP") or t == "DATE":
            return _Typed(f"CAST({c} AS TIMESTAMP)", None, "a timestamp")
        if _NUMERIC.match(t):
            return _Typed(_unix(f"CAST({c} AS DOUBLE)"), f"({c} IS NOT NULL)", "unix seconds")
    want = {"num": "a number", "ts": "a timestamp", "unix": "unix seconds"}[kind]
    raise IngestError(f"column has type {t}, expected {want}", path=src.path, column=col)


def _checked(
    checks: list[tuple[str, _Typed, str]], required: frozenset[str] | set[str] = frozenset()
) -> tuple[list[str], str, list[str]]:
    """SQL for converted values plus a ``_bad`` reject reason.

    ``checks``: (source column, conversion, alias). Returns the select items (value as alias,
    plus a presence flag ``_p_<alias>`` where a non-empty cell can fail to convert), a CASE
    giving ``invalid_value:<column>`` for the first cell that did not convert or
    ``missing_value:<column>`` for the first required-but-empty one (to be evaluated over those
    items), and the helper columns to exclude afterwards.
    """
    items, whens, helpers = [], [], []
    for col, typed, alias in checks:
        items.append(f"{typed.value} AS {alias}")
        if typed.present is not None:
            items.append(f"{typed.present} AS _p_{alias}")
            helpers.append(f"_p_{alias}")
            whens.append(f"WHEN _p_{alias} AND {alias} IS NULL THEN {_lit('invalid_value:' + col)}")
        if col in required:
            whens.append(f"WHEN {alias} IS NULL THEN {_lit('missing_value:' + col)}")
    case = f"CASE {' '.join(whens)} END" if whens else "CAST(NULL AS VARCHAR)"
    return items, case, helpers


# A stage row whose reason came from :func:`_checked` (a cell that did not convert, or a required
# one that is empty), told apart from the formats' rules by the reason's prefix: the stage keeps
# no separate column for it.
_BAD_CELL = "(starts_with(_reason, 'invalid_value:') OR starts_with(_reason, 'missing_value:'))"


def _exclude(helpers: list[str]) -> str:
    return f" EXCLUDE ({', '.join(helpers)})" if helpers else ""


def _key_sql(*fields: str) -> str:
    # concat() reads NULL as '' -- the same payload as concat_ws over coalesce(..., ''), but
    # ~0.8 s cheaper per 20M rows.
    parts = f", {_SEP}, ".join(f"CAST({f} AS VARCHAR)" for f in fields)
    return f"md5_number(concat({parts}))"


# The event key is DuckDB's md5_number: the md5 digest read as a little-endian 128-bit unsigned
# integer (UHUGEINT), stored as such in ``events.event_key``. Grouping, joining and storing a
# 16-byte integer is several times cheaper than a 32-character hex string. In Python:
#   int.from_bytes(hashlib.md5(payload.encode()).digest(), "little")
# with payload = "\x1f".join(user, item, ts, event_type, quantity, price, rating,
# discriminator), each field as DuckDB renders it as VARCHAR ('' for NULL).
# Collisions: for n distinct events the probability that any two share a key is about
# n^2 / 2^129 -- 1e-24 for 1e8 events, 1.5e-21 for 1e9 (50 files of 20M rows): negligible (a
# 64-bit key would give 2% at 1e9). md5 is not collision-resistant against someone crafting
# colliding events on purpose; the key is for dedupe of honest logs, not a security boundary.
_EVENT_KEY = _key_sql("user_id", "item_id", "ts", "event_type", "quantity", "price", "rating",
                      "_disc")


def _raw_json(src: _Source) -> str:
    return "CAST(json_object(" + ", ".join(f"{_lit(c)}, r.{_q(c)}" for c in src.columns) + ") AS VARCHAR)"


def _reason_case(rules: list[tuple[str, str]]) -> str:
    return "CASE " + " ".join(f"WHEN {cond} THEN {_lit(r)}" for r, cond in rules) + " END"
