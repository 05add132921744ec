"""A product added to the catalogue after training, with no sales, is recommended by a cold-start
model from its content: through ``retailgan recommend --store`` and the service."""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from retailgan.cli import app as cli
from retailgan.data.store import Store
from retailgan.serving import Settings, create_app
from tests.serving.conftest import USER_KEY, fit

TINY = {"factors": 8, "bpr_lr": 0.05, "bpr_reg": 0.05, "bpr_epochs": 30, "text_dim": 8, "hidden": 32,
        "lr": 0.01, "batch_size": 256, "epochs": 10, "out_dim": 16}
NEW = [("N0", "Product 0-77", "dept0", 3.5), ("N1", "Product 1-77", "dept1", 3.5)]
"""Two products launched after training: one in each block's department (customer C0 buys in dept0)."""


@pytest.fixture(scope="module")
def launched(built, tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    store = root / "shop.duckdb"
    shutil.copy(built["store"], store)
    model_dir = fit(store, "dropoutnet", root / "dropoutnet", **TINY)
    with Store.open(store) as st, st.transaction() as con:
        for row in NEW:
            con.execute("INSERT INTO items VALUES (?, ?, ?, ?)", list(row))
    return store, model_dir


def _check(ids: list[str]) -> None:
    assert "N0" in ids, ids  # the new product of the customer's department is on the list ...
    assert "N1" not in ids or ids.index("N0") < ids.index("N1")  # ... above the other department's


def test_recommend_cli_adds_catalogue_products_without_sales(launched):
    store, model_dir = launched
    runner = CliRunner()
    res = runner.invoke(cli, ["recommend", "--model-dir", str(model_dir), "--user", "C0", "--k", "10", "--json"])
    assert res.exit_code == 0, res.output
    assert not {"N0", "N1"} & {it["product_id"] for it in json.loads(res.output)[0]["items"]}
    res = runner.invoke(cli, ["recommend", "--model-dir", str(model_dir), "--store", str(store), "--user", "C0",
                              "--k", "10", "--json"])
    assert res.exit_code == 0, res.output
    items = json.loads(res.output)[0]["items"]
    _check([it["product_id"] for it in items])
    assert next(it for it in items if it["product_id"] == "N0")["title"] == "Product 0-77"



def test_recommend_batch_adds_catalogue_products_without_sales(launched, tmp_path):
    import pyarrow.parquet as pq

    store, model_dir = launched
    out = tmp_path / "recs.parquet"
    res = CliRunner().invoke(cli, ["recommend", "--model-dir", str(model_dir), "--store", str(store),
                                   "--segment", "ids:C0", "--out", str(out), "--k", "10"])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(out).to_pylist()
    _check([r["product_id"] for r in sorted(rows, key=lambda r: r["rank"])])


def test_service_adds_catalogue_products_without_sales(launched, built):
    store, model_dir = launched
    app = create_app(Settings(model_dir=model_dir, store=store, keys_file=built["keys"]))
    with TestClient(app) as c:
        out = c.post("/v1/recommendations", json={"customer_id": "C0", "k": 10}, headers={"X-API-Key": USER_KEY})
        assert out.status_code == 200, out.text
        assert out.json()["strategy"] == "model"
        _check([it["product_id"] for it in out.json()["items"]])
