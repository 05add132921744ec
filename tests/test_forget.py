"""A customer's request to be forgotten: afterwards no trace of their id in the store file, the
model files, the campaign outputs or the service; an audit record without the id remains."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retailgan.cli import BUNDLED_RETAIL, app
from retailgan.data.store import Store

runner = CliRunner()
LINES = 25_000


def _invoke(*args: str) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def _files_with(root: Path, needle: bytes) -> list[str]:
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [str(p) for p in paths if needle in p.read_bytes()]


def _sql_hits(store: Path, customer: str) -> dict[str, int]:
    """Rows of every table with a text column equal to, or containing, the id."""
    hits = {}
    with Store.open(store, read_only=True) as s:
        cols = s.con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE data_type IN ('VARCHAR', 'JSON') "
            "AND database_name = current_database() AND schema_name = 'main' AND NOT internal"
        ).fetchall()
        for table, col in cols:
            n = s.con.execute(f'SELECT count(*) FROM "{table}" WHERE contains("{col}"::VARCHAR, ?)',
                              [customer]).fetchall()[0][0]
            if n:
                hits[f"{table}.{col}"] = int(n)
    return hits


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A slice of Online Retail ingested, EASE and iALS trained, a campaign built, and a customer
    who has events and rejected (cancelled) rows, renamed to a distinctive id."""
    root = tmp_path_factory.mktemp("forget")
    with gzip.open(BUNDLED_RETAIL, "rt", encoding="utf-8", newline="") as fh:
        head = [next(fh) for _ in range(LINES)]
    rows = list(csv.DictReader(io.StringIO("".join(head))))
    cid = sorted({r["CustomerID"] for r in rows if r["InvoiceNo"].startswith("C") and r["CustomerID"]})[0]
    # A numeric id can also occur by chance where DuckDB stores other strings back to back (product
    # codes, say), so the byte searches look for a distinctive id the customer is renamed to.
    customer = f"ZQ{cid.removesuffix('.0')}X"
    src = root / "retail.csv"
    src.write_text("".join(head).replace(f",{cid},", f",{customer},"), encoding="utf-8")
    store = root / "retail.duckdb"
    _invoke("ingest", src, "--store", store)
    _invoke("train", "--store", store, "--model", "ease", "--params", '{"l2": 50}', "--out", root / "ease")
    _invoke("train", "--store", store, "--model", "ials", "--params", '{"factors": 8, "epochs": 3}',
            "--out", root / "ials")
    _invoke("campaign", "build", "--store", store, "--model-dir", root / "ease", "--out", root / "campaign",
            "--k", "5")
    return root, customer


def test_forget_leaves_no_trace(shop, tmp_path):
    src_root, customer = shop
    root = tmp_path / "shop"
    shutil.copytree(src_root, root)
    store, places = root / "retail.duckdb", [root / "ease", root / "ials", root / "campaign"]
    needle = customer.encode()
    # The searches can see the customer before: they mean something afterwards.
    assert {"events.user_id", "users.user_id", "rejects.raw"} <= set(_sql_hits(store, customer))
    assert _files_with(store, needle)
    for p in places:
        assert _files_with(p, needle), p
    out = _invoke("forget", "--store", store, "--customer", customer, "--customer", "no-such-customer",
                  "--model-dir", root / "ease", "--model-dir", root / "ials", "--campaign-dir", root / "campaign",
                  "--reference", "ticket-42", "--json", root / "audit.json")
    assert "erased 2 customer(s)" in out
    assert _sql_hits(store, customer) == {}
    assert _files_with(store, needle) == []
    for p in places:
        assert _files_with(p, needle) == [], p
    audit = json.loads((root / "audit.json").read_text())
    assert audit["reference"] == "ticket-42" and audit["customers"] == 2
    assert audit["store"]["events"] > 0 and audit["store"]["users"] == 1 and audit["store"]["rejects"] > 0
    assert set(audit["models"].values()) == {1} and audit["campaigns"] == {str(root / "campaign"): 5}
    assert customer not in (root / "audit.json").read_text()
    with Store.open(store, read_only=True) as s:
        (rec,) = s.con.execute("SELECT reference, customers, report FROM erasures").fetchall()
    assert rec[:2] == ("ticket-42", 2) and json.loads(rec[2])["erasure_id"] == audit["erasure_id"]
    # Everything still works, and the customer is a stranger now.
    from retailgan.persistence import load_model

    assert not load_model(root / "ease").recommend([customer], k=3).known.any()
    _invoke("forget", "--store", store, "--customer", customer)  # again: harmless
    with Store.open(store, read_only=True) as s:
        assert s.con.execute("SELECT count(*) FROM erasures").fetchall()[0][0] == 2


def test_forget_refuses_before_changing_anything(shop, tmp_path):
    src_root, customer = shop
    store = tmp_path / "retail.duckdb"
    shutil.copy(src_root / "retail.duckdb", store)
    before = store.read_bytes()
    res = runner.invoke(app, ["forget", "--store", str(store), "--customer", customer,
                              "--model-dir", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "no such model directory" in res.output
    assert store.read_bytes() == before
    res = runner.invoke(app, ["forget", "--store", str(store), "--customer", "  "])
    assert res.exit_code == 2 and "non-empty customer id" in res.output


def test_service_forgets_a_customer(shop, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from retailgan.serving.app import create_app
    from retailgan.serving.settings import Settings

    src_root, customer = shop
    root = tmp_path / "svc"
    root.mkdir()
    shutil.copy(src_root / "retail.duckdb", root / "retail.duckdb")
    shutil.copytree(src_root / "ease", root / "ease")
    settings = Settings(model_dir=root / "ease", store=root / "retail.duckdb", auth=False)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/recommendations", json={"customer_id": customer, "k": 3})
        assert r.status_code == 200 and r.json()["known_customer"]
        product = r.json()["items"][0]["product_id"]
        r = client.post("/v1/events", json={"events": [{"customer_id": customer, "product_id": product,
                                                        "event_type": "view"}]})
        assert r.status_code == 201
        r = client.post("/admin/customers/forget", json={"customer_ids": [" \t "]})  # blank once trimmed
        assert r.status_code == 422
        r = client.post("/admin/customers/forget", json={"customer_ids": ["\u001f"]})  # an odd id, but an id
        assert r.status_code == 200 and r.json()["store"]["events"] == 0
        r = client.post("/admin/customers/forget", json={"customer_ids": [customer], "reference": "t-7"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert customer not in r.text
        assert body["service"]["foldin_customers"] == 1 and body["store"]["events"] > 0
        assert body["models"] == {str(root / "ease"): 1}
        r = client.post("/v1/recommendations", json={"customer_id": customer, "k": 3})
        assert r.status_code == 200 and not r.json()["known_customer"]
        assert client.get(f"/v1/customers/{customer}/history").status_code == 404
        # The service still takes events and answers for everyone else.
        assert client.post("/v1/events", json={"events": [{"customer_id": "someone-new", "product_id": product,
                                                          "event_type": "view"}]}).status_code == 201
        assert client.get("/readyz").status_code == 200
    assert _files_with(root, customer.encode()) == []
