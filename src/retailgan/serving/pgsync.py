"""Copying the events a service took in PostgreSQL into the DuckDB store (``retailgan events sync``).

With ``serve --events-db`` the events posted to ``POST /v1/events`` live in PostgreSQL
(:mod:`retailgan.serving.pgevents`), while training, ``compare``, batch recommendations,
campaigns, recent sales and ``GET /v1/customers`` read the store. The sync copies every event
the store lacks into its ``events`` table exactly as the one-process service writes it
(``ingest_id`` = :data:`~retailgan.data.reftime.API_INGEST_ID`, ``event_key`` = md5_number of
the JSON list ``["api", customer, event_id]``), adds new customers to ``users``, and records
where it has read up to, all in one DuckDB transaction: a failure leaves the store unchanged.

* **Incremental, never skipping.** The position (highest ``seq`` read and the ``xmin`` of that
  read) is kept in the store's ``events_sync`` table, one row per database, and the next run
  reads with the followers' rule (``seq > last OR xid >= xmin``): an event whose transaction
  drew a lower ``seq`` but committed after the previous run is copied by the next one.
* **Idempotent.** Rows read again are dropped by an anti-join on ``event_key``: a re-run, or the
  same event already written by a one-process service, copies nothing twice.
* **Bounded memory.** The rows are read through one server-side cursor (one snapshot) in pages of
  :data:`PAGE_ROWS`, each written before the next is read, all in the one transaction.
* **Erasures hold.** ``retailgan forget --events-db`` deletes the customers' events from
  PostgreSQL, so nothing brings them back. An erasure recorded in the store's ``erasures``
  table without ``--events-db`` since the last sync leaves their events in PostgreSQL, where the
  sync would find them again: the sync then refuses until ``forget`` has been run with
  ``--events-db`` (the audit record holds no customer ids to filter on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from retailgan.data.reftime import API_INGEST_ID, to_utc
from retailgan.data.store import Store, fetch1
from retailgan.errors import StoreError
from retailgan.serving.pgevents import Position, check_postgres_extra, check_url, read_pages
from retailgan.serving.storage import API_SOURCE

PAGE_ROWS = 50_000
"""Rows read from PostgreSQL and written to the store at a time (memory is bounded by one page)."""
_COLUMNS = "customer_id, event_id, product_id, event_type, ts, quantity, price"

SYNC_DDL = (
    "CREATE TABLE IF NOT EXISTS events_sync (source VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, "
    "xmin VARCHAR NOT NULL, synced_at TIMESTAMP NOT NULL, copied BIGINT NOT NULL)"
)


@dataclass(frozen=True)
class SyncReport:
    source: str
    """The database read (host:port/name, no credentials)."""
    read: int
    """Rows read from PostgreSQL in this run (new ones and ones re-read by the no-skip rule)."""
    copied: int
    """Events written into the store."""
    present: int
    """Rows read that the store already held."""
    new_customers: int
    position: Position

    def summary(self, store: Path) -> str:
        return (f"copied {self.copied} event(s) from {self.source} into {store} ({self.present} already present, "
                f"{self.new_customers} new customer(s)); read up to seq {self.position.seq}")


def source_name(url: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL: the key of its position (never the password)."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _open_store(path: Path) -> Store:
    try:
        return Store.open(path, create=False)
    except StoreError as exc:
        if "in use by another process" not in str(exc):
            raise
        raise StoreError(
            f"{path}: the store is in use by another process (a `retailgan serve` perhaps); `events sync` writes "
            "it, so run it while no service holds the store, e.g. in the nightly job before training "
            "and campaigns, on the store those read"
        ) from None


def _position(con: duckdb.DuckDBPyConnection, source: str) -> tuple[Position, datetime | None]:
    con.execute(SYNC_DDL)
    row = fetch1(con.execute("SELECT seq, xmin, synced_at FROM events_sync WHERE source = ?", [source]))
    return (Position(), None) if row is None else (Position(int(row[0]), str(row[1])), row[2])


def _check_erasures(con: duckdb.DuckDBPyConnection, store: Path, since: datetime | None) -> None:
    """Refuse when an erasure since ``since`` left the customers' events in PostgreSQL."""
    has = fetch1(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'erasures' "
                             "AND database_name = current_database() AND schema_name = 'main'"))
    if not has or not has[0]:
        return
    rows = con.execute("SELECT erased_at, report FROM erasures ORDER BY erased_at").fetchall()
    store_only = [at for at, rep in rows if "events_db_events" not in json.loads(rep).get("store", {})]
    with_db = [at for at, rep in rows if "events_db_events" in json.loads(rep).get("store", {})]
    # The audit record keeps whole seconds: an erasure in the second of the last sync counts as after it.
    start = None if since is None else since.replace(microsecond=0)
    pending = [at for at in store_only if (start is None or at >= start) and not any(w >= at for w in with_db)]
    if pending:
        raise StoreError(
            f"{store}: customers were erased at {pending[-1]:%Y-%m-%d %H:%M} without --events-db, so their events "
            "may still be in PostgreSQL and would come back: run `retailgan forget --store ... --events-db URL "
            "--customer ...` for the same customers, then sync again"
        )


