"""The generated retail log (benchmarks/retail_log.py) ingests as documented and has structure."""

from __future__ import annotations

import sys

import numpy as np

from retailgan.data.dataset import load_dataset
from retailgan.data.ingest import ingest
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from retail_log import CATALOGUE_MAPPING, DEPARTMENT_WORDS, EVENTS_MAPPING, SIZES, generate


def test_generated_log_ingests_with_catalogue_and_power_law(tmp_path):
    size = SIZES["XS"]
    generate(tmp_path / "log", size)
    again = tmp_path / "again"
    generate(again, size)
    assert (again / "events.parquet").read_bytes() == (tmp_path / "log" / "events.parquet").read_bytes()
    report = ingest(tmp_path / "s.duckdb", tmp_path / "log" / "events.parquet", "events", mapping=EVENTS_MAPPING,
                    catalogue=tmp_path / "log" / "products.csv.gz", catalogue_mapping=CATALOGUE_MAPPING).to_dict()
    assert report["rows_in"] == size.purchases and report["rows_kept"] == size.purchases
    ds = load_dataset(tmp_path / "s.duckdb")
    assert ds.n_users <= size.customers and ds.n_items <= size.products
    info = ds.item_info
    assert all(t and t.split()[0] in DEPARTMENT_WORDS for t in info.titles)  # department word first
    assert len(set(info.categories)) == 4 and np.all(info.prices > 0)
    pop = np.sort(ds.item_popularity())[::-1]
    top_share = pop[: len(pop) // 100 + 1].sum() / pop.sum()
    assert top_share > 0.05  # the top 1 % of products draw well over 1 % of buyers
    activity = np.sort(np.diff(ds.matrix().indptr))[::-1]
    assert activity[: len(activity) // 10].sum() > 0.2 * activity.sum()  # heavy customers
