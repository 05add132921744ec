"""Store schema: the tables every part of retailgan reads and writes.

One DuckDB file holds everything. Raw ids are kept as text exactly as the source wrote them
(after trimming and normalising float-written integers such as ``17850.0`` -> ``17850``);
integer indices exist only inside an in-memory dataset, never in the store.
"""

from __future__ import annotations

PADDING = " \t\n\r\f\v"
"""Trimmed from both ends of an id by the service (:mod:`retailgan.serving.schemas`) and by
:mod:`retailgan.forget` alike: ASCII spaces, tabs and line breaks (the same characters in every regex
engine, unlike \\s)."""

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase", "rating")
"""Known event types. ``rating`` events carry an explicit ``rating`` value."""

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "cart": 2.0, "purchase": 3.0, "rating": 1.0}
"""Implicit-feedback weight per event type (view < cart < purchase); configurable per dataset."""

SCHEMA_VERSION = 2
"""On-disk schema version, stored as ``meta.schema_version``. A store of another version is
refused (:class:`~retailgan.errors.StoreError`); there is no migration.

History: 1 = ``events.event_key`` as a 32-character hex ``VARCHAR PRIMARY KEY``; 2 = the same md5
as a ``UHUGEINT`` (16 bytes), no index."""

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS meta (
        key VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
    # One row per cleaned event. ``event_key`` is a content hash (source-independent) that makes
    # re-ingesting the same rows a no-op: the 128-bit md5 of the event's fields as DuckDB's
    # ``md5_number`` (see ``retailgan.data.ingest``). It is unique, but deliberately not a
    # PRIMARY KEY: ingest enforces uniqueness itself (in-file dedupe + anti-join against the
    # stored keys, in the same transaction), and DuckDB's ART index on 20M random keys tripled
    # both the ingest time and the file size (docs/benchmarks-ingest.md). The anti-join is a
    # hash join and needs no index. Each ingest writes its rows sorted by ``user_id``: a customer's
    # history then reads a few row groups (zonemaps), not the whole table.
    """
    CREATE TABLE IF NOT EXISTS events (
        event_key UHUGEINT NOT NULL,
        user_id VARCHAR NOT NULL,
        item_id VARCHAR NOT NULL,
        ts TIMESTAMP,
        event_type VARCHAR NOT NULL,
        quantity DOUBLE,
        price DOUBLE,
        rating DOUBLE,
        ingest_id BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS items (
        item_id VARCHAR PRIMARY KEY,
        title VARCHAR,
        category VARCHAR,
        price DOUBLE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS users (
        user_id VARCHAR PRIMARY KEY,
        country VARCHAR
    )
    """,
    # Every dropped source row, with the rule that dropped it. ``line`` is the 1-based line number
    # in the source file (header = line 1 for CSV), or the record number for Parquet.
    """
    CREATE TABLE IF NOT EXISTS rejects (
        ingest_id BIGINT NOT NULL,
        source VARCHAR NOT NULL,
        line BIGINT,
        reason VARCHAR NOT NULL,
        raw VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ingests (
        ingest_id BIGINT PRIMARY KEY,
        source VARCHAR NOT NULL,
        format VARCHAR NOT NULL,
        sha256 VARCHAR NOT NULL,
        started_at TIMESTAMP NOT NULL,
        report JSON NOT NULL
    )
    """,
)
