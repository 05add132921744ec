"""Events and model reloads shared by many service processes and hosts through PostgreSQL.

``retailgan serve --events-db postgresql://...`` writes the events posted to ``POST /v1/events``
into the table ``retailgan_events`` of that database instead of the DuckDB store, and every
process serving from it (``--workers N``, other hosts) folds in the events any of them wrote.
Install with ``pip install 'retailgan[postgres]'`` (psycopg 3 and psycopg_pool).

* **Durable, idempotent writes.** One transaction per request, committed before the 201. The
  event key is the same as the embedded store's (:mod:`retailgan.serving.storage`): md5 of the
  JSON list ``["api", customer, event_id]``; a unique constraint and ``ON CONFLICT DO NOTHING``
  make a retry a no-op on whichever replica it lands.
* **Following the others: LISTEN/NOTIFY, with polling as the safety net.** A write notifies the
  channel ``retailgan_events`` in its transaction (PostgreSQL delivers it at commit); each
  process listens on a connection of its own and reads what is new at once (milliseconds). A
  notification can be missed (the listening connection drops, a process restarts), so the
  follower also reads every ``poll_s`` seconds (default 1): an event reaches every replica within
  ``poll_s`` even when no notification arrives.
* **Never skipping an event.** ``seq`` (a sequence) orders the events, but transactions commit
  in another order than they draw numbers: a reader that saw seq 12 may later see seq 11
  appear. Each row therefore records its transaction id (``xid``), and a read asks for
  ``seq > last OR xid >= xmin``, ``xmin`` being the oldest transaction still running when the
  previous read began: every row that read could not see belongs to such a transaction. Rows
  read twice are harmless (fold-in is a set).
* **Model reloads.** The single row of ``retailgan_model`` holds a generation number and the
  model version last validated. A replica that reloaded successfully bumps it and notifies
  ``retailgan_model``; every other replica reloads its model directory (same path, shared or
  deployed alike), with the same validation, and keeps its old model if the new one is refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from retailgan.errors import ConfigError, StoreError, extra_needed
from retailgan.serving.storage import NewEvent, api_event_key

log = logging.getLogger("retailgan.serving")

EVENTS_CHANNEL = "retailgan_events"
MODEL_CHANNEL = "retailgan_model"
XID_MAX = "18446744073709551615"
"""The largest xid8: ``xid >= XID_MAX`` selects nothing (the first read takes every row by ``seq``)."""
_SCHEMA_LOCK = 0x72676E5F6576  # advisory lock: processes starting together create the tables once

SCHEMA = """
CREATE TABLE IF NOT EXISTS retailgan_events (
    seq bigserial PRIMARY KEY,
    event_key text NOT NULL UNIQUE,
    event_id text NOT NULL,
    customer_id text NOT NULL,
    product_id text NOT NULL,
    event_type text NOT NULL,
    ts timestamptz NOT NULL,
    quantity double precision,
    price double precision,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS retailgan_events_customer ON retailgan_events (customer_id, ts DESC);
CREATE INDEX IF NOT EXISTS retailgan_events_xid ON retailgan_events (xid);
CREATE TABLE IF NOT EXISTS retailgan_model (
    id integer PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL,
    version text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retailgan_model (id, generation, version) VALUES (1, 0, NULL) ON CONFLICT DO NOTHING;
"""


def event_key(customer_id: str, event_id: str) -> str:
    """The event's idempotency key: the md5 of ``["api", customer, event_id]`` as hex (the embedded
    store keeps the same digest as a number, :func:`~retailgan.serving.storage.api_event_key`)."""
    return api_event_key(customer_id, event_id).to_bytes(16, "little").hex()


def check_postgres_extra() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise extra_needed("--events-db", "postgres", str(exc)) from None


def check_url(url: str) -> None:
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"--events-db must be a postgresql:// URL, got {url.split('://')[0]!r}://...")


@dataclass(frozen=True)
class Position:
    """Where a follower has read up to: the highest ``seq`` read, and the ``xmin`` of that read."""

    seq: int = 0
    xmin: str = XID_MAX


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    customer_id: str
    product_id: str


class PgEventStore:
    """The service's events and model generation in PostgreSQL, through a small connection pool."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4, timeout_s: float = 10.0) -> None:
        check_postgres_extra()
        check_url(url)
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        try:
            with psycopg.connect(url, connect_timeout=int(timeout_s)) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                conn.execute(SCHEMA)
                self.database = str(conn.execute("SELECT current_database()").fetchone()[0])
        except psycopg.Error as exc:
            raise StoreError(f"--events-db: cannot use the database ({_one_line(exc)})") from None
        self.pool = ConnectionPool(url, min_size=min_size, max_size=max_size, timeout=timeout_s, open=True,
                                   name="retailgan-events")

    def close(self) -> None:
        self.pool.close()

    def write_events(self, events: Sequence[NewEvent]) -> int:
        """Insert the events in one committed transaction (notifying the followers); returns how many were new."""
        if not events:
            return 0
        cols: list[list[Any]] = [[] for _ in range(8)]
        for e in events:
            ts = e.ts if e.ts.tzinfo else e.ts.replace(tzinfo=timezone.utc)
            row = (event_key(e.customer_id, e.event_id), e.event_id, e.customer_id, e.product_id, e.event_type,
                   ts, e.quantity, e.price)
            for c, v in zip(cols, row, strict=True):
                c.append(v)
        with self.pool.connection() as conn:  # commits when the block ends, before the caller answers
            rows = conn.execute(
                """
                INSERT INTO retailgan_events
                    (event_key, event_id, customer_id, product_id, event_type, ts, quantity, price)
                SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                                     %s::timestamptz[], %s::float8[], %s::float8[])
                ON CONFLICT (event_key) DO NOTHING
                RETURNING seq
                """,
                cols,
            ).fetchall()
            if rows:
                conn.execute("SELECT pg_notify(%s, %s)", [EVENTS_CHANNEL, str(max(r[0] for r in rows))])
        return len(rows)

    def read_new(self, conn: Any, pos: Position) -> tuple[list[StoredEvent], Position]:
        """Events not read at ``pos`` yet (and some read already), in ``seq`` order, and the next position."""
        rows, nxt = read_rows(conn, pos, "customer_id, product_id")
        return [StoredEvent(int(s), str(c), str(p)) for s, c, p in rows], nxt

    def read_since(self, pos: Position) -> tuple[list[StoredEvent], Position]:
        with self.pool.connection() as conn:
            return self.read_new(conn, pos)

    def history(self, customer_id: str, limit: int) -> list[tuple[str, str, datetime | None, float | None]]:
        """The customer's latest events here (product, type, time in UTC without zone, quantity), newest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT product_id, event_type, ts, quantity FROM retailgan_events WHERE customer_id = %s "
                "ORDER BY ts DESC, product_id LIMIT %s",
                [customer_id, int(limit)],
            ).fetchall()
        # The embedded store keeps UTC times without a zone; answer alike so both sources sort together.
        return [(str(i), str(t), ts.astimezone(timezone.utc).replace(tzinfo=None), q) for i, t, ts, q in rows]

    def has_customer(self, customer_id: str) -> bool:
        with self.pool.connection() as conn:
            return conn.execute("SELECT 1 FROM retailgan_events WHERE customer_id = %s LIMIT 1",
                                [customer_id]).fetchone() is not None

    def erase(self, customer_ids: Sequence[str]) -> int:
        """Delete the customers' events, then rewrite the table (``VACUUM FULL``) so that their rows'
        bytes leave its files; returns how many events were deleted."""
        import psycopg

        with self.pool.connection() as conn:
            n = conn.execute("DELETE FROM retailgan_events WHERE customer_id = ANY(%s)", [list(customer_ids)]).rowcount
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("VACUUM FULL retailgan_events")
        return int(n)

    def model_generation(self) -> int:
        with self.pool.connection() as conn:
            return int(conn.execute("SELECT generation FROM retailgan_model WHERE id = 1").fetchone()[0])

    def published_version(self) -> str | None:
        """The model version the last replica to reload validated."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT version FROM retailgan_model WHERE id = 1").fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def publish_model(self, version: str) -> int:
        """Record a validated model version; every follower reloads. Returns the new generation."""
        with self.pool.connection() as conn:
            gen = int(conn.execute(
                "UPDATE retailgan_model SET generation = generation + 1, version = %s, updated_at = now() "
                "WHERE id = 1 RETURNING generation", [version]).fetchone()[0])
            conn.execute("SELECT pg_notify(%s, %s)", [MODEL_CHANNEL, str(gen)])
        return gen


