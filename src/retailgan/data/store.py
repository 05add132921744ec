"""The embedded DuckDB store: one file holding events, items, users, rejects and ingests.

>>> with Store.open("retail.duckdb") as store:          # doctest: +SKIP
...     store.counts()
{'users': 4338, 'items': 3660, 'events': 392000}

The schema is :data:`retailgan.data.schemas.DDL`. Opening never modifies a file that is not
already a retailgan store (or an empty DuckDB database being initialised): a file that is not a
DuckDB database is rejected from its header bytes before DuckDB touches it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import duckdb

from retailgan.data.reftime import AsOf, ReferenceTime, reference_time
from retailgan.data.schemas import DDL, SCHEMA_VERSION
from retailgan.errors import StoreError

if TYPE_CHECKING:
    from retailgan.data.ingest import IngestReport

__all__ = [
    "DEFAULT_MEMORY_LIMIT", "TABLES", "Reject", "Store", "check_writable", "fetch1",
    "write_failure",
]

DEFAULT_MEMORY_LIMIT = os.environ.get("RETAILGAN_DUCKDB_MEMORY_LIMIT", "4GB")
"""DuckDB ``memory_limit`` for store connections (env ``RETAILGAN_DUCKDB_MEMORY_LIMIT``);
above it DuckDB spills to a ``<store>.tmp`` folder."""

TABLES: tuple[str, ...] = ("meta", "events", "items", "users", "rejects", "ingests")

# A DuckDB database file starts with an 8-byte checksum followed by the magic bytes "DUCK".
_MAGIC = b"DUCK"
_MAGIC_OFFSET = 8


@dataclass(frozen=True)
class Reject:
    """One dropped source row."""

    ingest_id: int
    source: str
    line: int | None
    reason: str
    raw: str | None


def fetch1(cur: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """First row of a result (or None), consuming the result.

    DuckDB 2's Python client refuses some work on a connection whose last result was not read
    to the end, so a bare ``fetchone()`` is not enough.
    """
    rows = cur.fetchall()
    return rows[0] if rows else None


def _check_duckdb_file(path: Path) -> None:
    """Raise :class:`StoreError` unless ``path`` starts like a DuckDB database (read-only check)."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a retailgan store")
    try:
        with path.open("rb") as fh:
            head = fh.read(_MAGIC_OFFSET + len(_MAGIC))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read store file ({exc.strerror or exc})") from exc
    if head[_MAGIC_OFFSET : _MAGIC_OFFSET + len(_MAGIC)] != _MAGIC:
        what = "an empty file" if not head else "not a DuckDB database"
        raise StoreError(f"{path} is not a retailgan store ({what})")


