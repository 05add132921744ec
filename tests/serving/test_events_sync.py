"""`retailgan events sync`: the events of `serve --events-db` reach the DuckDB store once each,
incrementally without skipping out-of-order commits, atomically, and never bring back an erasure."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

from retailgan.data.reftime import API_INGEST_ID
from retailgan.data.store import Store
from retailgan.serving.storage import NewEvent, ServiceStore

pytest.importorskip("psycopg", reason="the 'postgres' extra is not installed")

from retailgan.cli import app
from retailgan.errors import StoreError
from retailgan.serving.pgevents import PgEventStore
from retailgan.serving.pgsync import sync_events


def ev(event_id: str, customer: str, product: str = "P001", ts: datetime | None = None) -> NewEvent:
    return NewEvent(event_id, customer, product, "purchase", ts or datetime(2024, 1, 1, tzinfo=timezone.utc), 1.0, 2.5)


def api_rows(store):
    with Store.open(store, read_only=True) as s:
        return s.con.execute(
            "SELECT event_key, user_id, item_id, ts, event_type, quantity, price FROM events WHERE ingest_id = ? "
            "ORDER BY user_id, item_id", [API_INGEST_ID]).fetchall()


@pytest.fixture
def store(built, tmp_path):
    path = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], path)
    return path


def test_events_reach_the_store_once_like_the_one_process_service(store, tmp_path, pg_url):
    events = [ev("e1", "NEW1", "P001"), ev("e2", "NEW1", "P002"), ev("e3", "NEW2", "P101")]
    pg = PgEventStore(pg_url)
    try:
        assert pg.write_events(events) == 3
    finally:
        pg.close()
    # The same events written by a one-process service into another copy: the rows must be equal.
    reference = tmp_path / "reference.duckdb"
    shutil.copy(store, reference)
    svc = ServiceStore(reference)
    svc.write_events(events)
    svc.close()

    result = CliRunner().invoke(app, ["events", "sync", "--events-db", pg_url, "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "copied 3 event(s)" in result.output and "0 already present" in result.output
    assert "2 new customer(s)" in result.output
    assert api_rows(store) == api_rows(reference)
    with Store.open(store, read_only=True) as s:
        assert s.con.execute("SELECT count(*) FROM users WHERE user_id IN ('NEW1', 'NEW2')").fetchone()[0] == 2

    again = CliRunner().invoke(app, ["events", "sync", "--events-db", pg_url, "--store", str(store)])
    assert again.exit_code == 0, again.output
    assert "copied 0 event(s)" in again.output
    assert api_rows(store) == api_rows(reference)

    # Events the one-process service wrote already (same key) are not copied again either.
    report = sync_events(pg_url, reference)
    assert (report.copied, report.present) == (0, 3)


def test_an_out_of_order_commit_is_not_skipped(store, pg_url):
    import psycopg

    pg = PgEventStore(pg_url)
    slow = psycopg.connect(pg_url)
    try:
        slow.execute("INSERT INTO retailgan_events (event_key, event_id, customer_id, product_id, event_type, ts) "
                     "VALUES ('slow', 'slow', 'LATE', 'P009', 'view', now())")  # seq 1, not committed yet
        pg.write_events([ev("fast", "FAST", "P003")])  # seq 2, committed
        first = sync_events(pg_url, store)
        assert first.copied == 1 and first.position.seq == 2
        slow.commit()
        second = sync_events(pg_url, store)
        assert second.copied == 1
        assert {r[1] for r in api_rows(store)} == {"FAST", "LATE"}
        assert sync_events(pg_url, store).copied == 0
    finally:
        slow.close()
        pg.close()


def test_datasets_and_recent_sales_see_the_synced_events(store, pg_url):
    from retailgan.data.dataset import load_dataset

    with Store.open(store, read_only=True) as s:
        last = s.reference_time().ts
        before = s.recent_buyers(7).get("P010", 0)
    pg = PgEventStore(pg_url)
    try:
        pg.write_events([ev(f"r{i}", f"RECENT{i}", "P010", ts=last.replace(tzinfo=timezone.utc)) for i in range(3)])
    finally:
        pg.close()
    assert "RECENT0" not in load_dataset(store).users
    sync_events(pg_url, store)
    assert "RECENT0" in load_dataset(store).users
    with Store.open(store, read_only=True) as s:
        assert s.recent_buyers(7)["P010"] == before + 3


def test_a_failure_leaves_the_store_unchanged(store, pg_url, monkeypatch):
    import retailgan.serving.pgsync as pgsync

    pg = PgEventStore(pg_url)
    try:
        pg.write_events([ev("x1", "FAIL1"), ev("x2", "FAIL2")])
    finally:
        pg.close()
    before = api_rows(store)
    with Store.open(store, read_only=True) as s:
        users = s.counts()["users"]
    # Break the last statement of the transaction (the position update): events and users roll back.
    monkeypatch.setattr(pgsync, "API_INGEST_ID", API_INGEST_ID)
    real = pgsync.datetime

    class Broken:
        @staticmethod
        def now(tz=None):
            raise RuntimeError("disk gone")

    monkeypatch.setattr(pgsync, "datetime", Broken)
    with pytest.raises(RuntimeError):
        sync_events(pg_url, store)
    monkeypatch.setattr(pgsync, "datetime", real)
    assert api_rows(store) == before
    with Store.open(store, read_only=True) as s:
        assert s.counts()["users"] == users
        assert s.con.execute("SELECT count(*) FROM events_sync").fetchone()[0] == 0
    assert sync_events(pg_url, store).copied == 2  # and the next run copies everything


def test_refuses_while_a_service_holds_the_store(store, pg_url):
    import subprocess
    import sys

    # Another process holds the store open for writing, as a one-process service does.
    code = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        result = CliRunner().invoke(app, ["events", "sync", "--events-db", pg_url, "--store", str(store)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2
    assert "in use by another process" in result.output and "nightly job" in result.output


def test_erased_customers_do_not_come_back(store, pg_url):
    from retailgan.forget import forget

    pg = PgEventStore(pg_url)
    try:
        pg.write_events([ev("g1", "GONE"), ev("k1", "KEPT")])
    finally:
        pg.close()
    assert sync_events(pg_url, store).copied == 2
    # Erased from the store only: their events are still in PostgreSQL, so the sync refuses.
    forget(store, ["GONE"])
    with pytest.raises(StoreError, match="without --events-db"):
        sync_events(pg_url, store)
    forget(store, ["GONE"], events_db=pg_url)
    assert sync_events(pg_url, store).copied == 0
    assert {r[1] for r in api_rows(store)} == {"KEPT"}


def test_pages_of_any_size_give_the_unpaged_result(built, tmp_path, pg_url):
    import dataclasses

    import psycopg

    stores = {size: tmp_path / f"pages-{size}.duckdb" for size in (1, 2, 10**6)}
    events = [ev(f"p{i}", f"PAGED{i % 3}", f"P00{i % 4}") for i in range(7)]
    for path in stores.values():
        shutil.copy(built["store"], path)
        svc = ServiceStore(path)  # two of the events are in every store already
        svc.write_events(events[2:4])
        svc.close()
    pg = PgEventStore(pg_url)
    slow = psycopg.connect(pg_url)
    try:
        slow.execute("INSERT INTO retailgan_events (event_key, event_id, customer_id, product_id, event_type, ts) "
                     "VALUES ('slow', 'slow', 'LATE', 'P009', 'view', now())")  # a lower seq, committed later
        pg.write_events(events)
        first = {size: sync_events(pg_url, path, page_rows=size) for size, path in stores.items()}
        slow.commit()
        pg.write_events([ev("p7", "PAGED0", "P001")])
        second = {size: sync_events(pg_url, path, page_rows=size) for size, path in stores.items()}
    finally:
        slow.close()
        pg.close()

    whole = stores[10**6]
    assert (first[10**6].read, first[10**6].copied, first[10**6].present) == (7, 5, 2)
    assert (second[10**6].copied, second[10**6].new_customers) == (2, 1)  # LATE and p7
    for size, path in stores.items():
        assert dataclasses.asdict(first[size]) == dataclasses.asdict(first[10**6]), size
        assert dataclasses.asdict(second[size]) == dataclasses.asdict(second[10**6]), size
        assert api_rows(path) == api_rows(whole)
        with Store.open(path, read_only=True) as s, Store.open(whole, read_only=True) as w:
            query = "SELECT * FROM users ORDER BY user_id"
            assert s.con.execute(query).fetchall() == w.con.execute(query).fetchall()
            query = "SELECT source, seq, xmin, copied FROM events_sync"
            assert s.con.execute(query).fetchall() == w.con.execute(query).fetchall()
