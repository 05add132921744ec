"""A tiny store (two customer groups, two product blocks, two countries) and an EASE model on it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from retailgan.cli import app
from retailgan.data.store import Store
from tests.conftest import write_shop_logs

runner = CliRunner()


@pytest.fixture(scope="session")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    # Spread over ~80 days so that "recent" windows select part of the customers.
    events, products = write_shop_logs(
        root, customers=40, events=1200, products=12, step_s=6000, customer_id=lambda c: f"C{c:02d}",
        title=lambda b, j: f"Mug <b>{b}-{j}</b> & co" if j == 0 else f"Product {b}-{j}",
    )
    store = root / "shop.duckdb"
    res = runner.invoke(app, [
        "ingest", str(events), "--format", "events", "--store", str(store),
        "--user-col", "customer", "--item-col", "sku", "--time-col", "ts", "--event-col", "action",
        "--catalogue", str(products), "--catalogue-item-col", "sku", "--title-col", "name",
        "--category-col", "dept", "--catalogue-price-col", "price",
    ])
    assert res.exit_code == 0, res.output
    with Store.open(store) as s:
        s.con.execute("UPDATE users SET country = CASE WHEN user_id < 'C20' THEN 'United Kingdom' ELSE 'France' END")
    model = root / "ease"
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "ease", "--out", str(model),
                              "--params", '{"l2": 10}'])
    assert res.exit_code == 0, res.output
    return store, model
