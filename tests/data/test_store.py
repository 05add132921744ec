"""Store: opening, schema, refusing non-stores without touching them, helpers."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from retailgan.data.schemas import SCHEMA_VERSION
from retailgan.data.store import TABLES, Store
from retailgan.errors import StoreError


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_open_creates_schema_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        tables = {t for (t,) in store.con.execute("SHOW TABLES").fetchall()}
        assert set(TABLES) <= tables
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert store.counts() == {"users": 0, "items": 0, "events": 0}
    with Store.open(path, create=False, read_only=True) as store:
        assert store.read_only
        assert store.counts() == {"users": 0, "items": 0, "events": 0}


def test_context_manager_closes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as store:
        pass
    with pytest.raises(duckdb.Error):
        store.con.execute("SELECT 1")


@pytest.mark.parametrize("kwargs", [{"create": False}, {"read_only": True}])
def test_missing_store_is_not_created(tmp_path: Path, kwargs: dict) -> None:
    path = tmp_path / "absent.duckdb"
    with pytest.raises(StoreError, match="no such store") as err:
        Store.open(path, **kwargs)
    assert str(path) in str(err.value)
    assert not path.exists()


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nope" / "s.duckdb")


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"InvoiceNo,StockCode\n536365,85123A\n" * 50, "not a DuckDB database"),
        (b"", "an empty file"),
        (bytes(range(256)) * 64, "not a DuckDB database"),
    ],
)
@pytest.mark.parametrize("read_only", [False, True])
def test_not_a_duckdb_file_is_refused_and_untouched(
    tmp_path: Path, content: bytes, what: str, read_only: bool
) -> None:
    path = tmp_path / "x.duckdb"
    path.write_bytes(content)
    before = (_sha(path), path.stat().st_mtime_ns)
    with pytest.raises(StoreError) as err:
        Store.open(path, read_only=read_only)
    assert str(err.value) == f"{path} is not a retailgan store ({what})"
    assert (_sha(path), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.duckdb"]  # no .wal, no .tmp


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(tmp_path)


def test_foreign_duckdb_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE sales (id INTEGER)")
    con.execute("INSERT INTO sales VALUES (1)")
    con.close()
    before = _sha(path)
    with pytest.raises(StoreError, match=r"not a retailgan store \(a DuckDB database without a meta"):
        Store.open(path)
    assert _sha(path) == before
    con = duckdb.connect(str(path), read_only=True)
    assert {t for (t,) in con.execute("SHOW TABLES").fetchall()} == {"sales"}
    con.close()


def test_empty_duckdb_database_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(StoreError, match="empty DuckDB database"):
        Store.open(path, read_only=True)
    with Store.open(path) as store:
        assert store.counts()["events"] == 0


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        store.con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                          [str(SCHEMA_VERSION + 1)])
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is not supported"):
        Store.open(path)


def test_older_schema_version_is_refused(tmp_path: Path) -> None:
    """A store of an older schema (1: hex VARCHAR event keys with a PRIMARY KEY) is not
    upgraded in place, nor written to."""
    path = tmp_path / "old.duckdb"
    with Store.open(path) as store:
        store.con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                          [str(SCHEMA_VERSION - 1)])
    before = _sha(path)
    for read_only in (False, True):
        with pytest.raises(StoreError) as err:
            Store.open(path, read_only=read_only)
        msg = str(err.value)
        assert msg.startswith(f"{path}: store schema version {SCHEMA_VERSION - 1} is older")
        assert f"(schema version {SCHEMA_VERSION})" in msg and "re-create the store" in msg
    assert _sha(path) == before


def test_schema_version_2_event_key(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 2
    with Store.open(tmp_path / "s.duckdb") as store:
        cols = dict(store.con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events'"
        ).fetchall())
    assert cols["event_key"] == "UHUGEINT"


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as store:
        with pytest.raises(RuntimeError), store.transaction() as con:
            con.execute("INSERT INTO users VALUES ('u1', 'UK')")
            raise RuntimeError("boom")
        assert store.counts()["users"] == 0
        with store.transaction() as con:
            con.execute("INSERT INTO users VALUES ('u1', 'UK')")
        assert store.counts()["users"] == 1


def test_helpers_after_an_ingest(tmp_path: Path) -> None:
    from retailgan.data.ingest import ingest

    src = tmp_path / "ev.csv"
    src.write_text("user,item,timestamp,event_type\nu1,i1,2024-01-01,view\nu2,i1,2024-01-02,buy\n"
                   ",i2,2024-01-03,view\n")
    report = ingest(tmp_path / "s.duckdb", src, "events")
    with Store.open(tmp_path / "s.duckdb", read_only=True) as store:
        assert store.counts() == {"users": 1, "items": 1, "events": 1}
        assert store.ingest_reports() == [report]
        rejects = store.rejects(limit=10)
        assert [(r.line, r.reason) for r in rejects] == [(3, "unknown_event_type"),
                                                         (4, "missing_user")]
        assert rejects[0].source == str(src)
        assert '"event_type":"buy"' in (rejects[0].raw or "")
        assert [r.line for r in store.rejects(limit=1)] == [3]
        assert [r.line for r in store.rejects(reason="missing_user")] == [4]
        assert store.rejects(ingest_id=2) == []
        assert store.reject_counts() == {"missing_user": 1, "unknown_event_type": 1}
        summary = store.summary()
        assert summary["counts"] == {"users": 1, "items": 1, "events": 1}
        assert summary["dataset_name"] == "ev"
        assert summary["ingests"][0]["rows_in"] == 3
        assert summary["ingests"][0]["sha256"] == _sha(src)


def test_a_store_open_in_another_process_names_it_and_the_way_around(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store.open(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('open', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        for read_only in (False, True):  # reading is refused too while another process has it open
            with pytest.raises(StoreError, match=rf"in use by another process \(PID {holder.pid}\).*copy"):
                Store.open(path, read_only=read_only)
    finally:
        holder.communicate("", timeout=30)
