"""The PostgreSQL event store of `serve --events-db`: idempotence across replicas, ordering, no
event skipped when transactions commit out of order, notifications, and the app on it."""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from retailgan.serving.storage import NewEvent
from tests.serving.conftest import ADMIN_KEY, USER_KEY

pytest.importorskip("psycopg", reason="the 'postgres' extra is not installed")

from retailgan.serving.pgevents import Follower, PgEventStore, Position, event_key


def ev(event_id: str, customer: str = "C1", product: str = "P001", ts: datetime | None = None) -> NewEvent:
    return NewEvent(event_id, customer, product, "view", ts or datetime(2024, 1, 1, tzinfo=timezone.utc), None, None)


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_writes_are_idempotent_by_event_id_across_replicas(pg_url):
    a, b = PgEventStore(pg_url), PgEventStore(pg_url)  # two processes' stores on one database
    try:
        assert a.write_events([ev("e1"), ev("e2")]) == 2
        assert b.write_events([ev("e1"), ev("e3")]) == 1  # e1 is there already: a retry on another replica
        assert a.write_events([ev("e3", ts=datetime(2030, 1, 1))]) == 0  # the key ignores the time
        assert b.write_events([ev("e4"), ev("e4")]) == 1  # twice in one batch
        assert a.write_events([ev("e1", customer="C2")]) == 1  # another customer's e1 is another event
        events, _ = a.read_since(Position())
        assert [(e.customer_id, e.product_id) for e in events] == [("C1", "P001")] * 4 + [("C2", "P001")]
    finally:
        a.close()
        b.close()
    # The same key rule as the embedded store: md5 of the JSON list ["api", customer, event_id].
    import duckdb

    payload = json.dumps(["api", "C1", "e1"])
    assert event_key("C1", "e1") == duckdb.execute("SELECT md5(?)", [payload]).fetchone()[0]
    assert event_key("C1", "e1") != event_key("C1e", "1")


def test_reads_come_in_write_order_and_only_once(pg_url):
    store = PgEventStore(pg_url)
    try:
        for i in range(5):
            store.write_events([ev(f"e{i}", product=f"P{i:03d}")])
        events, pos = store.read_since(Position())
        assert [e.product_id for e in events] == [f"P{i:03d}" for i in range(5)]
        assert [e.seq for e in events] == sorted(e.seq for e in events)
        # A transaction still running anywhere on the server (another database's included) keeps
        # xmin back, and rows of transactions at or after it are read again: harmless (fold-in is a
        # set), so only "nothing new" is asserted, not "nothing".
        read = {e.seq for e in events}
        again, pos2 = store.read_since(pos)
        assert {e.seq for e in again} <= read and pos2.seq == pos.seq
        store.write_events([ev("e9", product="P009")])
        new, _ = store.read_since(pos2)
        assert [e.product_id for e in new if e.seq not in read] == ["P009"]
    finally:
        store.close()


def test_an_event_committed_after_a_later_one_is_not_skipped(pg_url):
    """A transaction that drew a lower seq but commits after a read that saw a higher one."""
    import psycopg

    store = PgEventStore(pg_url)
    try:
        slow = psycopg.connect(pg_url)
        slow.execute("INSERT INTO retailgan_events (event_key, event_id, customer_id, product_id, event_type, ts) "
                     "VALUES ('slow', 'slow', 'C9', 'P900', 'view', now())")  # seq 1, not committed
        store.write_events([ev("fast", customer="C8", product="P800")])  # seq 2, committed
        seen, pos = store.read_since(Position())
        assert [e.product_id for e in seen] == ["P800"] and pos.seq == 2
        slow.commit()
        slow.close()
        late, _ = store.read_since(pos)
        assert "P900" in [e.product_id for e in late]
    finally:
        store.close()


def test_follower_gets_others_events_and_model_generations(pg_url):
    writer, reader = PgEventStore(pg_url), PgEventStore(pg_url)
    got: list[str] = []
    generations: list[int] = []
    lock = threading.Lock()

    def on_events(events):
        with lock:
            got.extend(e.product_id for e in events)

    # A long poll interval: what arrives within it came by LISTEN/NOTIFY.
    follower = Follower(reader, Position(), on_events, generations.append, poll_s=30)
    follower.start()
    try:
        assert wait_for(lambda: generations == [0] or generations[:1] == [0])
        writer.write_events([ev("n1", product="P100")])
        assert wait_for(lambda: "P100" in got, timeout_s=5)
        gen = writer.publish_model("abc123")
        assert gen == 1 and reader.model_generation() == 1
        assert wait_for(lambda: 1 in generations, timeout_s=5)
    finally:
        follower.stop()
        writer.close()
        reader.close()


