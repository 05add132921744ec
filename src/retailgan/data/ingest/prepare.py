"""Per-format preparation: each format's rows staged as events with their reject reasons, plus items and users."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from retailgan.data.ingest.formats import (
    _DEFAULT_NAMES,
    CATALOGUE_KEYS,
    MAPPING_KEYS,
    MOVIELENS_GENRES,
    NON_PRODUCT_CODES,
    NON_PRODUCT_PREFIXES,
    ONLINE_RETAIL_COLUMNS,
)
from retailgan.data.ingest.readers import _kind, _read, _require, _Source
from retailgan.data.ingest.report import IngestOptions
from retailgan.data.ingest.sources import _Spec
from retailgan.data.ingest.sql import (
    _EPOCH,
    _EVENT_KEY,
    _checked,
    _exclude,
    _lit,
    _q,
    _raw_json,
    _reason_case,
    _Typed,
    _typed,
)
from retailgan.data.schemas import EVENT_TYPES
from retailgan.data.store import fetch1
from retailgan.errors import ConfigError, IngestError


@dataclass
class _Prepared:
    """A format's staged rows, ready for the common write step.

    ``stage`` (temp table) has: ``_line``, ``_reason`` (NULL = keep; ``invalid_value:<column>``
    or ``missing_value:<column>`` for a cell that did not convert, see ``_BAD_CELL``), ``_k``
    (event key as a number), and user_id, item_id, ts, event_type, quantity, price, rating;
    ``order`` names its unique file-order column (``_line`` unless one line holds several
    events). Nothing else that is per row: at 200M rows each 16-byte column is 3.2 GB that a
    spilled stage writes to disk and reads back in every later step.
    """

    source: _Source
    stage: str
    raw_sql: str
    """SQL expression for ``rejects.raw`` over the stage ``s`` joined with the source ``r``."""
    raw_join: bool
    rows_in: int
    checks: dict[str, _Typed]
    items_sql: Callable[[], str]
    users_sql: Callable[[], str]
    info: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dataset_name: str | None = None
    order: str = "_line"


def _prepare_online_retail(
    con: duckdb.DuckDBPyConnection,
    spec: _Spec,
    mapping: dict[str, str],
    _cat_mapping: Mapping[str, str],
    opts: IngestOptions,
) -> _Prepared:
    """UCI Online Retail invoice lines -> purchase events.

    Rules (first match wins): duplicate (all 8 fields equal to an earlier line's) ->
    cancellation (invoice ``C...``) -> missing_customer -> non_product_code ->
    non_positive_quantity -> non_positive_price -> cancelled_purchase.

    Cancellation matching ("last in, first out"): per (customer, stock code, quantity q), lines
    are ordered by (InvoiceDate, line); each cancellation of -q cancels the latest earlier
    purchase of q that no other cancellation has cancelled; a cancellation with none left
    cancels nothing (it is still dropped as ``cancellation``). Candidates are all non-duplicate
    lines with a customer (a cancelled purchase that another rule drops counts under that rule).
    Computed set-based as bracket matching: running sum of +1 (purchase) / -1 (cancellation)
    clamped at 0 gives each line's stack depth; a cancellation pops the latest purchase that
    left the stack at the depth the cancellation started from (an ASOF join).
    """
    cols = {c: mapping.get(c, c) for c in ONLINE_RETAIL_COLUMNS}
    src = _read(con, spec.main, "_src", opts=opts)
    _require(src, cols)
    inv, code, desc, qty, date, price, cust, country = (cols[c] for c in ONLINE_RETAIL_COLUMNS)
    checks = {
        "quantity": _typed(src, qty, "num"),
        "ts": _typed(src, date, "ts", ts_format=opts.timestamp_format),
        "price": _typed(src, price, "num"),
    }
    items, bad, helpers = _checked(
        [(inv, _typed(src, inv, "text"), "invoice"), (code, _typed(src, code, "text"), "stock"),
         (desc, _typed(src, desc, "text"), "descr"), (qty, checks["quantity"], "quantity"),
         (date, checks["ts"], "ts"), (price, checks["price"], "price"),
         (cust, _typed(src, cust, "id"), "user_id"), (country, _typed(src, country, "text"),
                                                       "country")],
        required={inv, code, qty, date, price},
    )
    raw_cols = ", ".join(_q(c) for c in src.columns)
    prefixes = " OR ".join(f"starts_with(upper(stock), {_lit(p)})" for p in NON_PRODUCT_PREFIXES)
    codes = ", ".join(_lit(c) for c in sorted(NON_PRODUCT_CODES))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _t AS
        SELECT *{_exclude(helpers)}, {bad} AS _bad FROM (
            SELECT _line, {', '.join(items)},
                   -- exact duplicate line: every source field equal to an earlier line's
                   row_number() OVER (PARTITION BY {raw_cols} ORDER BY _line) > 1 AS _dup
            FROM _src)
    """)
    # Description repair: the most frequent non-empty description of the same stock code
    # (ties: the alphabetically first), over all lines of the file.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _desc AS
        SELECT stock, arg_min(descr, (-n, descr)) AS descr FROM (
            SELECT stock, descr, count(*) AS n FROM _t WHERE descr IS NOT NULL GROUP BY ALL
        ) GROUP BY stock
    """)
    n_filled = fetch1(con.execute("""
        UPDATE _t SET descr = d.descr FROM _desc d
        WHERE _t.descr IS NULL AND _t.stock = d.stock
    """))
    # Cancellation matching (see docstring).
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cx AS
        WITH ev AS (
            SELECT _line, user_id, stock, abs(quantity) AS q, ts,
                   CASE WHEN starts_with(invoice, 'C') THEN -1 ELSE 1 END AS step
            FROM _t
            WHERE NOT _dup AND _bad IS NULL AND user_id IS NOT NULL
              AND ((starts_with(invoice, 'C') AND quantity < 0)
                   OR (NOT starts_with(invoice, 'C') AND quantity > 0))
        ),
        s AS (
            SELECT *, sum(step) OVER w AS run,
                   row_number() OVER w AS pos
            FROM ev WINDOW w AS (PARTITION BY user_id, stock, q ORDER BY ts, _line
                                 ROWS UNBOUNDED PRECEDING)
        ),
        m AS (
            SELECT *, least(0, min(run) OVER w) AS low
            FROM s WINDOW w AS (PARTITION BY user_id, stock, q ORDER BY pos
                                ROWS UNBOUNDED PRECEDING)
        ),
        d AS (
            SELECT *, run - low AS depth,
                   coalesce(lag(low) OVER (PARTITION BY user_id, stock, q ORDER BY pos), 0)
                       AS low_before
            FROM m
        )
        SELECT p._line AS purchase_line, c._line AS cancel_line
        FROM (SELECT * FROM d WHERE step = -1 AND low = low_before) c
        ASOF JOIN (SELECT * FROM d WHERE step = 1) p
          ON c.user_id = p.user_id AND c.stock = p.stock AND c.q = p.q
         AND p.depth = c.depth + 1 AND c.pos > p.pos
    """)
    reason = _reason_case([
        ("duplicate", "_dup"),
        ("cancellation", "starts_with(invoice, 'C')"),
        ("missing_customer", "user_id IS NULL"),
        ("non_product_code", f"upper(stock) IN ({codes}) OR {prefixes}"),
        ("non_positive_quantity", "quantity <= 0"),
        ("non_positive_price", "price <= 0"),
        ("cancelled_purchase", "_line IN (SELECT purchase_line FROM _cx)"),
    ])
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _stage AS
        SELECT * EXCLUDE (_disc), {_EVENT_KEY} AS _k FROM (
            SELECT _line,
                   coalesce(_bad, {reason}) AS _reason,
                   user_id, stock AS item_id, ts, 'purchase' AS event_type, quantity, price,
                   CAST(NULL AS DOUBLE) AS rating, invoice AS _disc, descr, country
            FROM _t)
    """)
    info = {
        "description_filled": int(n_filled[0]) if n_filled else 0,
        "cancellations_matched": int(fetch1(con.execute("SELECT count(*) FROM _cx"))[0]),  # type: ignore[index]
    }

    def items_sql() -> str:
        return """
            SELECT item_id, arg_min(descr, (-n, descr)) AS title, CAST(NULL AS VARCHAR) AS category,
                   any_value(med) AS price
            FROM (SELECT item_id, descr, count(*) OVER (PARTITION BY item_id, descr) AS n,
                         median(price) OVER (PARTITION BY item_id) AS med
                  FROM _stage WHERE _reason IS NULL)
            GROUP BY item_id
        """

    def users_sql() -> str:
        return """
            SELECT user_id, arg_min(country, (-n, country)) AS country
            FROM (SELECT user_id, country, count(*) AS n FROM _stage
                  WHERE _reason IS NULL GROUP BY ALL)
            GROUP BY user_id
        """

    return _Prepared(
        source=src, stage="_stage", raw_sql=_raw_json(src), raw_join=True, rows_in=src.rows,
        checks={qty: checks["quantity"], date: checks["ts"], price: checks["price"]},
        items_sql=items_sql, users_sql=users_sql, info=info, dataset_name="online-retail",
    )


def _catalogue_table(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    cat_mapping: Mapping[str, str],
    opts: IngestOptions,
    *,
    item_default: str | None = None,
) -> None:
    """Read a generic product catalogue into temp table ``_cat(item_id, title, category, price)``."""
    src = _read(con, path, "_catsrc", opts=opts)
    cols: dict[str, str] = {}
    for key in CATALOGUE_KEYS:
        if key in cat_mapping:
            cols[key] = cat_mapping[key]
        else:
            names = (*_DEFAULT_NAMES.get(key, (key,)), *((item_default,) if key == "item" and item_default else ()))
            found = next((n for n in names if n in src.types), None)
            if found is not None:
                cols[key] = found
    if "item" not in cols:
        cols["item"] = cat_mapping.get("item", "item")
    _require(src, cols, what="catalogue column")
    price = _typed(src, cols["price"], "num") if "price" in cols else None
    if price is not None:
        bad = fetch1(con.execute(
            f"SELECT _line, {_q(cols['price'])} FROM _catsrc WHERE {price.present} "
            f"AND ({price.value}) IS NULL ORDER BY _line LIMIT 1"
        ))
        if bad is not None:
            raise IngestError(f"{bad[1]!r} is not a number", path=path,
                              line=int(bad[0]), column=cols["price"])
    title = _typed(src, cols["title"], "text").value if "title" in cols else "NULL"
    category = _typed(src, cols["category"], "text").value if "category" in cols else "NULL"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cat AS
        SELECT item_id, first(title ORDER BY _line) AS title,
               first(category ORDER BY _line) AS category, first(price ORDER BY _line) AS price
        FROM (SELECT _line, {_typed(src, cols['item'], 'id').value} AS item_id,
                     CAST({title} AS VARCHAR) AS title, CAST({category} AS VARCHAR) AS category,
                     CAST({price.value if price else 'NULL'} AS DOUBLE) AS price FROM _catsrc)
        WHERE item_id IS NOT NULL GROUP BY item_id
    """)


