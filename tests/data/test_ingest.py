"""Ingestion: readers, every cleaning rule with exact counts, idempotency, appends, bad input
(message contents + store unchanged), and the real UCI Online Retail file."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import retailgan.data.ingest.write as ingest_write
from retailgan.data.ingest import (
    FORMATS,
    NON_PRODUCT_CODES,
    IngestReport,
    ingest,
    is_non_product_code,
)
from retailgan.data.store import TABLES, Store
from retailgan.errors import ConfigError, IngestError, StoreError
from tests.conftest import BUNDLED_RETAIL, shared

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"

# Line number -> expected fate. Every cleaning rule of the online-retail format appears.
RETAIL_LINES = [
    # line 2: kept
    "536365,85123A,WHITE HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    # line 3: exact duplicate of line 2
    "536365,85123A,WHITE HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    # line 4: purchase cancelled by line 5
    '536366,22633,"HAND WARMER, UNION JACK",6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom',
    # line 5: cancellation (matches line 4)
    'C536379,22633,"HAND WARMER, UNION JACK",-6,2010-12-01 09:41:00,1.85,17850.0,United Kingdom',
    # line 6: cancellation without a matching purchase
    "C536380,84406B,CUPID HANGER,-3,2010-12-01 09:45:00,2.75,13047.0,United Kingdom",
    # line 7: no customer
    "536367,84879,BIRD ORNAMENT,32,2010-12-01 08:34:00,1.69,,United Kingdom",
    # line 8, 9: non-product codes
    "536368,POST,POSTAGE,3,2010-12-01 08:45:00,18.00,12583.0,France",
    "536369,gift_0001_20,Dotcomgiftshop Gift Voucher £20.00,1,2010-12-01 08:46:00,17.02,12583.0,France",
    # line 10: negative quantity on a normal invoice (an adjustment)
    "536370,22728,ALARM CLOCK,-2,2010-12-01 09:00:00,3.75,12583.0,France",
    # line 11: zero price
    "536371,22629,SPACEBOY LUNCH BOX,24,2010-12-01 09:01:00,0,12583.0,France",
    # line 12: kept; empty description filled from line 11
    "536372,22629,,12,2010-12-01 09:02:00,1.95,12583.0,France",
    # line 13: kept; same item as line 2 with another description
    "536373,85123A,WHITE HANGING HEART,6,2010-12-01 09:05:00,2.95,17850.0,United Kingdom",
    # lines 14-17: two purchases, one cancellation (cancels the later one: line 15), a purchase after
    "536374,21730,LANTERN,4,2010-12-01 10:00:00,4.25,14000.0,Germany",
    "536375,21730,LANTERN,4,2010-12-01 11:00:00,4.25,14000.0,Germany",
    "C536376,21730,LANTERN,-4,2010-12-01 12:00:00,4.25,14000.0,Germany",
    "536377,21730,LANTERN,4,2010-12-01 13:00:00,4.25,14000.0,Germany",
]
RETAIL_REJECTS = {
    3: "duplicate", 4: "cancelled_purchase", 5: "cancellation", 6: "cancellation",
    7: "missing_customer", 8: "non_product_code", 9: "non_product_code",
    10: "non_positive_quantity", 11: "non_positive_price", 15: "cancelled_purchase",
    16: "cancellation",
}  # fmt: skip
RETAIL_COUNTS = {
    "duplicate": 1, "cancellation": 3, "missing_customer": 1, "non_product_code": 2,
    "non_positive_quantity": 1, "non_positive_price": 1, "cancelled_purchase": 2,
}  # fmt: skip


def write_csv(path: Path, header: str | None, lines: list[str]) -> Path:
    text = "\n".join(([header] if header is not None else []) + lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]] | None:
    """Every row of every table (sorted), or None when there is no store file."""
    if not path.exists():
        return None
    with Store.open(path, create=False, read_only=True) as store:
        return {t: store.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}


def events(path: Path, cols: str = "user_id, item_id, ts, event_type, quantity, price, rating"):
    with Store.open(path, create=False, read_only=True) as store:
        return store.con.execute(f"SELECT {cols} FROM events ORDER BY ALL").fetchall()


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with Store.open(path, create=False, read_only=True) as store:
        return store.con.execute(sql).fetchall()


@pytest.fixture
def retail_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "retail.csv", HEADER, RETAIL_LINES)


@pytest.fixture
def populated(tmp_path: Path, retail_csv: Path) -> Path:
    """A store with one successful ingest in it."""
    store = tmp_path / "pop.duckdb"
    ingest(store, retail_csv)
    return store


# -- online-retail rules ----------------------------------------------------------------------


def test_online_retail_every_rule(tmp_path: Path, retail_csv: Path) -> None:
    store = tmp_path / "s.duckdb"
    report = ingest(store, retail_csv)
    assert report.rows_in == 16
    assert report.rejected == RETAIL_COUNTS
    assert list(report.rejected) == list(RETAIL_COUNTS)  # rule priority order
    assert report.rows_rejected == 11
    assert report.rows_kept == report.new_events == 5
    assert report.info == {"description_filled": 1, "cancellations_matched": 2}
    assert report.before.model_dump() == {"users": 0, "items": 0, "events": 0}
    assert report.after.model_dump() == {"users": 3, "items": 3, "events": 5}
    assert (report.new_users, report.new_items, report.already_present) == (3, 3, 0)
    assert query(store, "SELECT line, reason FROM rejects ORDER BY line") == sorted(
        RETAIL_REJECTS.items()
    )
    assert events(store) == [
        ("12583", "22629", datetime(2010, 12, 1, 9, 2), "purchase", 12.0, 1.95, None),
        ("14000", "21730", datetime(2010, 12, 1, 10, 0), "purchase", 4.0, 4.25, None),
        ("14000", "21730", datetime(2010, 12, 1, 13, 0), "purchase", 4.0, 4.25, None),
        ("17850", "85123A", datetime(2010, 12, 1, 8, 26), "purchase", 6.0, 2.55, None),
        ("17850", "85123A", datetime(2010, 12, 1, 9, 5), "purchase", 6.0, 2.95, None),
    ]
    # Title: most frequent kept description (tie -> alphabetical); price: median of kept rows.
    assert query(store, "SELECT * FROM items ORDER BY item_id") == [
        ("21730", "LANTERN", None, 4.25),
        ("22629", "SPACEBOY LUNCH BOX", None, 1.95),
        ("85123A", "WHITE HANGING HEART", None, 2.75),
    ]
    assert query(store, "SELECT * FROM users ORDER BY user_id") == [
        ("12583", "France"), ("14000", "Germany"), ("17850", "United Kingdom"),
    ]
    raw = json.loads(query(store, "SELECT raw FROM rejects WHERE line = 5")[0][0])
    assert raw == {"InvoiceNo": "C536379", "StockCode": "22633",
                   "Description": "HAND WARMER, UNION JACK", "Quantity": "-6",
                   "InvoiceDate": "2010-12-01 09:41:00", "UnitPrice": "1.85",
                   "CustomerID": "17850.0", "Country": "United Kingdom"}
    assert query(store, "SELECT value FROM meta WHERE key = 'dataset_name'") == [("online-retail",)]


def test_report_is_json_and_stored(tmp_path: Path, retail_csv: Path) -> None:
    store = tmp_path / "s.duckdb"
    report = ingest(store, retail_csv)
    again = IngestReport.model_validate_json(json.dumps(report.to_dict()))
    assert again == report
    stored = query(store, "SELECT ingest_id, source, format, sha256, report FROM ingests")
    assert stored[0][:4] == (1, str(retail_csv), "online-retail",
                             hashlib.sha256(retail_csv.read_bytes()).hexdigest())
    assert IngestReport.model_validate_json(stored[0][4]) == report
    md = report.to_markdown()
    assert "| read | 16 |" in md and "| · cancelled_purchase | 2 |" in md
    from rich.console import Console

    console = Console(record=True, width=100)
    console.print(report.to_table())
    assert "cancelled_purchase" in console.export_text()


def test_non_product_code_rule() -> None:
    for code in ["POST", "DOT", "M", "m", "C2", "D", "S", "B", "CRUK", "PADS", "BANK CHARGES",
                 "AMAZONFEE", "gift_0001_40", "DCGS0003", "DCGSSBOY", " post "]:
        assert is_non_product_code(code), code
    for code in ["85123A", "22633", "84406B", "15056bl", "DOTS", "POSTER"]:
        assert not is_non_product_code(code), code
    assert "BANK CHARGES" in NON_PRODUCT_CODES


def test_mapping_for_renamed_online_retail_columns(tmp_path: Path) -> None:
    header = HEADER.replace("InvoiceNo", "Invoice").replace("CustomerID", "Customer ID")
    src = write_csv(tmp_path / "r2.csv", header, RETAIL_LINES)
    report = ingest(tmp_path / "s.duckdb", src,
                    mapping={"InvoiceNo": "Invoice", "CustomerID": "Customer ID"})
    assert report.rejected == RETAIL_COUNTS


def lifo_reference(rows: list[tuple[int, str, int, int, bool]]) -> set[int]:
    """Lines of cancelled purchases: (line, customer, qty, time, is_cancellation), one stock code."""
    stacks: dict[tuple[str, int], list[int]] = defaultdict(list)
    out = set()
    for line, cust, q, _t, is_c in sorted(rows, key=lambda r: (r[3], r[0])):
        if not is_c:
            stacks[cust, q].append(line)
        elif stacks[cust, q]:
            out.add(stacks[cust, q].pop())
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["1", "2"]), st.sampled_from([1, 2]),
                          st.integers(0, 5), st.booleans()), min_size=1, max_size=14))
def test_cancellation_matching_is_lifo(tmp_path_factory: pytest.TempPathFactory,
                                       rows: list[tuple[str, int, int, bool]]) -> None:
    """The set-based matching equals a sequential stack simulation (ties: by line)."""
    tmp = tmp_path_factory.mktemp("lifo")
    lines, ref_rows = [], []
    for i, (cust, q, t, is_c) in enumerate(rows):
        inv = f"C{600000 + i}" if is_c else str(500000 + i)
        lines.append(f"{inv},22633,WARMER,{-q if is_c else q},2011-01-01 10:0{t}:00,1.5,{cust},UK")
        ref_rows.append((i + 2, cust, q, t, is_c))
    store = tmp / "s.duckdb"
    ingest(store, write_csv(tmp / "r.csv", HEADER, lines))
    got = {r[0] for r in query(store, "SELECT line FROM rejects WHERE reason = 'cancelled_purchase'")}
    assert got == lifo_reference(ref_rows)


# -- readers ------------------------------------------------------------------------------------

EVENT_ROWS = [
    {"user": "u1", "item": "i1", "timestamp": "2024-01-01T10:00:00", "event_type": "view",
     "quantity": None, "price": None},
    {"user": "u1", "item": "i2", "timestamp": "2024-01-01T11:00:00", "event_type": "purchase",
     "quantity": 2.0, "price": 9.5},
    {"user": "u2", "item": "i1", "timestamp": "2024-01-02T08:30:00", "event_type": "cart",
     "quantity": 1.0, "price": 3.25},
]
EXPECTED_EVENTS = [
    ("u1", "i1", datetime(2024, 1, 1, 10), "view", None, None, None),
    ("u1", "i2", datetime(2024, 1, 1, 11), "purchase", 2.0, 9.5, None),
    ("u2", "i1", datetime(2024, 1, 2, 8, 30), "cart", 1.0, 3.25, None),
]


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def write_events(path: Path, rows: list[dict[str, Any]] = EVENT_ROWS) -> Path:
    name = path.name
    if name.endswith(".parquet"):
        table = pa.table({
            "user": [r["user"] for r in rows], "item": [r["item"] for r in rows],
            "timestamp": pa.array([datetime.fromisoformat(r["timestamp"]) for r in rows],
                                  pa.timestamp("us")),
            "event_type": [r["event_type"] for r in rows],
            "quantity": pa.array([r["quantity"] for r in rows], pa.float64()),
            "price": pa.array([r["price"] for r in rows], pa.float64()),
        })
        pq.write_table(table, path)
    elif ".jsonl" in name:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if name.endswith(".gz"):
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text)
    else:
        sep = "\t" if ".tsv" in name else ","
        write_csv(path, sep.join(rows[0]), [sep.join(_cell(v) for v in r.values()) for r in rows])
    return path


@pytest.mark.parametrize("name", ["ev.csv", "ev.csv.gz", "ev.tsv", "ev.parquet", "ev.jsonl",
                                  "ev.jsonl.gz"])
def test_readers_give_identical_events(tmp_path: Path, name: str) -> None:
    store = tmp_path / "s.duckdb"
    report = ingest(store, write_events(tmp_path / name), "events")
    assert (report.rows_in, report.rows_kept, report.new_events) == (3, 3, 3)
    assert events(store) == EXPECTED_EVENTS
    assert report.notes == []
    # The event key depends on content only: another file type with the same rows adds nothing.
    other = "other.jsonl" if name == "ev.csv" else "other.csv"
    again = ingest(store, write_events(tmp_path / other), "events")
    assert not again.skipped
    assert (again.new_events, again.already_present) == (0, 3)


def test_event_key_definition(tmp_path: Path) -> None:
    """event_key = the md5 digest, read as a little-endian 128-bit unsigned integer, of the
    \\x1f-joined fields (NULL = empty)."""
    store = tmp_path / "s.duckdb"
    ingest(store, write_events(tmp_path / "ev.csv", EVENT_ROWS[1:2]), "events")
    payload = "\x1f".join(["u1", "i2", "2024-01-01 11:00:00", "purchase", "2.0", "9.5", "", ""])
    key = int.from_bytes(hashlib.md5(payload.encode()).digest(), "little")
    assert query(store, "SELECT event_key, typeof(event_key) FROM events") == [(key, "UHUGEINT")]


def test_events_table_has_no_index(tmp_path: Path) -> None:
    """Uniqueness of event_key is the ingest's job (dedupe + anti-join), not an ART index's."""
    store = tmp_path / "s.duckdb"
    ingest(store, write_events(tmp_path / "ev.csv"), "events")
    assert query(store, "SELECT constraint_type FROM duckdb_constraints() "
                        "WHERE table_name = 'events' AND constraint_type <> 'NOT NULL'") == []
    assert query(store, "SELECT index_name FROM duckdb_indexes() WHERE table_name = 'events'") == []


def test_events_are_stored_in_customer_order_and_histories_read_as_before(tmp_path: Path) -> None:
    """Each ingest writes its events sorted by customer (so that DuckDB's zonemaps skip the other
    customers' row groups); a customer's history is what the events say, whatever the file order."""
    import random

    from retailgan.serving.storage import ServiceStore

    rng = random.Random(0)
    rows = [{"user": f"c{rng.randrange(40)}", "item": f"p{rng.randrange(30)}",
             "timestamp": f"2024-01-{1 + n // 1000:02d} {n // 60 % 24:02d}:{n % 60:02d}:00",
             "event_type": rng.choice(["view", "cart", "purchase"]), "quantity": None, "price": None}
            for n in range(3000)]
    rng.shuffle(rows)
    store = tmp_path / "s.duckdb"
    ingest(store, write_events(tmp_path / "a.csv", rows[:2000]), "events")
    ingest(store, write_events(tmp_path / "b.csv", rows[1500:]), "events")  # overlaps the first
    stored = query(store, "SELECT ingest_id, user_id FROM events ORDER BY rowid")
    for ingest_id in (1, 2):
        users = [u for i, u in stored if i == ingest_id]
        assert users and users == sorted(users)
    by_customer: dict[str, list[tuple[str, str, datetime]]] = defaultdict(list)
    for r in rows:
        by_customer[r["user"]].append((r["item"], r["event_type"], datetime.fromisoformat(r["timestamp"])))
    svc = ServiceStore(store)
    try:
        for customer, evs in sorted(by_customer.items()):
            want = sorted(evs, key=lambda e: (-e[2].timestamp(), e[0]))[:25]
            got = svc.history(customer, 25)
            assert [(i, t, ts) for i, t, ts, _ in got] == want
    finally:
        svc.close()


_ROW = st.tuples(st.sampled_from(["u1", "u2", " u3 ", "4.0", "4"]), st.sampled_from(["i1", "i2"]),
                 st.sampled_from(["view", "cart", "purchase"]),
                 st.sampled_from(["", "1", "2.5"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.lists(_ROW, min_size=1, max_size=12), min_size=1, max_size=4))
def test_overlapping_files_store_each_event_once(tmp_path: Path, files: list[list[tuple]]) -> None:
    """Any sequence of overlapping files (with in-file duplicates, and ids that normalise to the
    same value) leaves every distinct event exactly once, and the reports add up."""
    folder = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    store = folder / "s.duckdb"
    seen: set[tuple[str, str, str, float | None]] = set()
    for n, rows in enumerate(files):
        src = write_csv(folder / f"f{n}.csv", "user,item,event_type,quantity",
                        [",".join(r) for r in rows])
        report = ingest(store, src, "events", options={"force": True})
        distinct = {(u.strip().removesuffix(".0"), i, t, float(q) if q else None)
                    for u, i, t, q in rows}
        assert report.rejected["duplicate"] == len(rows) - len(distinct)
        assert report.new_events == len(distinct - seen)
        assert report.already_present == len(distinct & seen)
        seen |= distinct
    assert query(store, "SELECT count(*), count(DISTINCT event_key) FROM events") == [
        (len(seen), len(seen))
    ]
    assert set(events(store, "user_id, item_id, event_type, quantity")) == seen


def test_line_numbers_note_when_file_has_blank_lines(tmp_path: Path) -> None:
    src = tmp_path / "ev.csv"
    src.write_text("user,item\nu1,i1\n\nu2,i2\n")
    report = ingest(tmp_path / "s.duckdb", src, "events")
    assert report.rows_in == 2
    assert any("blank lines" in n for n in report.notes)


# -- events format ------------------------------------------------------------------------------


def test_events_mapping_rules_and_types(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "log.csv", "customer,sku,when,kind,qty,amount,eid", [
        " 17850.0 ,i1,2024-01-01T10:00:00Z,VIEW,,,a",                 # 2 kept (id normalised)
        "u2,i1,2024-01-01T12:00:00+02:00,click,,,b",                  # 3 kept via alias, UTC
        "u2,i2,1704103200,add_to_cart,1,5,c",                         # 4 kept, unix seconds
        "u2,i2,1704103200.5,purchase,1,5,d",                          # 5 kept, fractional
        "u3,i3,2024-01-05,purchase,1,5,e",                            # 6 kept, date only
        ",i1,2024-01-01,view,,,f",                                    # 7 missing_user
        "u4,,2024-01-01,view,,,g",                                    # 8 missing_item
        "u4,i1,,view,,,h",                                            # 9 missing_timestamp
        "u4,i1,2024-01-01,wishlist,,,i",                              # 10 unknown_event_type
        "u4,i1,2024-01-01,,,,j",                                      # 11 unknown_event_type
        "u4,i1,2024-01-01,purchase,0,5,k",                            # 12 non_positive_quantity
        "u4,i1,2024-01-01,purchase,1,-5,l",                           # 13 negative_price
        "u4,i1,2024-01-01,rating,,,m",                                # 14 missing_rating
        " 17850.0 ,i1,2024-01-01T10:00:00Z,VIEW,,,a",                 # 15 duplicate of line 2
        " 17850.0 ,i1,2024-01-01T10:00:00Z,VIEW,,,z",                 # 16 kept: other event id
    ])
    mapping = {"user": "customer", "item": "sku", "timestamp": "when", "event_type": "kind",
               "quantity": "qty", "price": "amount", "event_id": "eid"}
    store = tmp_path / "s.duckdb"
    report = ingest(store, src, "events", mapping=mapping,
                    options={"event_type_aliases": {"Click": "view", "add_to_cart": "cart"}})
    assert report.rejected == {
        "missing_user": 1, "missing_item": 1, "missing_timestamp": 1, "unknown_event_type": 2,
        "missing_rating": 1, "non_positive_quantity": 1, "negative_price": 1, "duplicate": 1,
    }
    assert report.rows_kept == 6
    assert query(store, "SELECT line, reason FROM rejects ORDER BY line") == [
        (7, "missing_user"), (8, "missing_item"), (9, "missing_timestamp"),
        (10, "unknown_event_type"), (11, "unknown_event_type"), (12, "non_positive_quantity"),
        (13, "negative_price"), (14, "missing_rating"), (15, "duplicate"),
    ]
    assert events(store, "user_id, item_id, ts, event_type") == [
        ("17850", "i1", datetime(2024, 1, 1, 10), "view"),
        ("17850", "i1", datetime(2024, 1, 1, 10), "view"),
        ("u2", "i1", datetime(2024, 1, 1, 10), "view"),
        ("u2", "i2", datetime(2024, 1, 1, 10), "cart"),
        ("u2", "i2", datetime(2024, 1, 1, 10, 0, 0, 500000), "purchase"),
        ("u3", "i3", datetime(2024, 1, 5), "purchase"),
    ]
    assert query(store, "SELECT item_id, price FROM items ORDER BY 1") == [
        ("i1", None), ("i2", 5.0), ("i3", 5.0),
    ]


def test_only_unparsable_cells_count_towards_refusing_a_file(tmp_path: Path) -> None:
    # 2 of 5 rows have a cell that does not parse, 2 more break a rule: the file is below the
    # "more than half bad" refusal (rule rejects are not bad cells), and all 4 are rejects.
    src = write_csv(tmp_path / "log.csv", "user,item,time,qty", [
        "u1,i1,2024-01-01,1",          # 2 kept
        "u2,i1,not a time,1",          # 3 invalid_value:time
        "u3,i1,2024-01-01,x",          # 4 invalid_value:qty
        ",i1,2024-01-01,1",            # 5 missing_user
        "u4,i1,2024-01-01,0",          # 6 non_positive_quantity
    ])
    store = tmp_path / "s.duckdb"
    report = ingest(store, src, "events", mapping={"timestamp": "time"})
    assert report.rows_kept == 1 and report.rows_rejected == 4
    assert query(store, "SELECT line, reason FROM rejects ORDER BY line") == [
        (3, "invalid_value:time"), (4, "invalid_value:qty"), (5, "missing_user"),
        (6, "non_positive_quantity"),
    ]
    # Two more unparsable cells make 4 of 7: refused, naming the first one.
    worse = write_csv(tmp_path / "worse.csv", "user,item,time,qty",
                      [*src.read_text().splitlines()[1:], "u5,i1,2024-01-01,?", "u6,i1,?,1"])
    with pytest.raises(IngestError) as err:
        ingest(tmp_path / "t.duckdb", worse, "events", mapping={"timestamp": "time"})
    assert (err.value.line, err.value.column) == (3, "time")
    assert "4 of 7 rows have wrong or missing values" in str(err.value)


def test_clean_file_writes_no_rejects(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "log.csv", "user,item", ["u1,i1", "u2,i2"])
    store = tmp_path / "s.duckdb"
    report = ingest(store, src, "events")
    assert (report.rows_kept, report.rows_rejected) == (2, 0)
    assert query(store, "SELECT count(*) FROM rejects") == [(0,)]
    assert query(store, "SELECT count(*) FROM events") == [(2,)]


def test_events_defaults_and_timestamp_format(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "r.csv", "user_id,item_id,time,rating",
                    ["1,10,01/02/2024 10:00,4", "2,10,02/02/2024 11:30,3.5"])
    store = tmp_path / "s.duckdb"
    report = ingest(store, src, "events", options={"timestamp_format": "%d/%m/%Y %H:%M"})
    assert report.rows_kept == 2
    assert events(store) == [
        ("1", "10", datetime(2024, 2, 1, 10), "rating", None, None, 4.0),
        ("2", "10", datetime(2024, 2, 2, 11, 30), "rating", None, None, 3.5),
    ]
    src2 = write_csv(tmp_path / "p.csv", "user,item", ["a,x"])
    ingest(store, src2, "events")
    assert ("a", "x", None, "purchase", None, None, None) in events(store)


def test_parquet_typed_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({
        "customer": pa.array([17850.0, 12.0, None]), "sku": pa.array([1, 2, 3], pa.int64()),
        "t": pa.array([1704103200, 1704103260, 1704103320], pa.int64()),
    }), path)
    store = tmp_path / "s.duckdb"
    report = ingest(store, path, "events", mapping={"user": "customer", "item": "sku",
                                                    "timestamp": "t"})
    assert report.rejected["missing_user"] == 1
    assert query(store, "SELECT line FROM rejects") == [(3,)]  # Parquet: 1-based row number
    assert events(store, "user_id, item_id, ts") == [
        ("12", "2", datetime(2024, 1, 1, 10, 1)), ("17850", "1", datetime(2024, 1, 1, 10, 0)),
    ]


def test_catalogue_and_item_upsert(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    ingest(store, write_csv(tmp_path / "a.csv", "user,item", ["u1,i1", "u1,i2"]), "events")
    assert query(store, "SELECT * FROM items ORDER BY 1") == [("i1", None, None, None),
                                                             ("i2", None, None, None)]
    cat = write_csv(tmp_path / "cat.csv", "sku,name,cat,cost",
                    ["i1,Lamp,home,9.5", "i3,Mug,kitchen,", "i1,Lamp again,x,1"])
    report = ingest(store, write_csv(tmp_path / "b.csv", "user,item", ["u2,i1"]), "events",
                    catalogue=cat,
                    catalogue_mapping={"item": "sku", "title": "name", "category": "cat",
                                       "price": "cost"})
    assert (report.new_items, report.updated_items, report.new_events) == (1, 1, 1)
    assert query(store, "SELECT * FROM items ORDER BY 1") == [
        ("i1", "Lamp", "home", 9.5), ("i2", None, None, None), ("i3", "Mug", "kitchen", None),
    ]
    # Existing values are kept: a later catalogue cannot overwrite them.
    cat2 = write_csv(tmp_path / "cat2.csv", "item,title", ["i1,Other lamp", "i2,Cup"])
    report = ingest(store, write_csv(tmp_path / "c.csv", "user,item", ["u3,i9"]), "events",
                    catalogue=cat2)
    assert report.updated_items == 1
    assert query(store, "SELECT item_id, title FROM items ORDER BY 1") == [
        ("i1", "Lamp"), ("i2", "Cup"), ("i3", "Mug"), ("i9", None),
    ]


# -- idempotency and appends ----------------------------------------------------------------------


def test_same_file_twice_is_a_no_op(tmp_path: Path, retail_csv: Path) -> None:
    store = tmp_path / "s.duckdb"
    first = ingest(store, retail_csv)
    before = snapshot(store)
    copy = shutil.copy(retail_csv, tmp_path / "renamed.csv")  # same bytes, other name
    for src in (retail_csv, Path(copy)):
        again = ingest(store, src)
        assert again.skipped and again.ingest_id is None
        assert "ingest #1" in (again.skipped_reason or "")
        assert again.new_events == 0 and again.after == first.after
        assert snapshot(store) == before


def test_forced_reingest_adds_no_events(tmp_path: Path, retail_csv: Path) -> None:
    store = tmp_path / "s.duckdb"
    ingest(store, retail_csv)
    again = ingest(store, retail_csv, options={"force": True})
    assert again.ingest_id == 2
    assert (again.new_events, again.already_present, again.rows_kept) == (0, 5, 5)
    assert again.after.events == 5
    assert query(store, "SELECT ingest_id, count(*) FROM rejects GROUP BY 1 ORDER BY 1") == [
        (1, 11), (2, 11),
    ]


def test_append_inserts_only_new_events(tmp_path: Path, retail_csv: Path) -> None:
    store = tmp_path / "s.duckdb"
    ingest(store, retail_csv)
    newer = write_csv(tmp_path / "day2.csv", HEADER, [
        RETAIL_LINES[0],  # already in the store
        "536400,85123A,WHITE HEART,12,2010-12-02 08:00:00,2.55,17850.0,United Kingdom",
        "536401,10002,NEW PRODUCT,1,2010-12-02 09:00:00,0.85,99999.0,Spain",
        "536402,10002,NEW PRODUCT,1,2010-12-02 09:00:00,0.85,,Spain",
    ])
    report = ingest(store, newer)
    assert (report.rows_in, report.rows_kept, report.new_events, report.already_present) == (4, 3, 2, 1)
    assert (report.new_users, report.new_items) == (1, 1)
    assert report.before.events == 5 and report.after.events == 7
    assert query(store, "SELECT ingest_id, line, reason FROM rejects WHERE ingest_id = 2") == [
        (2, 5, "missing_customer"),
    ]


# -- bad input: message contents, store unchanged ---------------------------------------------------


def _bad_cases(tmp: Path) -> list[tuple[str, Path, str, dict[str, Any], list[str]]]:
    def retail(name: str, lines: list[str], header: str = HEADER) -> Path:
        return write_csv(tmp / name, header, lines)

    good = RETAIL_LINES[0]
    # Mostly bad cells: a wrong column, not bad rows (a few bad cells go to rejects instead).
    qty_abc = [good] * 2 + [good.replace(",6,", ",abc,")] * 3  # the first bad row is line 4
    trunc = tmp / "trunc.csv.gz"
    full = gzip.compress(("\n".join([HEADER, *RETAIL_LINES * 400]) + "\n").encode())
    trunc.write_bytes(full[: len(full) // 2])
    notgz = tmp / "plain.csv.gz"
    notgz.write_text(HEADER + "\n" + good + "\n")
    wrong_pq = tmp / "typed.parquet"
    pq.write_table(pa.table({"user": ["a"], "item": ["b"],
                             "quantity": pa.array([datetime(2024, 1, 1).date()])}), wrong_pq)
    jsonl = tmp / "bad.jsonl"
    jsonl.write_text('{"user": "a", "item": "b", "price": 1}\n{"user": "a", "item": "c", "price": "dear"}\n'
                     '{"user": "a", "item": "d", "price": "cheap"}\n')
    broken_json = tmp / "broken.jsonl"
    broken_json.write_text('{"user": "a", "item": "b"}\n{"user": "a", "item": "c"}\n{"user": "a", "item":\n')
    latin = tmp / "latin.csv"
    latin.write_bytes("user,item\nu1,i1\nu2,caf\xe9\n".encode("latin-1"))
    empty_gz = tmp / "empty.csv.gz"
    empty_gz.write_bytes(gzip.compress(b""))
    (tmp / "empty.csv").write_bytes(b"")
    no_cust = HEADER.replace(",CustomerID", "")
    return [
        ("missing column", retail("nocust.csv", [",".join([*good.split(",")[:6], "UK"])], no_cust),
         "online-retail", {}, ["nocust.csv", "missing column 'CustomerID'",
                               "the file has: InvoiceNo, StockCode, Description, Quantity"]),
        ("misnamed column", retail("renamed.csv", [good], HEADER.replace("CustomerID", "Customer ID")),
         "online-retail", {}, ["renamed.csv", "line 1", "missing column 'CustomerID'",
                               "did you mean 'Customer ID'?", "Customer ID, Country"]),
        ("mapped column absent", write_events(tmp / "ev.csv"), "events",
         {"mapping": {"user": "customer"}},
         ["ev.csv", "missing column 'customer'", "the file has: user, item, timestamp"]),
        ("no user column", write_csv(tmp / "nouser.csv", "who,item", ["a,b"]), "events", {},
         ["nouser.csv", "no user column: name it with --user-col COLUMN", "the file has: who, item"]),
        ("another format", retail("retail.csv", [good]), "movielens-100k", {},
         ["retail.csv", "looks like online-retail data: try --format online-retail"]),
        ("events as online-retail", write_events(tmp / "clicks.csv"), "online-retail", {},
         ["clicks.csv", "missing column", "try --format events"]),
        ("wrong type", retail("qty.csv", qty_abc), "online-retail", {},
         ["qty.csv", "line 4", "column Quantity", "'abc' is not a number", "3 of 5 rows"]),
        ("bad timestamp", retail("date.csv", [good, *[good.replace("2010-12-01 08:26:00", "yesterday")] * 2]),
         "online-retail", {}, ["date.csv", "line 3", "column InvoiceDate", "'yesterday'"]),
        ("empty required value", retail("nodate.csv", [good.replace("2010-12-01 08:26:00", "")]),
         "online-retail", {}, ["nodate.csv", "line 2", "column InvoiceDate", "empty value"]),
        ("wrong type jsonl", jsonl, "events", {},
         ["bad.jsonl", "line 2", "column price", "'dear' is not a number"]),
        ("wrong parquet type", wrong_pq, "events", {},
         ["typed.parquet", "column quantity", "has type DATE, expected a number"]),
        ("malformed jsonl", broken_json, "events", {}, ["broken.jsonl", "line 4", "Malformed JSON"]),
        ("not utf-8", latin, "events", {},
         ["latin.csv", "line 3", "malformed CSV", "unicode", "'encoding': 'latin-1'"]),
        ("malformed csv", write_csv(tmp / "ragged.csv", "user,item", ["a,b", "c,d", "e"]), "events", {},
         ["ragged.csv", "line 4", "malformed CSV", "Expected Number of Columns: 2 Found: 1"]),
        ("empty file", tmp / "empty.csv", "online-retail", {}, ["empty.csv", "file is empty"]),
        ("empty gzip", empty_gz, "online-retail", {}, ["empty.csv.gz", "file is empty"]),
        ("header only", retail("header.csv", []), "online-retail", {},
         ["header.csv", "no data rows"]),
        ("truncated gzip", trunc, "online-retail", {}, ["trunc.csv.gz", "truncated or corrupt gzip"]),
        ("not gzip", notgz, "online-retail", {}, ["plain.csv.gz", "gzip"]),
        ("unknown format", retail("ok.csv", [good]), "xml", {},
         ["ok.csv", "unknown format 'xml'", ", ".join(FORMATS)]),
        ("missing path", tmp / "absent.csv", "online-retail", {},
         ["absent.csv", "no such file or directory"]),
        ("unsupported extension", retail("book.xlsx", [good]), "events", {},
         ["book.xlsx", "unsupported file type"]),
    ]


BAD_IDS = [  # the names of _bad_cases (which needs a tmp_path to build its files)
    "missing column", "misnamed column", "mapped column absent", "no user column", "another format",
    "events as online-retail", "wrong type",
    "bad timestamp", "empty required value", "wrong type jsonl", "wrong parquet type",
    "malformed jsonl", "not utf-8", "malformed csv", "empty file", "empty gzip", "header only",
    "truncated gzip", "not gzip", "unknown format", "missing path", "unsupported extension",
]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_names_the_problem_and_leaves_store_unchanged(
    tmp_path: Path, populated: Path, case: str
) -> None:
    cases = {c[0]: c[1:] for c in _bad_cases(tmp_path)}
    src, fmt, kwargs, fragments = cases[case]
    before = snapshot(populated)
    with pytest.raises(IngestError) as err:
        ingest(populated, src, fmt, **kwargs)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert snapshot(populated) == before


@pytest.mark.parametrize("case", ["wrong type", "missing column", "truncated gzip"])
def test_failed_first_ingest_leaves_no_store(tmp_path: Path, case: str) -> None:
    cases = {c[0]: c[1:] for c in _bad_cases(tmp_path)}
    src, fmt, kwargs, _ = cases[case]
    store = tmp_path / "new.duckdb"
    with pytest.raises(IngestError):
        ingest(store, src, fmt, **kwargs)
    assert not store.exists() and not Path(f"{store}.wal").exists()


def test_wrong_type_error_carries_location(tmp_path: Path) -> None:
    cases = {c[0]: c[1:] for c in _bad_cases(tmp_path)}
    src, fmt, _, _ = cases["wrong type"]
    with pytest.raises(IngestError) as err:
        ingest(tmp_path / "s.duckdb", src, fmt)
    assert (err.value.path, err.value.line, err.value.column) == (str(src), 4, "Quantity")
    assert str(err.value) == (
        f"{src}: line 4, column Quantity: 'abc' is not a number (3 of 5 rows have wrong or "
        "missing values, too many to reject row by row; this is the first)"
    )


def test_store_that_is_not_a_database(tmp_path: Path, retail_csv: Path) -> None:
    store = tmp_path / "x.duckdb"
    store.write_text("this is a text file, not a database\n")
    before = store.read_bytes()
    with pytest.raises(StoreError) as err:
        ingest(store, retail_csv)
    assert str(err.value) == f"{store} is not a retailgan store (not a DuckDB database)"
    assert store.read_bytes() == before


def test_error_inside_the_transaction_rolls_back(
    tmp_path: Path, populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(populated)
    newer = write_csv(tmp_path / "new.csv", HEADER, [
        "536400,85123A,WHITE HEART,12,2010-12-02 08:00:00,2.55,17850.0,United Kingdom",
        "536401,10002,NEW,1,2010-12-02 09:00:00,0.85,,Spain",
    ])

    def boom(**_: Any) -> IngestReport:
        raise RuntimeError("disk full")  # after rejects, events, items, users were written

    monkeypatch.setattr(ingest_write, "IngestReport", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(populated, newer)
    assert snapshot(populated) == before


def test_invalid_arguments(tmp_path: Path, retail_csv: Path) -> None:
    with pytest.raises(ConfigError, match="unknown mapping key"):
        ingest(tmp_path / "s.duckdb", retail_csv, "events", mapping={"usr": "x"})
    with pytest.raises(ConfigError, match="takes no column mapping"):
        ingest(tmp_path / "s.duckdb", retail_csv, "rechorus", mapping={"user": "x"})
    with pytest.raises(ConfigError, match="invalid ingest options"):
        ingest(tmp_path / "s.duckdb", retail_csv, options={"forse": True})
    with pytest.raises(ConfigError, match="takes no catalogue"):
        ingest(tmp_path / "s.duckdb", retail_csv, catalogue=retail_csv)
    assert not (tmp_path / "s.duckdb").exists()


# -- other formats (small hand-made files) --------------------------------------------------------


def test_movielens_format(tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t5\t881250950\n2\t11\t1\t881250951\n")
    flags = ["0"] * 19
    drama = flags.copy()
    drama[8] = drama[14] = "1"  # Drama, Romance
    (folder / "u.item").write_bytes(
        ("10|Café (1995)|01-Jan-1995||http://x|" + "|".join(drama) + "\n"
         "11|Nothing (1996)|01-Jan-1996||http://y|" + "|".join(flags) + "\n").encode("latin-1"))
    store = tmp_path / "s.duckdb"
    report = ingest(store, folder, "movielens-100k")
    assert (report.rows_in, report.rows_kept) == (3, 3)
    assert events(store)[0] == ("1", "10", datetime(1997, 12, 4, 15, 55, 49), "rating", None,
                                None, 4.0)
    assert query(store, "SELECT * FROM items ORDER BY 1") == [
        ("10", "Café (1995)", "Drama", None), ("11", "Nothing (1996)", None, None),
    ]


def test_rechorus_format(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", "user_id\titem_id\ttime", ["1\t3\t965779200", "2\t4\t965779300"])
    write_csv(tmp_path / "item_meta.csv", "item_id\ti_category\tr_complement",
              ["3\t0\t[4]", "4\t12\t[]", "5\t7\t[]"])
    store = tmp_path / "s.duckdb"
    report = ingest(store, tmp_path, "rechorus")
    assert report.rows_kept == 2 and report.after.items == 3
    assert query(store, "SELECT * FROM items ORDER BY 1") == [
        ("3", None, None, None), ("4", None, "12", None), ("5", None, "7", None),
    ]
    assert events(store, "user_id, ts, event_type")[0] == ("1", datetime(2000, 8, 9), "purchase")


def test_s3rec_format(tmp_path: Path) -> None:
    seq = tmp_path / "Toys.txt"
    seq.write_text("1 5 6 7\n2 6  8\n3\n")
    (tmp_path / "Toys_item2attributes.json").write_text('{"5": [3, 1], "6": [2], "7": [], "8": [9]}')
    store = tmp_path / "s.duckdb"
    report = ingest(store, seq, "amazon-s3rec")
    assert (report.rows_in, report.rows_kept) == (5, 5)
    assert report.info == {"sequences": 3}
    assert events(store, "user_id, item_id, ts") == [
        ("1", "5", datetime(1970, 1, 1, 0, 0, 1)), ("1", "6", datetime(1970, 1, 1, 0, 0, 2)),
        ("1", "7", datetime(1970, 1, 1, 0, 0, 3)), ("2", "6", datetime(1970, 1, 1, 0, 0, 1)),
        ("2", "8", datetime(1970, 1, 1, 0, 0, 2)),
    ]
    assert query(store, "SELECT item_id, category FROM items ORDER BY 1") == [
        ("5", "3"), ("6", "2"), ("7", None), ("8", "9"),
    ]
    assert query(store, "SELECT value FROM meta WHERE key = 'dataset_name'") == [
        ("amazon-s3rec-toys",)
    ]


# -- the real UCI Online Retail file ------------------------------------------------------------

RETAIL_MEASURED = {
    "duplicate": 5_269, "cancellation": 9_251, "missing_customer": 134_658,
    "non_product_code": 1_549, "non_positive_quantity": 0, "non_positive_price": 33,
    "cancelled_purchase": 2_818,
}  # fmt: skip


@pytest.fixture(scope="module")
def real_retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IngestReport]:
    store = tmp_path_factory.mktemp("real") / "retail.duckdb"
    return store, ingest(store, BUNDLED_RETAIL)


def test_real_online_retail_counts(real_retail: tuple[Path, IngestReport]) -> None:
    store, report = real_retail
    assert report.rows_in == 541_909
    assert report.rejected == RETAIL_MEASURED
    assert report.rows_kept == report.new_events == 388_331
    assert report.rows_kept + report.rows_rejected == 541_909
    assert report.info == {"description_filled": 1_342, "cancellations_matched": 2_882}
    assert report.after.model_dump() == {"users": 4_324, "items": 3_645, "events": 388_331}
    # Cross-checks against the README's measurements, through the kept rejects' raw rows.
    (c_rows, no_cust, qty_le0, price_le0, typical, qty_sum, customers, codes) = query(store, """
        WITH r AS (SELECT raw->>'InvoiceNo' AS inv, raw->>'CustomerID' AS cust,
                          CAST(raw->>'Quantity' AS DOUBLE) AS q, raw->>'StockCode' AS code,
                          CAST(raw->>'UnitPrice' AS DOUBLE) AS p FROM rejects)
        SELECT count(*) FILTER (inv LIKE 'C%'), count(*) FILTER (cust IS NULL),
               count(*) FILTER (q <= 0), count(*) FILTER (p <= 0),
               count(*) FILTER (cust IS NOT NULL AND inv NOT LIKE 'C%' AND q > 0 AND p > 0)
                   + (SELECT count(*) FROM events),
               sum(q) + (SELECT sum(quantity) FROM events),
               (SELECT count(DISTINCT c) FROM (SELECT replace(cust, '.0', '') AS c FROM r
                                                UNION ALL SELECT user_id FROM events) WHERE c IS NOT NULL),
               (SELECT count(DISTINCT c) FROM (SELECT code AS c FROM r UNION ALL SELECT item_id FROM events))
        FROM r
    """)[0]
    assert (c_rows, no_cust, qty_le0, price_le0) == (9_288, 135_080, 10_624, 2_517)
    assert typical == 397_884
    assert qty_sum == 5_176_450
    assert (customers, codes) == (4_372, 4_070)


def test_real_online_retail_line_numbers(real_retail: tuple[Path, IngestReport]) -> None:
    """Every reject's line holds exactly its raw row (checked against the decompressed file)."""
    store, _ = real_retail
    rejects = dict(query(store, "SELECT line, raw FROM rejects"))
    with gzip.open(BUNDLED_RETAIL, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        checked = 0
        for line, row in enumerate(reader, start=2):
            raw = rejects.get(line)
            if raw is not None:
                assert json.loads(raw) == {k: (v or None) for k, v in zip(header, row, strict=True)}
                checked += 1
    assert checked == len(rejects) == 153_578


def test_real_online_retail_reingest_is_a_no_op(real_retail: tuple[Path, IngestReport]) -> None:
    store, report = real_retail
    before = snapshot(store)
    again = ingest(store, BUNDLED_RETAIL)
    assert again.skipped and again.after == report.after
    assert snapshot(store) == before


def test_real_non_product_codes_are_complete() -> None:
    """Every stock code that is not 5 digits (+ letters) is caught, and only those."""
    codes = [c for (c,) in duckdb.sql(
        f"SELECT DISTINCT StockCode FROM read_csv('{BUNDLED_RETAIL}', all_varchar = true)"
    ).fetchall()]
    import re

    for code in codes:
        assert is_non_product_code(code) == (re.fullmatch(r"[0-9]{5}[A-Za-z]*", code) is None), code


# -- shared datasets (skipped when ../shared/data is absent) ------------------------------------------


def test_shared_movielens(tmp_path: Path) -> None:
    folder = shared("movielens-100k")
    store = tmp_path / "ml.duckdb"
    report = ingest(store, folder, "movielens-100k")
    assert (report.rows_in, report.rows_kept) == (100_000, 100_000)
    assert report.after.model_dump() == {"users": 943, "items": 1_682, "events": 100_000}
    assert query(store, "SELECT rating, count(*) FROM events GROUP BY 1 ORDER BY 1") == [
        (1.0, 6_110), (2.0, 11_370), (3.0, 27_145), (4.0, 34_174), (5.0, 21_201),
    ]
    assert query(store, "SELECT min(ts), max(ts) FROM events") == [
        (datetime(1997, 9, 20, 3, 5, 10), datetime(1998, 4, 22, 23, 10, 38))
    ]
    assert query(store, "SELECT title, category FROM items WHERE item_id = '1'") == [
        ("Toy Story (1995)", "Animation")
    ]


def test_shared_rechorus(tmp_path: Path) -> None:
    folder = shared("amazon-grocery-rechorus")
    store = tmp_path / "g.duckdb"
    report = ingest(store, folder, "rechorus")
    assert report.rows_kept == 121_892
    assert report.after.model_dump() == {"users": 14_681, "items": 8_713, "events": 121_892}
    assert query(store, "SELECT count(DISTINCT item_id) FROM events") == [(8_687,)]
    assert query(store, "SELECT count(category), count(DISTINCT category) FROM items") == [(364, 56)]


def test_shared_s3rec(tmp_path: Path) -> None:
    seqs = shared("amazon-beauty-s3rec", "Beauty.txt.gz")
    store = tmp_path / "b.duckdb"
    report = ingest(store, seqs, "amazon-s3rec")
    assert report.rows_kept == 198_502
    assert report.after.model_dump() == {"users": 22_363, "items": 12_101, "events": 198_502}
    assert query(store, "SELECT count(category) FROM items") == [(12_101,)]