# Phrases of DuckDB errors that come from the file system rather than from the SQL.
_IO_FAILURES = ("cannot open file", "permission denied", "read-only file system",
                "no space left", "could not write", "could not fsync")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`StoreError` unless the folder of store ``path`` takes new files.

    DuckDB writes ``<store>.wal`` (and, above the memory limit, ``<store>.tmp``) next to the
    store on every write, so a writable store file in a read-only folder still cannot take a
    commit. (``os.access``: root passes on a local disk, but not on a read-only file system.)
    """
    folder = Path(path).absolute().parent
    if folder.is_dir() and not os.access(folder, os.W_OK):
        raise StoreError(f"{path}: cannot write the store: folder {folder} is not writable "
                         f"(the store needs to create {Path(path).name}.wal there)")


def write_failure(path: str | os.PathLike[str], exc: duckdb.Error) -> StoreError | None:
    """A one-line :class:`StoreError` for a DuckDB error caused by the file system (permission
    denied, read-only, disk full), or ``None`` when ``exc`` is something else."""
    msg = str(exc)
    if not isinstance(exc, (duckdb.IOException, duckdb.PermissionException)) and not any(
        phrase in msg.lower() for phrase in _IO_FAILURES
    ):
        return None
    first = msg.splitlines()[0] if msg else type(exc).__name__
    first = re.sub(r"^([A-Za-z]+ )*Error: ", "", first)
    first = re.sub(r"^Failed to commit: ", "", first)
    return StoreError(f"{path}: cannot write the store: {first}")


class Store:
    """A connection to one store file. Use :meth:`open`; close with ``with`` or :meth:`close`."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, *, read_only: bool) -> None:
        self.path = path
        self.con = con
        self.read_only = read_only

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        read_only: bool = False,
        memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
    ) -> Store:
        """Open (and with ``create``, create and initialise) the store at ``path``.

        Raises :class:`StoreError` when the file is missing (and ``create`` is false or
        ``read_only`` is true), is not a DuckDB database, is a DuckDB database of some other
        application, was written by a newer schema version, or is locked by another process.
        """
        p = Path(path)
        exists = p.exists()
        if exists:
            _check_duckdb_file(p)
        elif read_only or not create:
            raise StoreError(f"{p}: no such store (run `retailgan ingest` to create one)")
        elif not p.parent.is_dir():
            what = "is a file, not a folder" if p.parent.exists() else "does not exist"
            raise StoreError(f"{p}: folder {p.parent} {what}")
        try:
            con = duckdb.connect(str(p), read_only=read_only)
        except duckdb.Error as exc:
            msg = str(exc)
            if "lock" in msg.lower():
                pid = re.search(r"\(PID (\d+)\)", msg)
                raise StoreError(
                    f"{p}: the store is in use by another process{f' (PID {pid[1]})' if pid else ''}, a running "
                    "`retailgan serve` perhaps: DuckDB lets one process open a store, even to read; stop that "
                    "process, or work on a copy of the store made while it was stopped"
                ) from exc
            if "not a valid DuckDB database" in msg:
                raise StoreError(f"{p} is not a retailgan store (not a DuckDB database)") from exc
            raise StoreError(f"{p}: cannot open store: {msg}") from exc
        store = cls(p, con, read_only=read_only)
        try:
            store._configure(memory_limit, threads)
            store._init_schema(fresh=not exists)
        except BaseException:
            con.close()
            raise
        return store

    def _configure(self, memory_limit: str | None, threads: int | None) -> None:
        if memory_limit:
            self.con.execute(f"SET memory_limit = '{memory_limit}'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        # Naive TIMESTAMP columns hold UTC; make every TIMESTAMPTZ conversion UTC as well.
        with suppress(duckdb.Error):  # needs the ICU extension (built in to the wheels)
            self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")  # library code: no terminal output

    def _init_schema(self, *, fresh: bool) -> None:
        tables = {t for (t,) in self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main'"
        ).fetchall()}
        if "meta" not in tables:
            if tables:
                # Someone else's DuckDB database: never write into it.
                raise StoreError(
                    f"{self.path} is not a retailgan store (a DuckDB database without a meta "
                    f"table; it has {', '.join(sorted(tables)[:8])})"
                )
            if self.read_only:
                raise StoreError(f"{self.path} is not a retailgan store (empty DuckDB database)")
        else:
            row = fetch1(self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'"))
            version = int(row[0]) if row else None
            if version is None or version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: store schema version {version} is not supported by this "
                    f"retailgan (schema version {SCHEMA_VERSION})"
                )
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: store schema version {version} is older than this "
                    f"retailgan's (schema version {SCHEMA_VERSION}) and cannot be upgraded in "
                    "place; re-create the store by ingesting its sources into a new file"
                )
            if set(TABLES) <= tables or self.read_only:
                return
        self.con.execute("BEGIN")
        try:
            for ddl in DDL:
                self.con.execute(ddl)
            self.con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                [str(SCHEMA_VERSION)],
            )
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, read_only={self.read_only})"

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """``BEGIN`` ... ``COMMIT``; any exception rolls everything back and propagates."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- reading helpers ----------------------------------------------------------------------

    def recent_buyers(self, days: int, as_of: AsOf = None) -> dict[str, int]:
        """Per product, the customers whose first event with it falls in the last ``days``
        calendar days (UTC) up to the reference time (:mod:`retailgan.data.reftime`): the
        recent sales a featgan ``trend_days`` or ``recent`` model was trained on (its dataset
        keeps each customer's first time per product, and no event after the reference time)."""
        ref = self.reference_time(as_of)
        if ref.ts is None:
            return {}
        rows = self.con.execute(
            "WITH first AS (SELECT item_id, epoch(min(ts))::BIGINT // 86400 AS d FROM events "
            "WHERE ts IS NOT NULL AND ts <= ? GROUP BY user_id, item_id) "
            "SELECT item_id, count(*) FROM first WHERE d > (SELECT max(d) FROM first) - ? GROUP BY item_id",
            [ref.ts, int(days)],
        ).fetchall()
        return {str(i): int(n) for i, n in rows}

    def reference_time(self, as_of: AsOf = None) -> ReferenceTime:
        """The store's "now" under ``as_of`` (:func:`retailgan.data.reftime.reference_time`)."""
        return reference_time(self.con, as_of)

    def counts(self) -> dict[str, int]:
        """Rows in the users, items and events tables."""
        row = fetch1(self.con.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items), "
            "(SELECT count(*) FROM events)"
        ))
        assert row is not None
        return {"users": int(row[0]), "items": int(row[1]), "events": int(row[2])}

    def get_meta(self, key: str) -> str | None:
        """A value of the ``meta`` table, or ``None``."""
        row = fetch1(self.con.execute("SELECT value FROM meta WHERE key = ?", [key]))
        return None if row is None else str(row[0])

    def ingest_reports(self) -> list[IngestReport]:
        """The report of every committed ingest, oldest first."""
        from retailgan.data.ingest import IngestReport

        rows = self.con.execute("SELECT report FROM ingests ORDER BY ingest_id").fetchall()
        return [IngestReport.model_validate_json(r[0]) for r in rows]

    def rejects(
        self, limit: int | None = 100, *, reason: str | None = None, ingest_id: int | None = None
    ) -> list[Reject]:
        """Dropped rows in ingest and line order, optionally of one reason / ingest only."""
        where, params = [], []
        if reason is not None:
            where.append("reason = ?")
            params.append(reason)
        if ingest_id is not None:
            where.append("ingest_id = ?")
            params.append(ingest_id)
        sql = "SELECT ingest_id, source, line, reason, raw FROM rejects"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ingest_id, line"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Reject(*row) for row in self.con.execute(sql, params).fetchall()]

    def reject_counts(self) -> dict[str, int]:
        """Rejected rows per reason over all ingests."""
        rows = self.con.execute(
            "SELECT reason, count(*) FROM rejects GROUP BY reason ORDER BY 2 DESC, 1"
        ).fetchall()
        return {str(r): int(n) for r, n in rows}

    def summary(self) -> dict[str, Any]:
        """Counts, ingest history (without full reports) and rejects per reason, JSON-ready."""
        ingests = [
            {
                "ingest_id": int(i),
                "source": s,
                "format": f,
                "sha256": h,
                "started_at": t.isoformat(sep=" ") if t is not None else None,
                **{
                    k: rep.get(k)
                    for k in ("rows_in", "rows_kept", "rows_rejected", "new_events", "duration_s")
                },
            }
            for i, s, f, h, t, rep in (
                (*row[:5], json.loads(row[5]))
                for row in self.con.execute(
                    "SELECT ingest_id, source, format, sha256, started_at, report FROM ingests "
                    "ORDER BY ingest_id"
                ).fetchall()
            )
        ]
        return {
            "store": str(self.path),
            "schema_version": self.get_meta("schema_version"),
            "dataset_name": self.get_meta("dataset_name"),
            "counts": self.counts(),
            "ingests": ingests,
            "rejects": self.reject_counts(),
        }
