"""Ingest under hostile or careless input, through the CLI: over-long lines, a store folder that
takes no writes, endless sources, Excel's byte-order mark, a few bad cells, and a seeded fuzz
test of truncated and bit-flipped CSV / CSV.gz / Parquet files (exit 2 with one line and the
store unchanged, or a correct store; never a traceback)."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from typer.testing import CliRunner

import retailgan.data.ingest.write as ingest_write
import retailgan.data.store as store_mod
from retailgan.cli import app
from retailgan.data.ingest import MAX_COLUMN_NAME, MAX_HEADER_BYTES, ingest, is_non_product_code
from retailgan.data.store import Store, write_failure
from retailgan.errors import IngestError, StoreError
from tests.conftest import BUNDLED_RETAIL
from tests.data.test_ingest import HEADER, RETAIL_LINES, snapshot, write_csv

runner = CliRunner()
GOOD = RETAIL_LINES[0]


def cli(*args: str | Path) -> Result:
    return runner.invoke(app, ["ingest", *map(str, args)])


def assert_refused(res: Result, *fragments: str) -> str:
    """Exit 2 with exactly one ``error:`` line on stderr naming ``fragments``; no traceback."""
    assert isinstance(res.exception, SystemExit) and res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    store = tmp_path / "pop.duckdb"
    ingest(store, write_csv(tmp_path / "first.csv", HEADER, RETAIL_LINES))
    return store


def rejects(store: Path) -> list[tuple[int, str]]:
    with Store.open(store, create=False, read_only=True) as st:
        return [(r.line, r.reason) for r in st.rejects(None)]


# -- 9: long lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, fragment",
    [
        ("x" * 140_000 + "," + HEADER, f"first line is longer than {MAX_HEADER_BYTES:,} bytes"),
        (HEADER + "," + "y" * 140_000, f"first line is longer than {MAX_HEADER_BYTES:,} bytes"),
        (HEADER + "," + "y" * 5000, f"is 5,000 characters long (at most {MAX_COLUMN_NAME:,})"),
    ],
    ids=["140 KB header", "140,000-character column name", "5,000-character column name"],
)
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_long_header_is_one_clear_error(
    tmp_path: Path, populated: Path, header: str, fragment: str, suffix: str
) -> None:
    src = write_csv(tmp_path / f"wide{suffix}", header, [GOOD + ",1"])
    before = snapshot(populated)
    assert_refused(cli(src, "--store", populated), f"wide{suffix}: line 1", fragment)
    assert snapshot(populated) == before


def test_long_data_line_is_refused_and_a_long_field_is_kept(tmp_path: Path, populated: Path) -> None:
    before = snapshot(populated)
    huge = GOOD.replace("WHITE HEART", "W" * 2_100_000)  # over DuckDB's 2,000,000-byte line limit
    src = write_csv(tmp_path / "huge.csv", HEADER, [GOOD, huge])
    assert_refused(cli(src, "--store", populated), "huge.csv: line 3", "Maximum line size")
    assert snapshot(populated) == before

    long_title = "L" * 200_000  # longer than the csv module's field limit, within DuckDB's
    src = write_csv(tmp_path / "long.csv", HEADER, [GOOD.replace("85123A", "10001").replace(
        "WHITE HEART", long_title)])
    res = cli(src, "--store", populated)
    assert res.exit_code == 0, res.output
    with Store.open(populated, create=False, read_only=True) as st:
        assert st.con.execute("SELECT title FROM items WHERE item_id = '10001'").fetchall() == [
            (long_title,)]


# -- 10: a store that cannot be written ------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a read-only folder anyway")
def test_read_only_store_folder(tmp_path: Path, populated: Path) -> None:
    src = write_csv(tmp_path / "new.csv", HEADER, [GOOD.replace("536365", "600000")])
    before = snapshot(populated)
    populated.parent.chmod(0o555)
    try:
        assert_refused(cli(src, "--store", populated), "cannot write the store", "not writable")
    finally:
        populated.parent.chmod(0o755)
    assert snapshot(populated) == before


def test_unwritable_folder_is_refused_before_reading(
    tmp_path: Path, populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root os.access only denies on a read-only file system: simulate that answer.
    folder = populated.parent.absolute()
    real = os.access
    monkeypatch.setattr(store_mod.os, "access",
                        lambda p, mode: False if Path(p) == folder else real(p, mode))
    before = snapshot(populated)
    os.mkfifo(tmp_path / "never-read.csv")  # would block if it were opened
    line = assert_refused(cli(tmp_path / "never-read.csv", "--store", populated))
    assert line == (f"error: {populated}: cannot write the store: folder {folder} is not writable "
                    "(the store needs to create pop.duckdb.wal there)")
    assert snapshot(populated) == before
    assert_refused(cli(tmp_path / "never-read.csv", "--store", tmp_path / "new.duckdb"),
                   "new.duckdb: cannot write the store")
    assert not (tmp_path / "new.duckdb").exists()


def test_write_failure_at_commit_is_one_line_and_rolls_back(
    tmp_path: Path, populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*_: Any, **__: Any) -> int:  # what DuckDB raises when it cannot create the WAL
        raise duckdb.IOException(f'IO Error: Cannot open file "{populated}.wal": Permission denied')

    monkeypatch.setattr(ingest_write, "_insert_events", denied)
    src = write_csv(tmp_path / "new.csv", HEADER, [GOOD.replace("536365", "600000")])
    before = snapshot(populated)
    line = assert_refused(cli(src, "--store", populated))
    assert line == (f'error: {populated}: cannot write the store: Cannot open file '
                    f'"{populated}.wal": Permission denied')
    assert snapshot(populated) == before


def test_write_failure_classification(tmp_path: Path) -> None:
    p = tmp_path / "s.duckdb"
    commit = duckdb.TransactionException(
        f'TransactionContext Error: Failed to commit: Cannot open file "{p}.wal": '
        "Read-only file system")
    err = write_failure(p, commit)
    assert isinstance(err, StoreError)
    assert str(err) == f'{p}: cannot write the store: Cannot open file "{p}.wal": Read-only file system'
    # An error in the SQL itself is a bug, not the operator's: it must not be disguised.
    assert write_failure(p, duckdb.BinderException('Binder Error: column "x" not found')) is None


def test_store_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    src = write_csv(tmp_path / "r.csv", HEADER, [GOOD])
    assert_refused(cli(src, "--store", tmp_path / "plain" / "s.duckdb"), "is a file, not a folder")


def test_failed_first_ingest_keeps_its_error_when_cleanup_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unlink(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    src = write_csv(tmp_path / "bad.csv", HEADER.replace("CustomerID", "Cust"), [GOOD])
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(IngestError, match="missing column 'CustomerID'"):
        ingest(tmp_path / "s.duckdb", src)


# -- 11: endless sources ---------------------------------------------------------------------------


def _special_files(tmp: Path) -> list[tuple[list[str], str]]:
    fifo = tmp / "pipe.csv"
    os.mkfifo(fifo)
    zero = tmp / "zero.csv"
    zero.symlink_to("/dev/zero")
    good = write_csv(tmp / "ev.csv", "user,item", ["u1,i1"])
    return [
        ([str(zero)], "zero.csv: a character device, not a regular file"),
        ([str(fifo)], "pipe.csv: a named pipe (FIFO), not a regular file"),
        ([str(good), "--format", "events", "--catalogue", str(fifo)],
         "pipe.csv: a named pipe (FIFO), not a regular file"),
    ]


@pytest.mark.skipif(not Path("/dev/zero").exists() or not hasattr(os, "mkfifo"),
                    reason="needs /dev/zero and FIFOs")
def test_endless_sources_are_refused_at_once(tmp_path: Path, populated: Path) -> None:
    before = snapshot(populated)
    for args, fragment in _special_files(tmp_path):
        # A child process with a timeout: a regression would hang, not fail.
        res = subprocess.run(
            [sys.executable, "-m", "retailgan", "ingest", *args, "--store", str(populated)],
            capture_output=True, text=True, timeout=120,
        )
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and fragment in res.stderr, res.stderr
    assert snapshot(populated) == before


# -- 12: byte-order mark and bad cells -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_excel_utf8_bom_is_accepted(tmp_path: Path, suffix: str) -> None:
    text = "\r\n".join([HEADER, *RETAIL_LINES]) + "\r\n"  # Excel: BOM and CRLF
    plain, bom = tmp_path / f"plain{suffix}", tmp_path / f"bom{suffix}"
    for path, data in ((plain, text.encode()), (bom, b"\xef\xbb\xbf" + text.encode())):
        path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    stores = [tmp_path / "plain.duckdb", tmp_path / "bom.duckdb"]
    for src, store in zip((plain, bom), stores, strict=True):
        assert cli(src, "--store", store).exit_code == 0
    a, b = (snapshot(s) for s in stores)
    assert a is not None and b is not None
    assert a["events"] == b["events"] and len(a["events"]) == 5
    assert [r[2:] for r in a["rejects"]] == [r[2:] for r in b["rejects"]]  # line, reason, raw


def test_bom_before_the_events_user_column(tmp_path: Path) -> None:
    src = tmp_path / "ev.csv"
    src.write_bytes(b"\xef\xbb\xbfuser,item\r\nu1,i1\r\nu2,i2\r\n")
    res = cli(src, "--format", "events", "--store", tmp_path / "s.duckdb")
    assert res.exit_code == 0, res.output
    with Store.open(tmp_path / "s.duckdb", create=False, read_only=True) as st:
        assert st.con.execute("SELECT user_id FROM events ORDER BY 1").fetchall() == [("u1",), ("u2",)]


def test_a_few_bad_cells_go_to_rejects_with_line_and_column(tmp_path: Path) -> None:
    rows = [GOOD.replace("536365", str(536400 + i)) for i in range(10)]
    rows[2] = rows[2].replace(",6,", ",six,")  # line 4
    rows[4] = rows[4].replace(",2.55,", ",n/a,")  # line 6
    rows[6] = rows[6].replace("2010-12-01 08:26:00", "soon")  # line 8
    rows[8] = rows[8].replace(",6,", ",,")  # line 10: an empty required cell
    store = tmp_path / "s.duckdb"
    res = cli(write_csv(tmp_path / "cells.csv", HEADER, rows), "--store", store,
              "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert rejects(store) == [(4, "invalid_value:Quantity"), (6, "invalid_value:UnitPrice"),
                              (8, "invalid_value:InvoiceDate"), (10, "missing_value:Quantity")]
    report = store_report(store)
    assert (report.rows_in, report.rows_kept, report.new_events) == (10, 6, 6)
    assert report.rejected["invalid_value:Quantity"] == 1


def store_report(store: Path) -> Any:
    with Store.open(store, create=False, read_only=True) as st:
        return st.ingest_reports()[-1]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_bad_cells_of_an_events_file(tmp_path: Path, suffix: str) -> None:
    src = tmp_path / f"ev{suffix}"
    cols = {"user": ["u1", "u2", "u3", "u4"], "item": ["i1", "i2", "i3", "i4"],
            "rating": ["4", "five", "3", "2"], "ts": ["2024-01-01", "2024-01-02", "2024-01-03", "x"]}
    rows = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
    if suffix == ".parquet":  # typed: a NaN rating is the bad cell, the timestamp column is text
        pq.write_table(pa.table({**cols, "rating": pa.array([4.0, float("nan"), 3.0, 2.0])}), src)
    elif suffix == ".jsonl":
        src.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        write_csv(src, "user,item,rating,ts", [",".join(row.values()) for row in rows])
    store = tmp_path / "s.duckdb"
    res = cli(src, "--format", "events", "--store", store)
    assert res.exit_code == 0, res.output
    first = 1 if suffix != ".csv" else 2  # line numbers: records, or lines after the header
    assert rejects(store) == [(first + 1, "invalid_value:rating"), (first + 3, "invalid_value:ts")]


# -- fuzz: corrupt files never crash and never half-write ------------------------------------------


def _retail_slice() -> tuple[bytes, bytes]:
    """The header + lines 2-201 (the populated store) and lines 202-401 (the file to corrupt)."""
    with gzip.open(BUNDLED_RETAIL, "rb") as fh:
        lines = [fh.readline() for _ in range(401)]
    return b"".join(lines[:201]), lines[0] + b"".join(lines[201:])


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    op = rng.choice(["truncate", "flip", "poke", "flip+truncate"])
    for _ in range(rng.randint(1, 4) if op != "truncate" else 0):
        i = rng.randrange(len(b))
        # flip: any bit pattern (mostly invalid UTF-8 / gzip / Parquet); poke: a printable byte,
        # which keeps the text decodable and so reaches the row-level checks.
        b[i] = b[i] ^ rng.randint(1, 255) if op != "poke" else rng.choice(b"0123456789.-,;aZ \"\n")
    if "truncate" in op:
        del b[rng.randrange(len(b)):]
    return bytes(b)


def _check_store(store: Path, before: dict[str, list[tuple[Any, ...]]]) -> None:
    """A successful ingest: every event valid, counts consistent, old rows untouched."""
    with Store.open(store, create=False, read_only=True) as st:
        con = st.con
        report = st.ingest_reports()[-1]
        assert report.rows_in == report.rows_kept + report.rows_rejected
        assert report.after.events == report.before.events + report.new_events
        (n_rej,) = con.execute("SELECT count(*) FROM rejects WHERE ingest_id = ?",
                               [report.ingest_id]).fetchall()[0]
        assert n_rej == report.rows_rejected
        bad = con.execute("""
            SELECT count(*) FROM events WHERE user_id IS NULL OR trim(user_id) = ''
              OR item_id IS NULL OR ts IS NULL OR event_type <> 'purchase'
              OR quantity IS NULL OR price IS NULL OR NOT (quantity > 0 AND price > 0)
              OR NOT isfinite(quantity + price)
        """).fetchall()[0][0]
        assert bad == 0
        assert not any(is_non_product_code(i) for (i,) in con.execute(
            "SELECT DISTINCT item_id FROM events").fetchall())
        keys = con.execute("SELECT count(*), count(DISTINCT event_key) FROM events").fetchall()[0]
        assert keys[0] == keys[1]
        for table in ("events", "rejects", "ingests"):
            old = set(before[table])
            assert old <= set(con.execute(f"SELECT * FROM {table}").fetchall()), table


def test_fuzz_corrupt_sources(tmp_path: Path) -> None:
    base_csv, new_csv = _retail_slice()
    (tmp_path / "base.csv").write_bytes(base_csv)
    pristine = tmp_path / "base.duckdb"
    ingest(pristine, tmp_path / "base.csv")
    before = snapshot(pristine)
    assert before is not None
    table = pacsv.read_csv(io.BytesIO(new_csv), convert_options=pacsv.ConvertOptions(
        column_types={"InvoiceNo": pa.string(), "StockCode": pa.string()}))
    parquet = io.BytesIO()
    pq.write_table(table, parquet)
    sources = {"csv": new_csv, "csv.gz": gzip.compress(new_csv), "parquet": parquet.getvalue()}
    rng = random.Random(15)
    outcomes: dict[str, list[int]] = {kind: [] for kind in sources}
    for kind, data in sources.items():
        for trial in range(25):
            src = tmp_path / f"m{trial}.{kind}"
            src.write_bytes(_mutate(data, rng))
            store = tmp_path / "s.duckdb"
            shutil.copyfile(pristine, store)
            res = cli(src, "--store", store)
            assert res.exit_code in (0, 2), (kind, trial, res.exception, res.output)
            if res.exit_code == 2:
                assert_refused(res, src.name)
                assert snapshot(store) == before, (kind, trial)
            else:
                assert "Traceback" not in res.output
                _check_store(store, before)
            outcomes[kind].append(res.exit_code)
    # Both outcomes occur for the text formats: the test reaches the row checks as well.
    assert {0, 2} <= set(outcomes["csv"]), outcomes