def test_follower_polls_when_no_notification_comes(pg_url):
    """An event written without a notification is folded in after the poll interval."""
    import psycopg

    reader = PgEventStore(pg_url)
    got: list[str] = []
    follower = Follower(reader, Position(), lambda es: got.extend(e.product_id for e in es), lambda g: None,
                        poll_s=0.3)
    follower.start()
    try:
        with psycopg.connect(pg_url) as conn:  # commits, sends no NOTIFY
            conn.execute("INSERT INTO retailgan_events (event_key, event_id, customer_id, product_id, event_type, "
                         "ts) VALUES ('quiet', 'quiet', 'C7', 'P700', 'view', now())")
        assert wait_for(lambda: "P700" in got, timeout_s=5)
    finally:
        follower.stop()
        reader.close()


def test_app_on_postgres_writes_there_and_keeps_the_store_read_only(built, tmp_path, pg_url):
    from retailgan.data.store import Store
    from retailgan.serving.app import create_app
    from retailgan.serving.settings import Settings

    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    settings = Settings(model_dir=built["models"]["ease"], store=store, keys_file=built["keys"],
                        events_db=pg_url, events_poll_s=0.2)
    h = {"X-API-Key": USER_KEY}
    with TestClient(create_app(settings)) as client:
        # The store stays readable by others (two processes on one store: test_multiprocess.py).
        with Store.open(store, create=False, read_only=True) as other:
            assert other.con.execute("SELECT count(*) FROM items").fetchone()[0] > 0
        batch = {"events": [{"customer_id": "PGNEW", "product_id": "P105", "event_type": "cart", "event_id": "x1"}]}
        r = client.post("/v1/events", json=batch, headers=h)
        assert r.status_code == 201 and r.json() == {"accepted": 1, "written": 1}
        assert client.post("/v1/events", json=batch, headers=h).json()["written"] == 0
        hist = client.get("/v1/customers/PGNEW/history", headers=h)
        assert hist.status_code == 200 and [e["product_id"] for e in hist.json()["events"]] == ["P105"]
        rec = client.post("/v1/recommendations", json={"customer_id": "PGNEW", "k": 3}, headers=h).json()
        assert rec["strategy"] == "fold-in" and rec["history_size"] == 1
        forget = client.post("/admin/customers/forget", json={"customer_ids": ["PGNEW"]},
                             headers={"X-API-Key": ADMIN_KEY})
        assert forget.status_code == 409 and "read-only" in forget.json()["detail"]
    with Store.open(store, create=False, read_only=True) as st:  # nothing was written to the store
        assert st.con.execute("SELECT count(*) FROM events WHERE user_id = 'PGNEW'").fetchone()[0] == 0


def test_forget_erases_events_in_postgres(built, tmp_path, pg_url):
    from retailgan.forget import forget

    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    pg = PgEventStore(pg_url)
    try:
        pg.write_events([ev("f1", customer="GONE"), ev("f2", customer="GONE"), ev("k1", customer="KEPT")])
        report = forget(store, ["GONE"], events_db=pg_url, reference="T-1")
        assert report.store["events_db_events"] == 2
        assert not pg.has_customer("GONE") and pg.has_customer("KEPT")
    finally:
        pg.close()


def test_a_reload_published_elsewhere_reloads_here_and_names_a_version_mismatch(built, tmp_path, pg_url):
    from retailgan.serving.app import create_app
    from retailgan.serving.settings import Settings

    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    settings = Settings(model_dir=built["models"]["ease"], store=store, keys_file=built["keys"],
                        events_db=pg_url, events_poll_s=0.2)
    other = PgEventStore(pg_url)  # another replica, whose directory held another model
    admin = {"X-API-Key": ADMIN_KEY}
    try:
        with TestClient(create_app(settings)) as client:
            before = client.get("/admin/models", headers=admin).json()
            assert before["reload_state"] == "idle"
            other.publish_model("0123456789ab")
            assert wait_for(lambda: client.get("/admin/models", headers=admin).json()["last_error"] is not None)
            after = client.get("/admin/models", headers=admin).json()
            assert after["reload_state"] == "succeeded"
            assert after["version"] == before["version"]  # the same directory here: the same model
            assert "0123456789ab" in after["last_error"] and "deployed here" in after["last_error"]
    finally:
        other.close()