def sync_events(events_db: str, store_path: str | Path, *, page_rows: int = PAGE_ROWS) -> SyncReport:
    """Copy the events of ``events_db`` the store lacks into it, in one transaction (module docstring).

    The rows are read through one server-side cursor, ``page_rows`` at a time, and each page is written
    before the next is read: memory is bounded by the page, and the result is the same for any page size.
    """
    check_postgres_extra()
    check_url(events_db)
    import psycopg

    store_path = Path(store_path)
    source = source_name(events_db)
    with _open_store(store_path) as store:
        pos, synced_at = _position(store.con, source)
        _check_erasures(store.con, store_path, synced_at)
        con = store.con
        try:
            # A plain connection, not PgEventStore: its schema set-up (CREATE INDEX IF NOT EXISTS) waits for
            # every open write transaction, and a database no service has written to has no table yet.
            with psycopg.connect(events_db, connect_timeout=10) as conn, store.transaction():
                users_before = int(fetch1(con.execute("SELECT count(*) FROM users"))[0])
                read = copied = 0
                nxt = pos
                if conn.execute("SELECT to_regclass('retailgan_events')").fetchone()[0] is not None:
                    xmin, pages = read_pages(conn, pos, _COLUMNS, page_rows)
                    seq = pos.seq
                    for rows in pages:
                        copied += _copy_page(con, rows)
                        read += len(rows)
                        seq = max(seq, *(int(r[0]) for r in rows))
                    nxt = Position(seq, xmin)
                new_customers = int(fetch1(con.execute("SELECT count(*) FROM users"))[0]) - users_before
                con.execute(
                    "INSERT OR REPLACE INTO events_sync VALUES (?, ?, ?, ?, "
                    "coalesce((SELECT copied FROM events_sync WHERE source = ?), 0) + ?)",
                    [source, nxt.seq, nxt.xmin, datetime.now(timezone.utc).replace(tzinfo=None), source, copied],
                )
        except psycopg.Error as exc:
            raise StoreError(f"--events-db: cannot read the events ({' '.join(str(exc).split())})") from None
    return SyncReport(source, read, copied, read - copied, new_customers, nxt)


def _copy_page(con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> int:
    """Write one page of rows (``seq`` then :data:`_COLUMNS`) the store lacks; returns how many were new."""
    import pyarrow as pa

    # The payload of the store's key, built as the one-process service builds it (same json.dumps).
    table = pa.table({
        "payload": pa.array([json.dumps([API_SOURCE, r[1], r[2]]) for r in rows], pa.string()),
        "user_id": pa.array([r[1] for r in rows], pa.string()),
        "item_id": pa.array([r[3] for r in rows], pa.string()),
        "ts": pa.array([to_utc(r[5]) for r in rows], pa.timestamp("us")),
        "event_type": pa.array([r[4] for r in rows], pa.string()),
        "quantity": pa.array([r[6] for r in rows], pa.float64()),
        "price": pa.array([r[7] for r in rows], pa.float64()),
    })
    con.register("_pg_events", table)
    try:
        # The anti-join also sees the pages written before in this transaction: an event is copied once.
        copied = int(fetch1(con.execute(
            """
            INSERT INTO events
            SELECT DISTINCT ON (k) k, user_id, item_id, ts, event_type, quantity, price, NULL, ?
            FROM (SELECT md5_number(payload) AS k, * FROM _pg_events) n
            WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.ingest_id = ? AND e.event_key = n.k)
            """,
            [API_INGEST_ID, API_INGEST_ID],
        ))[0])
        con.execute("INSERT INTO users SELECT DISTINCT user_id, NULL FROM _pg_events ON CONFLICT DO NOTHING")
    finally:
        con.unregister("_pg_events")
    return copied
