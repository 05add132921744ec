"""The reference time ("now"): one stray future-dated event must not redefine it.

The scenario is the README's own: a service writes an event stamped with today's date into a
store whose log ends years earlier. Segments, ``--recent-days``, recent sales and the models
trained on the store must be exactly as before.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from retailgan.campaign.build import build_campaign
from retailgan.campaign.query import parse_segment, segment_customers
from retailgan.cli import app
from retailgan.data.dataset import LoadOptions, load_dataset
from retailgan.data.reftime import API_INGEST_ID, parse_as_of, reference_time
from retailgan.data.store import Store
from retailgan.errors import ConfigError
from retailgan.persistence import load_model
from tests.campaign.conftest import shop  # noqa: F401  (fixture)

runner = CliRunner()


def _latest(store) -> datetime:
    with Store.open(store, read_only=True) as s:
        return s.con.execute("SELECT max(ts) FROM events").fetchall()[0][0]


def _add_api_event(store, customer: str, product: str, ts: datetime) -> None:
    """What ``POST /v1/events`` writes (serving.storage.ServiceStore.write_events)."""
    with Store.open(store) as s:
        s.con.execute(
            "INSERT INTO events VALUES (md5_number(?), ?, ?, ?, 'purchase', 1, NULL, NULL, ?)",
            [f"api-{customer}-{product}-{ts}", customer, product, ts, API_INGEST_ID],
        )


@pytest.fixture(scope="module")
def stray(shop, tmp_path_factory):  # noqa: F811
    """A copy of the shop store with purchases stamped today by the service, one by a new customer."""
    store, model = shop
    copy = tmp_path_factory.mktemp("stray") / "shop.duckdb"
    shutil.copy(store, copy)
    today = datetime.now(timezone.utc).replace(tzinfo=None)
    _add_api_event(copy, "C00", "P100", today)
    _add_api_event(copy, "NEW", "P105", today)
    return store, copy, model


def test_parse_as_of():
    assert parse_as_of(None) is None and parse_as_of("  ") is None
    assert parse_as_of("NOW") == "now"
    assert parse_as_of("2011-12-01") == datetime(2011, 12, 1)
    assert parse_as_of("2011-12-01T12:00+01:00") == datetime(2011, 12, 1, 11, 0)  # stored as naive UTC
    with pytest.raises(ConfigError, match="--as-of"):
        parse_as_of("yesterday")


def test_reference_time_rules(stray):
    clean, store, _ = stray
    latest = _latest(clean)
    with Store.open(store, read_only=True) as s:
        ref = s.reference_time()
        assert (ref.ts, ref.rule, ref.ignored) == (latest, "latest ingested event", 2)
        assert "2 event(s) dated after the reference time" in ref.notice()
        assert s.reference_time("now").ignored == 0
        early = latest - timedelta(days=10)
        ref = s.reference_time(early)
        assert ref.ts == early and ref.rule == "as-of"
        n_after = s.con.execute("SELECT count(*) FROM events WHERE ts > ?", [early]).fetchall()[0][0]
        assert ref.ignored == n_after > 2
    with Store.open(clean, read_only=True) as s:
        assert s.reference_time().notice() is None


def test_service_only_store_uses_its_latest_event(tmp_path):
    store = tmp_path / "api.duckdb"
    Store.open(store).close()
    with Store.open(store, read_only=True) as s:
        assert reference_time(s.con).ts is None
    ts = datetime(2020, 5, 1, 12)
    _add_api_event(store, "a", "p", ts)
    with Store.open(store, read_only=True) as s:
        ref = s.reference_time()
    assert (ref.ts, ref.rule, ref.ignored) == (ts, "latest event", 0)


def test_future_event_changes_no_segment_and_no_recent_window(stray):
    clean, store, _ = stray
    for days in (1, 10, 30):
        seg = parse_segment(f"recent:{days}")
        with Store.open(clean, read_only=True) as a, Store.open(store, read_only=True) as b:
            before = segment_customers(a, seg, a.reference_time().ts)
            assert before, "the window must select someone for the test to mean anything"
            assert segment_customers(b, seg, b.reference_time().ts) == before
            assert b.recent_buyers(days) == a.recent_buyers(days)
    # An explicit "now" moves the window to today: only the service's purchases are recent.
    with Store.open(store, read_only=True) as b:
        now = b.reference_time("now").ts
        assert segment_customers(b, parse_segment("recent:1"), now) == ["C00", "NEW"]


def test_future_event_changes_no_campaign(stray, tmp_path):
    clean, store, model = stray
    a = build_campaign(clean, model, tmp_path / "a", segment="recent:30", recent_days=30)
    b = build_campaign(store, model, tmp_path / "b", segment="recent:30", recent_days=30)
    assert a.customers == b.customers > 0
    assert pq.read_table(tmp_path / "a" / "campaign.parquet").equals(pq.read_table(tmp_path / "b" / "campaign.parquet"))
    assert (a.ignored_events, b.ignored_events) == (0, 2)
    assert a.reference_time == b.reference_time == _latest(clean).isoformat()
    # The CLI says what it ignored.
    res = runner.invoke(app, ["campaign", "build", "--store", str(store), "--model-dir", str(model),
                              "--out", str(tmp_path / "c"), "--segment", "recent:30"])
    assert res.exit_code == 0, res.output
    assert "2 event(s) dated after the reference time" in res.output


def test_future_event_changes_no_dataset_and_no_recent_model(stray, tmp_path):
    clean, store, _ = stray
    da, db = load_dataset(clean), load_dataset(store)
    assert (len(da), da.n_users, da.n_items) == (len(db), db.n_users, db.n_items)
    np.testing.assert_array_equal(da.timestamp, db.timestamp)
    # With --as-of now the service's events are part of the data.
    assert "NEW" in load_dataset(store, LoadOptions(as_of="now")).users
    params = '{"base": "pop", "trend_days": 7, "weight": 1.0}'
    for name, st in (("a", clean), ("b", store)):
        res = runner.invoke(app, ["train", "--store", str(st), "--model", "recent", "--params", params,
                                  "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
    ma, mb = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    np.testing.assert_array_equal(ma._recent, mb._recent)
    users = ["C01", "C05", "C30"]
    ra, rb = ma.recommend(users, k=5), mb.recommend(users, k=5)
    np.testing.assert_array_equal(ra.item_ids, rb.item_ids)
    np.testing.assert_allclose(ra.scores, rb.scores)


def test_load_dataset_reports_ignored_events(stray, caplog):
    _, store, _ = stray
    with caplog.at_level(logging.WARNING, logger="retailgan.data"):
        load_dataset(store)
    assert "2 event(s) dated after the reference time" in caplog.text


def test_ingest_rejects_future_dated_rows(tmp_path):
    src = tmp_path / "events.csv"
    src.write_text("customer,sku,ts,action\n"
                   "a,p1,2011-12-01 10:00:00,purchase\n"
                   "b,p2,2099-01-01 00:00:00,purchase\n"
                   "c,p3,2011-12-02 10:00:00,view\n", encoding="utf-8")
    store = tmp_path / "s.duckdb"
    _invoke_ok("ingest", src, "--format", "events", "--store", store, "--user-col", "customer",
               "--item-col", "sku", "--time-col", "ts", "--event-col", "action")
    with Store.open(store, read_only=True) as s:
        (rej,) = s.rejects(reason="future_timestamp")
        assert rej.line == 3 and "2099" in rej.raw
        assert s.reference_time().ts == datetime(2011, 12, 2, 10)


def _invoke_ok(*args) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
