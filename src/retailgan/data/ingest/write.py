"""Validation and writing: refuse mostly-bad files, dedupe, then write everything in one transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import duckdb

from retailgan.data.ingest.formats import _RULES
from retailgan.data.ingest.prepare import _Prepared
from retailgan.data.ingest.report import Counts, IngestOptions, IngestReport
from retailgan.data.ingest.sources import _Spec
from retailgan.data.ingest.sql import _BAD_CELL, _lit, _q
from retailgan.data.reftime import FUTURE_SLACK
from retailgan.data.store import Store, fetch1
from retailgan.errors import IngestError

log = logging.getLogger(__name__)


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Log how long a step took (INFO; ``retailgan -v`` shows it)."""
    t = time.perf_counter()
    yield
    log.info("ingest: %s: %.2f s", what, time.perf_counter() - t)


@contextmanager
def _session(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Connection settings for one ingest; temp objects are dropped afterwards."""
    old = fetch1(con.execute("SELECT current_setting('preserve_insertion_order')"))
    # No step relies on implicit order (lines are explicit columns), and without it DuckDB
    # parallelises and streams with less memory. Reading CSV/JSON switches it on (see _read).
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        try:
            con.execute(f"SET preserve_insertion_order = {str(bool(old and old[0])).lower()}")
            for (name, kind) in con.execute(
                "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE temporary "
                "UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() WHERE temporary "
                "AND NOT internal"
            ).fetchall():
                if name.startswith("_"):
                    con.execute(f"DROP {kind} IF EXISTS temp.{_q(name)}")
        except duckdb.Error:  # the connection may be unusable after a failed commit
            pass


def _refuse_if_mostly_bad(con: duckdb.DuckDBPyConnection, prep: _Prepared) -> None:
    """Refuse the file when more than half of its rows have a missing or unparsable value.

    A few bad cells are bad rows: they go to ``rejects`` like any other (reason
    ``invalid_value:<column>`` / ``missing_value:<column>``). A column that is mostly bad is a
    wrong mapping, format or ``timestamp_format``, not bad rows: the error names the first one.
    """
    n_bad = int(fetch1(con.execute(  # type: ignore[index]
        f"SELECT count(*) FROM {prep.stage} WHERE {_BAD_CELL}"))[0])
    if n_bad * 2 <= prep.rows_in:
        return
    line, bad = fetch1(con.execute(  # type: ignore[misc]
        f"SELECT _line, _reason FROM {prep.stage} WHERE {_BAD_CELL} ORDER BY _line LIMIT 1"
    ))
    col = str(bad).split(":", 1)[1]
    value = fetch1(con.execute(
        f"SELECT CAST({_q(col)} AS VARCHAR) FROM {prep.source.name} WHERE _line = ?", [line]
    ))
    shown = value[0] if value else None
    typed = prep.checks.get(col)
    expected = typed.expected if typed is not None else "a value"
    if shown is None or not str(shown).strip():
        msg = f"empty value, expected {expected}"
    else:
        msg = f"{shown!r} is not {expected}"
    if n_bad > 1:
        msg += (f" ({n_bad:,} of {prep.rows_in:,} rows have wrong or missing values, too many to "
                "reject row by row; this is the first)")
    if not prep.source.exact_lines:
        msg += " [line counted in records: the file has blank lines or quoted line breaks]"
    raise IngestError(msg, path=prep.source.path, line=int(line), column=col)


def _write(
    store: Store,
    prep: _Prepared,
    fmt: str,
    spec: _Spec,
    opts: IngestOptions,
    before: Counts,
    base: dict[str, Any],
    t0: float,
) -> IngestReport:
    """Dedupe, then write rejects, events, items, users and the report in one transaction."""
    con = store.con
    con.execute("SET preserve_insertion_order = false")
    stage, order = prep.stage, prep.order
    # A day of slack: a shop's local "today" is within it in every time zone.
    latest = datetime.now(timezone.utc).replace(tzinfo=None) + FUTURE_SLACK
    con.execute(f"UPDATE {stage} SET _reason = 'future_timestamp' WHERE _reason IS NULL AND ts > ?", [latest])
    # Same content as an earlier kept row of this file -> 'duplicate' (keeps the first).
    t_dedupe = time.perf_counter()
    con.execute(f"""
        UPDATE {stage} SET _reason = 'duplicate'
        FROM (SELECT _k, min({order}) AS first FROM {stage} WHERE _reason IS NULL
              GROUP BY _k HAVING count(*) > 1) d
        WHERE {stage}._k = d._k AND {stage}._reason IS NULL AND {stage}.{order} > d.first
    """)
    rules = _RULES[fmt]
    rejected = {r: 0 for r in rules}
    for reason, n in con.execute(
        f"SELECT _reason, count(*) FROM {stage} WHERE _reason IS NOT NULL GROUP BY 1 ORDER BY 1"
    ).fetchall():
        rejected[str(reason)] = int(n)
    rows_rejected = sum(rejected.values())
    rows_kept = prep.rows_in - rows_rejected
    log.info("ingest: dedupe: %.2f s", time.perf_counter() - t_dedupe)
    with _step("items and users"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE _items_new AS {prep.items_sql()}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _users_new AS {prep.users_sql()}")
    source = base["source"]
    notes = list(prep.notes)
    if not prep.source.exact_lines:
        notes.append("line numbers count data records: the file has blank lines or quoted line "
                     "breaks, so they may differ from physical lines")

    t_write = time.perf_counter()
    with store.transaction():
        row = fetch1(con.execute("SELECT coalesce(max(ingest_id), 0) + 1 FROM ingests"))
        ingest_id = int(row[0])  # type: ignore[index]
        join = f"JOIN {prep.source.name} r ON r._line = s._line" if prep.raw_join else ""
        if rows_rejected:  # else the join would still read every source line (53 s at 200M)
            con.execute(f"""
                INSERT INTO rejects
                SELECT {ingest_id}, {_lit(source)}, s._line, s._reason, {prep.raw_sql}
                FROM {stage} s {join} WHERE s._reason IS NOT NULL
            """)
        log.info("ingest: write rejects: %.2f s", time.perf_counter() - t_write)
        t_events = time.perf_counter()
        new_events = _insert_events(con, stage, ingest_id, store_empty=before.events == 0)
        log.info("ingest: write events: %.2f s", time.perf_counter() - t_events)
        updated_items = _rowcount(con.execute("""
            UPDATE items SET title = coalesce(items.title, n.title),
                             category = coalesce(items.category, n.category),
                             price = coalesce(items.price, n.price)
            FROM _items_new n
            WHERE items.item_id = n.item_id
              AND ((items.title IS NULL AND n.title IS NOT NULL)
                   OR (items.category IS NULL AND n.category IS NOT NULL)
                   OR (items.price IS NULL AND n.price IS NOT NULL))
        """))
        new_items = _rowcount(con.execute("""
            INSERT INTO items SELECT n.item_id, n.title, n.category, n.price FROM _items_new n
            WHERE n.item_id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = n.item_id)
        """))
        con.execute("""
            UPDATE users SET country = n.country FROM _users_new n
            WHERE users.user_id = n.user_id AND users.country IS NULL AND n.country IS NOT NULL
        """)
        new_users = _rowcount(con.execute("""
            INSERT INTO users SELECT n.user_id, n.country FROM _users_new n
            WHERE n.user_id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = n.user_id)
        """))
        name = opts.dataset_name or prep.dataset_name
        if name:
            con.execute("INSERT INTO meta VALUES ('dataset_name', ?) ON CONFLICT DO NOTHING",
                        [name])
        after = Counts(**store.counts())
        report = IngestReport(
            ingest_id=ingest_id,
            rows_in=prep.rows_in,
            rows_kept=rows_kept,
            rows_rejected=rows_rejected,
            rejected=rejected,
            info=prep.info,
            before=before,
            after=after,
            new_events=new_events,
            already_present=rows_kept - new_events,
            new_users=new_users,
            new_items=new_items,
            updated_items=updated_items,
            notes=notes,
            duration_s=round(time.perf_counter() - t0, 3),
            **base,
        )
        con.execute(
            "INSERT INTO ingests VALUES (?, ?, ?, ?, CAST(? AS TIMESTAMP), ?)",
            [ingest_id, base["source"], fmt, base["sha256"], base["started_at"], report.to_json(None)],
        )
        t_commit = time.perf_counter()
    log.info("ingest: commit: %.2f s", time.perf_counter() - t_commit)
    # The commit is part of the ingest's cost: record the final duration (tiny second write;
    # the data is already committed and consistent either way).
    report = report.model_copy(update={"duration_s": round(time.perf_counter() - t0, 3)})
    con.execute("UPDATE ingests SET report = ? WHERE ingest_id = ?",
                [report.to_json(None), ingest_id])
    return report


def _scalar(cur: duckdb.DuckDBPyConnection) -> Any:
    row = fetch1(cur)
    return None if row is None else row[0]


def _insert_events(
    con: duckdb.DuckDBPyConnection, stage: str, ingest_id: int, *, store_empty: bool
) -> int:
    """Insert the kept rows whose key is not in ``events`` yet; returns how many.

    ``events.event_key`` has no index (see schemas.py): the anti-join is a hash join that
    builds on this file's keys and probes the stored ones, and is skipped for an empty store.
    The rows are written in customer order: each row group's min / max of ``user_id`` (DuckDB's
    zonemaps) then lets a customer's history (the service's ``GET /v1/customers/{id}/history``)
    read the few row groups holding that customer instead of every event (an ART index on
    ``user_id`` was not used by DuckDB 2.0's planner for that query; docs/benchmarks.md 12).
    """
    cols = "user_id, item_id, ts, event_type, quantity, price, rating"
    rows = f"SELECT _k, {cols}, {ingest_id} FROM {stage} s WHERE _reason IS NULL"
    if not store_empty:
        rows += " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_key = s._k)"
    return _rowcount(con.execute(f"INSERT INTO events {rows} ORDER BY user_id, ts"))


def _rowcount(cur: duckdb.DuckDBPyConnection) -> int:
    n = _scalar(cur)
    return int(n) if n is not None else 0
