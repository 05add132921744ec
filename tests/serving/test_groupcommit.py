"""Group commit of events: concurrent requests share a commit, each gets its own count, one bad
request fails alone, nothing queued is lost at close, and the stored keys stay those of before."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import duckdb
import pytest

from retailgan.data.reftime import API_INGEST_ID
from retailgan.serving.groupcommit import GroupCommit
from retailgan.serving.storage import API_SOURCE, NewEvent, ServiceStore, api_event_key


def test_writes_queued_during_a_commit_share_the_next_one():
    started, release = threading.Event(), threading.Event()
    groups: list[list[str]] = []

    def write_many(items: list[str]) -> list[int]:
        groups.append(items)
        if len(groups) == 1:
            started.set()
            release.wait(5)  # the first commit is slow: the others queue behind it
        return [len(i) for i in items]

    writer: GroupCommit[str] = GroupCommit(write_many)
    first = writer.submit("a")
    assert started.wait(5)
    rest = [writer.submit(x) for x in ("bb", "ccc", "dddd")]
    release.set()
    assert first.result(5) == 1
    assert [f.result(5) for f in rest] == [2, 3, 4]
    writer.close()
    assert groups == [["a"], ["bb", "ccc", "dddd"]]


def test_a_failing_write_fails_only_its_own_request():
    started, release = threading.Event(), threading.Event()

    def write_many(items: list[str]) -> list[int]:
        if items == ["slow"]:
            started.set()
            release.wait(5)
        if "bad" in items:
            raise ValueError("bad item")
        return [1] * len(items)

    writer: GroupCommit[str] = GroupCommit(write_many)
    slow = writer.submit("slow")
    assert started.wait(5)
    ok, bad, ok2 = writer.submit("ok"), writer.submit("bad"), writer.submit("ok2")
    release.set()
    assert slow.result(5) == 1 and ok.result(5) == 1 and ok2.result(5) == 1
    with pytest.raises(ValueError, match="bad item"):
        bad.result(5)
    writer.close()


def test_close_commits_what_is_queued_and_refuses_more():
    done: list[str] = []
    writer: GroupCommit[str] = GroupCommit(lambda items: (done.extend(items), [0] * len(items))[1])
    futures = [writer.submit(str(i)) for i in range(50)]
    writer.close()
    assert all(f.done() for f in futures) and sorted(done, key=int) == [str(i) for i in range(50)]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("late")


def test_groups_are_capped_by_size():
    started, release = threading.Event(), threading.Event()
    sizes: list[int] = []

    def write_many(items: list[str]) -> list[int]:
        sizes.append(sum(len(i) for i in items))
        started.set()
        release.wait(5)
        return [0] * len(items)

    writer: GroupCommit[str] = GroupCommit(write_many, max_group=4)
    futures = [writer.submit("xx")]
    assert started.wait(5)
    futures += [writer.submit("xx") for _ in range(5)]
    release.set()
    [f.result(5) for f in futures]
    writer.close()
    assert sizes[0] == 2 and max(sizes) <= 4 and sum(sizes) == 12


def test_the_key_is_duckdbs_md5_number_of_the_payload():
    """Stores written before the keys were computed in Python hold md5_number: a retry must match."""
    con = duckdb.connect()
    for customer, event in [("C1", "e1"), ("Zoë", "ünï-\"x\""), ("", "")]:
        payload = json.dumps([API_SOURCE, customer, event])
        assert con.execute("SELECT md5_number(?)", [payload]).fetchall()[0][0] == api_event_key(customer, event)


def ev(event_id: str, customer: str, product: str = "P001") -> NewEvent:
    return NewEvent(event_id, customer, product, "view", datetime(2024, 1, 1, tzinfo=timezone.utc), None, None)


@pytest.fixture
def service_store(built, tmp_path):
    path = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], path)
    s = ServiceStore(path)
    yield s
    s.close()


def test_each_request_counts_its_own_new_events(service_store):
    counts = service_store._write_groups([
        [ev("a", "NEW1"), ev("b", "NEW1")],
        [ev("a", "NEW1"), ev("c", "NEW2")],  # "a" is the first request's: written once, counted there
        [],
    ])
    assert counts == [2, 1, 0]
    assert service_store._write_groups([[ev("a", "NEW1"), ev("d", "NEW2")]]) == [1]
    rows = service_store.store.con.execute(
        "SELECT user_id, count(*) FROM events WHERE ingest_id = ? GROUP BY 1 ORDER BY 1", [API_INGEST_ID]).fetchall()
    assert rows == [("NEW1", 2), ("NEW2", 2)]
    assert service_store.has_customer("NEW2")


def test_concurrent_requests_are_all_written_once(service_store):
    def post(i: int) -> int:
        return service_store.write_events([ev(f"e{i}", f"C{i % 7}"), ev(f"e{i}", f"C{i % 7}"), ev("same", "C0")])

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(post, range(40)))
    assert sum(counts) == 41  # 40 distinct events plus one "same", whichever request wrote it
    n = service_store.store.con.execute("SELECT count(*) FROM events WHERE ingest_id = ?", [API_INGEST_ID]).fetchall()
    assert n == [(41,)]