def _items_with_catalogue(has_cat: bool, price_from_events: bool) -> str:
    ev_price = "median(price)" if price_from_events else "CAST(NULL AS DOUBLE)"
    events = f"SELECT item_id, {ev_price} AS price FROM _stage WHERE _reason IS NULL GROUP BY item_id"
    if not has_cat:
        return (f"SELECT item_id, CAST(NULL AS VARCHAR) AS title, CAST(NULL AS VARCHAR) AS category, "
                f"price FROM ({events})")
    return f"""
        SELECT coalesce(c.item_id, e.item_id) AS item_id, c.title, c.category,
               coalesce(c.price, e.price) AS price
        FROM _cat c FULL OUTER JOIN ({events}) e ON c.item_id = e.item_id
    """


_USERS_PLAIN = ("SELECT DISTINCT user_id, CAST(NULL AS VARCHAR) AS country FROM _stage "
                "WHERE _reason IS NULL")


def _simple_stage(
    con: duckdb.DuckDBPyConnection,
    src: _Source,
    *,
    user: str,
    item: str,
    event_type: str,
    typed: dict[str, tuple[str, _Typed]],
    reasons: list[tuple[str, str]],
    required: frozenset[str] | set[str] = frozenset(),
    disc: str = "CAST(NULL AS VARCHAR)",
) -> None:
    """Build ``_stage`` for one-row-per-event sources.

    ``typed``: store field (ts, quantity, price, rating) -> (source column, conversion); the
    fields not given are NULL.
    """
    items, bad, helpers = _checked([(c, t, f) for f, (c, t) in typed.items()], required)
    nulls = {"ts": "TIMESTAMP", "quantity": "DOUBLE", "price": "DOUBLE", "rating": "DOUBLE"}
    items += [f"CAST(NULL AS {t}) AS {f}" for f, t in nulls.items() if f not in typed]
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _stage AS
        SELECT * EXCLUDE (_disc), {_EVENT_KEY} AS _k FROM (
            SELECT _line,
                   coalesce(_bad, {_reason_case(reasons)}) AS _reason,
                   user_id, item_id, ts, event_type, quantity, price, rating, _disc
            FROM (
                SELECT *{_exclude(helpers)}, {bad} AS _bad FROM (
                    SELECT _line, {user} AS user_id, {item} AS item_id,
                           {event_type} AS event_type, {disc} AS _disc, {', '.join(items)}
                    FROM {src.name})))
    """)


def _prepare_movielens(
    con: duckdb.DuckDBPyConnection,
    spec: _Spec,
    _mapping: dict[str, str],
    cat_mapping: Mapping[str, str],
    opts: IngestOptions,
) -> _Prepared:
    """MovieLens 100K ``u.data`` (tab-separated user, item, rating, unix time) -> rating events.

    Catalogue from ``u.item`` (latin-1, ``|``-separated): title, and category = the first genre
    flag set (in ``u.genre`` order; none or only "unknown" -> NULL); price NULL.
    """
    cols = ["user_id", "item_id", "rating", "timestamp"]
    src = _read(con, spec.main, "_src", opts=opts, header=False, columns=cols, delimiter="\t")
    checks = {"rating": _typed(src, "rating", "num"), "timestamp": _typed(src, "timestamp", "unix")}
    _simple_stage(
        con, src,
        user=_typed(src, "user_id", "id").value, item=_typed(src, "item_id", "id").value,
        event_type="'rating'", required={"timestamp"},
        typed={"ts": ("timestamp", checks["timestamp"]), "rating": ("rating", checks["rating"])},
        reasons=[("missing_user", "user_id IS NULL"), ("missing_item", "item_id IS NULL"),
                 ("missing_rating", "rating IS NULL")],
    )
    has_cat = spec.catalogue is not None
    if has_cat:
        assert spec.catalogue is not None
        if cat_mapping or _kind(spec.catalogue)[0] != "csv" or spec.catalogue.name != "u.item":
            _catalogue_table(con, spec.catalogue, cat_mapping, opts)
        else:
            names = ["movie_id", "title", "release_date", "video_release_date", "imdb_url",
                     *[f"g{i}" for i in range(len(MOVIELENS_GENRES))]]
            _read(con, spec.catalogue, "_catsrc", opts=opts, header=False, columns=names,
                  delimiter="|", quote="", encoding="latin-1")
            genre = "CASE " + " ".join(
                f"WHEN g{i} = '1' THEN {_lit(g)}" for i, g in enumerate(MOVIELENS_GENRES) if i
            ) + " END"
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _cat AS
                SELECT trim(movie_id) AS item_id, NULLIF(trim(title), '') AS title,
                       {genre} AS category, CAST(NULL AS DOUBLE) AS price
                FROM _catsrc WHERE NULLIF(trim(movie_id), '') IS NOT NULL
            """)
    return _Prepared(
        source=src, stage="_stage", raw_sql=_raw_json(src), raw_join=True, rows_in=src.rows,
        checks=checks, items_sql=lambda: _items_with_catalogue(has_cat, False),
        users_sql=lambda: _USERS_PLAIN, dataset_name="movielens-100k",
    )