_NEW_ROWS = "SELECT seq, {columns} FROM retailgan_events WHERE seq > %s OR xid >= %s::xid8 ORDER BY seq"


def _snapshot_xmin(conn: Any) -> str:
    # Taken before the rows are read: every row that read cannot see belongs to a transaction >= it.
    return str(conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())").fetchone()[0])


def read_rows(conn: Any, pos: Position, columns: str) -> tuple[list[tuple[Any, ...]], Position]:
    """Rows (``seq`` first, then ``columns``) of ``retailgan_events`` not read at ``pos`` yet, and some
    read already, in ``seq`` order, and the next position: the module docstring's rule for
    out-of-order commits."""
    xmin = _snapshot_xmin(conn)
    rows = conn.execute(_NEW_ROWS.format(columns=columns), [pos.seq, pos.xmin]).fetchall()
    return rows, Position(max([pos.seq, *(int(r[0]) for r in rows)]), xmin)


def read_pages(conn: Any, pos: Position, columns: str, page_rows: int) -> tuple[str, Iterator[list[tuple[Any, ...]]]]:
    """The rows of :func:`read_rows` in pages of at most ``page_rows``, through a server-side cursor.

    Returns the ``xmin`` of the next position and the pages (its ``seq`` is the highest of the rows, or
    ``pos.seq``). The cursor is opened here, so every page comes from one snapshot, taken after ``xmin``:
    the same rows as one :func:`read_rows`, with one page in memory at a time. ``conn`` must not be in
    autocommit mode (the cursor lives in its transaction); read the pages before that ends.
    """
    if page_rows < 1:
        raise ConfigError(f"page_rows must be >= 1, got {page_rows}")
    xmin = _snapshot_xmin(conn)
    cur = conn.cursor(name="retailgan_events_pages")
    cur.execute(_NEW_ROWS.format(columns=columns), [pos.seq, pos.xmin])

    def pages() -> Iterator[list[tuple[Any, ...]]]:
        with cur:
            while rows := cur.fetchmany(page_rows):
                yield rows

    return xmin, pages()


