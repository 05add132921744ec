"""Store schema: the tables every part of retailgan reads and writes.

One DuckDB file holds everything. Raw ids are kept as text exactly as the source wrote them
(after trimming and normalising float-written integers such as ``17850.0`` -> ``17850``);
integer indices exist only inside an in-memory dataset, never in the store.
"""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase", "rating")
"""Known event types. ``rating`` events carry an explicit ``rating`` value."""

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "cart": 2.0, "purchase": 3.0, "rating": 1.0}
"""Implicit-feedback weight per event type (view < cart < purchase); configurable per dataset."""

SCHEMA_VERSION = 1

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS meta (
        key VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
    # One row per cleaned event. ``event_key`` is a content hash (source-independent) that makes
    # re-ingesting the same rows a no-op.
    """
    CREATE TABLE IF NOT EXISTS events (
        event_key VARCHAR PRIMARY KEY,
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