def _prepare_rechorus(
    con: duckdb.DuckDBPyConnection,
    spec: _Spec,
    _mapping: dict[str, str],
    cat_mapping: Mapping[str, str],
    opts: IngestOptions,
) -> _Prepared:
    """ReChorus ``train.csv(.gz)`` (tab-separated ``user_id item_id time``, unix seconds) ->
    purchase events (Amazon reviews: the reviewer bought the product).

    Catalogue ``item_meta.csv(.gz)``: category = ``i_category`` (0 = none -> NULL); no titles.
    """
    src = _read(con, spec.main, "_src", opts=opts, delimiter=opts.delimiter or "\t")
    _require(src, {"user": "user_id", "item": "item_id", "time": "time"})
    checks = {"time": _typed(src, "time", "unix")}
    _simple_stage(
        con, src,
        user=_typed(src, "user_id", "id").value, item=_typed(src, "item_id", "id").value,
        event_type="'purchase'", typed={"ts": ("time", checks["time"])},
        reasons=[("missing_user", "user_id IS NULL"), ("missing_item", "item_id IS NULL"),
                 ("missing_timestamp", "ts IS NULL")],
    )
    has_cat = spec.catalogue is not None
    if has_cat:
        assert spec.catalogue is not None
        if cat_mapping:
            _catalogue_table(con, spec.catalogue, cat_mapping, opts)
        else:
            meta = _read(con, spec.catalogue, "_catsrc", opts=opts,
                         delimiter=opts.delimiter or "\t")
            _require(meta, {"item": "item_id", "category": "i_category"})
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _cat AS
                SELECT {_typed(meta, 'item_id', 'id').value} AS item_id,
                       CAST(NULL AS VARCHAR) AS title,
                       NULLIF(NULLIF(trim(i_category), ''), '0') AS category,
                       CAST(NULL AS DOUBLE) AS price
                FROM _catsrc WHERE NULLIF(trim(item_id), '') IS NOT NULL
            """)
    return _Prepared(
        source=src, stage="_stage", raw_sql=_raw_json(src), raw_join=True, rows_in=src.rows,
        checks=checks, items_sql=lambda: _items_with_catalogue(has_cat, False),
        users_sql=lambda: _USERS_PLAIN, dataset_name=spec.main.parent.name or "rechorus",
    )


def _prepare_s3rec(
    con: duckdb.DuckDBPyConnection,
    spec: _Spec,
    _mapping: dict[str, str],
    cat_mapping: Mapping[str, str],
    opts: IngestOptions,
) -> _Prepared:
    """S3-Rec sequences (``user item_1 ... item_n`` per line, chronological) -> purchase events.

    The files carry no time: ``ts`` = 1970-01-01 00:00:00 + position seconds (1, 2, ...), so the
    order within a user is kept but timestamps are NOT comparable across users (a global
    temporal split is meaningless on this format; split per user). ``rows_in`` counts
    interactions; ``rejects.line`` is the user's line. Catalogue: category = the first attribute
    id of ``<Name>_item2attributes.json``.
    """
    src = _read(con, spec.main, "_src", opts=opts, header=False, columns=["sequence"],
                delimiter="\t", quote="")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _stage AS
        SELECT * EXCLUDE (_disc), {_EVENT_KEY} AS _k FROM (
            SELECT _line, row_number() OVER (ORDER BY _line, pos) AS _ord,
                   CAST(NULL AS VARCHAR) AS _reason,
                   toks[1] AS user_id, item_id, {_EPOCH} + to_seconds(pos) AS ts,
                   'purchase' AS event_type, CAST(NULL AS DOUBLE) AS quantity,
                   CAST(NULL AS DOUBLE) AS price, CAST(NULL AS DOUBLE) AS rating,
                   CAST(NULL AS VARCHAR) AS _disc, pos
            FROM (SELECT _line, toks, unnest(toks[2:]) AS item_id,
                         unnest(range(1, len(toks))) AS pos
                  FROM (SELECT _line, string_split(regexp_replace(trim(sequence), '\\s+', ' ', 'g'),
                                                   ' ') AS toks FROM _src)))
    """)
    rows_in = int(fetch1(con.execute("SELECT count(*) FROM _stage"))[0])  # type: ignore[index]
    if rows_in == 0:
        raise IngestError("no interactions (every line has a user id only)", path=spec.main)
    has_cat = spec.catalogue is not None
    if has_cat:
        assert spec.catalogue is not None
        if spec.catalogue.suffix.lower() == ".json" and not cat_mapping:
            try:
                attrs = json.loads(spec.catalogue.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise IngestError(f"not a JSON object of item -> attribute ids ({exc})",
                                  path=spec.catalogue) from exc
            if not isinstance(attrs, dict):
                raise IngestError("expected a JSON object of item -> attribute ids",
                                  path=spec.catalogue)
            import pyarrow as pa

            first = [str(v[0]) if isinstance(v, list) and v else None for v in attrs.values()]
            _cat_arrow = pa.table({"item_id": [str(k).strip() for k in attrs], "category": first})
            con.register("_cat_arrow", _cat_arrow)
            try:
                con.execute("""
                    CREATE OR REPLACE TEMP TABLE _cat AS
                    SELECT item_id, CAST(NULL AS VARCHAR) AS title, category,
                           CAST(NULL AS DOUBLE) AS price FROM _cat_arrow
                """)
            finally:
                con.unregister("_cat_arrow")
        else:
            _catalogue_table(con, spec.catalogue, cat_mapping, opts)
    stem = re.sub(r"\.txt(\.gz)?$", "", spec.main.name).lower()
    return _Prepared(
        source=src, stage="_stage",
        raw_sql="CAST(json_object('user_id', s.user_id, 'item_id', s.item_id, 'position', s.pos) "
        "AS VARCHAR)",
        raw_join=False, rows_in=rows_in, checks={}, order="_ord",
        items_sql=lambda: _items_with_catalogue(has_cat, False), users_sql=lambda: _USERS_PLAIN,
        info={"sequences": src.rows}, dataset_name=f"amazon-s3rec-{stem}",
        notes=["no timestamps in this format: ts = 1970-01-01 + position in the user's sequence "
               "(seconds); not comparable across users"],
    )


def _prepare_events(
    con: duckdb.DuckDBPyConnection,
    spec: _Spec,
    mapping: dict[str, str],
    cat_mapping: Mapping[str, str],
    opts: IngestOptions,
) -> _Prepared:
    """A generic event log with a column mapping (see :data:`MAPPING_KEYS`).

    Timestamps: ISO 8601 text (an offset converts to UTC), unix seconds (text or numbers),
    Parquet TIMESTAMP/DATE, or ``options.timestamp_format``. Event types are trimmed,
    lower-cased, passed through ``options.event_type_aliases`` and must be one of
    :data:`~retailgan.data.schemas.EVENT_TYPES`. Exact duplicates (same content in all mapped
    fields) are dropped as ``duplicate``.
    """
    src = _read(con, spec.main, "_src", opts=opts)
    cols = dict(mapping)
    for key in MAPPING_KEYS:
        if key not in cols:
            found = next((n for n in _DEFAULT_NAMES[key] if n in src.types), None)
            if found is not None:
                cols[key] = found
    for key in ("user", "item"):
        if key not in cols:
            raise IngestError(
                f"no {key} column: name it with --{key}-col COLUMN (in Python: mapping={{'{key}': 'COLUMN'}}); "
                f"the file has: {', '.join(src.columns)}",
                path=spec.main,
            )
    _require(src, cols)
    checks: dict[str, _Typed] = {}
    for key, kind in (("timestamp", "ts"), ("quantity", "num"), ("price", "num"),
                      ("rating", "num")):
        if key in cols:
            checks[cols[key]] = _typed(src, cols[key], kind, ts_format=opts.timestamp_format)

    default_type = opts.default_event_type or ("rating" if "rating" in cols else "purchase")
    if default_type not in EVENT_TYPES:
        raise ConfigError(f"default_event_type {default_type!r} is not one of {EVENT_TYPES}")
    for a, b in opts.event_type_aliases.items():
        if b not in EVENT_TYPES:
            raise ConfigError(f"event_type_aliases maps {a!r} to {b!r}, not one of {EVENT_TYPES}")
    if "event_type" in cols:
        et = f"lower({_typed(src, cols['event_type'], 'text').value})"
        if opts.event_type_aliases:
            et = ("CASE " + " ".join(
                f"WHEN {et} = {_lit(a.strip().lower())} THEN {_lit(b)}"
                for a, b in opts.event_type_aliases.items()) + f" ELSE {et} END")
    else:
        et = _lit(default_type)
    known = ", ".join(_lit(t) for t in EVENT_TYPES)
    reasons = [("missing_user", "user_id IS NULL"), ("missing_item", "item_id IS NULL")]
    if "timestamp" in cols:
        reasons.append(("missing_timestamp", "ts IS NULL"))
    reasons += [
        ("unknown_event_type", f"event_type IS NULL OR event_type NOT IN ({known})"),
        ("missing_rating", "event_type = 'rating' AND rating IS NULL"),
        ("non_positive_quantity", "quantity <= 0"),
        ("negative_price", "price < 0"),
    ]
    disc = (_typed(src, cols["event_id"], "text").value if "event_id" in cols
            else "CAST(NULL AS VARCHAR)")
    _simple_stage(
        con, src,
        user=_typed(src, cols["user"], "id").value, item=_typed(src, cols["item"], "id").value,
        event_type=et, reasons=reasons, disc=disc,
        typed={("ts" if k == "timestamp" else k): (cols[k], checks[cols[k]])
               for k in ("timestamp", "quantity", "price", "rating") if k in cols},
    )
    has_cat = spec.catalogue is not None
    if has_cat:
        assert spec.catalogue is not None
        _catalogue_table(con, spec.catalogue, cat_mapping, opts, item_default=cols["item"])
    name = re.sub(r"(\.[A-Za-z0-9]+)+$", "", spec.main.name) or "events"
    return _Prepared(
        source=src, stage="_stage", raw_sql=_raw_json(src), raw_join=True, rows_in=src.rows,
        checks=checks, items_sql=lambda: _items_with_catalogue(has_cat, "price" in cols),
        users_sql=lambda: _USERS_PLAIN, dataset_name=name,
    )


_PREPARE: dict[str, Callable[..., _Prepared]] = {
    "online-retail": _prepare_online_retail,
    "movielens-100k": _prepare_movielens,
    "amazon-s3rec": _prepare_s3rec,
    "rechorus": _prepare_rechorus,
    "events": _prepare_events,
}