class Follower:
    """A thread that folds in events written by any replica and triggers reloads published by any.

    It LISTENs on both channels and reads after each notification, and at least every ``poll_s``
    seconds whatever arrives; a lost connection is opened again after ``poll_s``.
    """

    def __init__(
        self,
        store: PgEventStore,
        start: Position,
        on_events: Callable[[list[StoredEvent]], None],
        on_generation: Callable[[int], None],
        poll_s: float = 1.0,
    ) -> None:
        self.store, self.position, self.poll_s = store, start, float(poll_s)
        self.on_events, self.on_generation = on_events, on_generation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retailgan-events-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.poll_s + 5)

    def catch_up(self, conn: Any) -> None:
        events, self.position = self.store.read_new(conn, self.position)
        if events:
            self.on_events(events)
        gen = conn.execute("SELECT generation FROM retailgan_model WHERE id = 1").fetchone()[0]
        self.on_generation(int(gen))

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.store.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    conn.execute(f"LISTEN {MODEL_CHANNEL}")
                    while not self._stop.is_set():
                        self.catch_up(conn)
                        # Wakes at the first notification (several queued ones are read by one catch-up)
                        # or after poll_s: the polling fallback.
                        for _ in conn.notifies(timeout=self.poll_s, stop_after=1):
                            pass
            except Exception as exc:  # the database restarts, the network drops: follow again after poll_s
                log.warning("following events in PostgreSQL failed (%s); retrying in %.1f s",
                            _one_line(exc), self.poll_s)
                self._stop.wait(self.poll_s)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
