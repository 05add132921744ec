"""benchmarks/cold_items.py keeps finished rows, resumes and merges result files of one dataset;
benchmarks/content_catalogue.py writes a catalogue that ingest reads as titles;
benchmarks/cold_calibration.py shifts only the new products, on a scale-free unit if asked."""

from __future__ import annotations

import argparse
import gzip
import json
import sys

import numpy as np
import pytest

from retailgan.data.dataset import load_dataset
from retailgan.data.ingest import ingest
from tests.conftest import REPO, write_shop_logs

sys.path.insert(0, str(REPO / "benchmarks"))
import cold_calibration
import cold_items
import content_catalogue


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("coldbench")
    events, products = write_shop_logs(root, customers=60, events=1500, products=30)
    path = root / "shop.duckdb"
    events_cols = {"user": "customer", "item": "sku", "timestamp": "ts", "event_type": "action"}
    ingest(path, events, "events", mapping=events_cols, catalogue=products,
           catalogue_mapping={"item": "sku", "title": "name", "category": "dept", "price": "price"})
    return path


def _args(store, out, seeds, models="pop,contentknn", **kw):
    return argparse.Namespace(store=store, name="shop", seeds=seeds, models=models, trials=0, params=None,
                              json=str(out), command=f"run {seeds}", resume=kw.get("resume", False),
                              merge=kw.get("merge"), tuned=kw.get("tuned"),
                              save_dir=kw.get("save_dir"))


def test_resume_runs_only_missing_rows_and_merge_takes_other_files(store, tmp_path):
    out = tmp_path / "a.json"
    cold_items.run(_args(store, out, "0"))
    first, arrays = cold_items.load_results(out)
    assert set(first["runs"]["pop"]) == {"0"} and (0, "contentknn", "hybrid") in arrays
    cold_items.run(_args(store, out, "0,1", resume=True))
    doc, arrays = cold_items.load_results(out)
    assert set(doc["runs"]["contentknn"]) == {"0", "1"} and doc["seeds"] == [0, 1]
    assert doc["runs"]["contentknn"]["0"] == first["runs"]["contentknn"]["0"]  # kept, not run again
    assert doc["tuned"] == first["tuned"] and len(doc["commands"]) == 2

    other = tmp_path / "b.json"
    cold_items.run(_args(store, other, "1", models="pop", merge=[out]))
    merged, _ = cold_items.load_results(other)
    assert merged["runs"]["pop"]["1"] == doc["runs"]["pop"]["1"] and set(merged["runs"]["contentknn"]) == {"0", "1"}
    text = cold_items.table(out, other)
    assert "| contentknn |" in text and "| 2 |" in text


def test_tuned_settings_are_used_without_a_tuning_run(store, tmp_path):
    out = tmp_path / "a.json"
    cold_items.run(_args(store, out, "0", models="contentknn", tuned=json.dumps({"contentknn": {"text_dim": 8}})))
    doc, _ = cold_items.load_results(out)
    tuned = doc["tuned"]["contentknn"]
    assert tuned["params"] == {"text_dim": 8} and tuned["source"] == "--tuned" and tuned["tune_s"] is None
    assert set(doc["runs"]["contentknn"]) == {"0"}
    assert "| contentknn |" in cold_items.table(out)


def test_merge_refuses_another_dataset(store, tmp_path):
    out = tmp_path / "a.json"
    cold_items.run(_args(store, out, "0", models="pop"))
    doc = json.loads(out.read_text())
    doc["dataset"] = "elsewhere"
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match="dataset"):
        cold_items.table(out, tmp_path / "b.json")


def test_content_catalogue_titles_reach_the_store(tmp_path):
    folder = tmp_path / "beauty"
    folder.mkdir()
    (folder / "Beauty_item2attributes.json").write_text(json.dumps({"1": [7, 3], "2": [3], "3": [9]}))
    with gzip.open(folder / "Beauty.txt.gz", "wt") as f:
        f.write("1 1 2 3\n2 2 3\n")
    rows = content_catalogue.beauty(folder)
    assert rows[0] == ("1", "attr7 attr3", "7")
    cat = tmp_path / "cat.csv"
    sys.argv = ["content_catalogue.py", "amazon-beauty", str(folder), str(cat)]
    content_catalogue.main()
    ingest(tmp_path / "s.duckdb", folder / "Beauty.txt.gz", "amazon-s3rec", catalogue=cat,
           catalogue_mapping={"item": "item_id", "title": "title", "category": "category"})
    ds = load_dataset(tmp_path / "s.duckdb")
    titles = dict(zip(ds.items.ids, ds.item_info.titles, strict=True))
    assert titles["1"] == "attr7 attr3" and titles["3"] == "attr9"


def test_versus_table_pairs_featgan_with_every_row_on_common_seeds():
    def run(c, w, h):
        return {"views": {"cold": {"ndcg@20": c}, "warm": {"ndcg@20": w}, "hybrid": {"ndcg@20": h}}}

    doc = {"runs": {"pop": {"0": run(0.1, 0.1, 0.1), "1": run(0.2, 0.1, 0.1), "2": run(0.3, 0.1, 0.1)},
                    "featgan": {"0": run(0.2, 0.1, 0.0), "1": run(0.4, 0.1, 0.2)}}}
    doc["summary"] = {"pop": {}, "featgan": {}}
    lines = cold_items.versus_table(doc)
    assert lines[0] == "| view | pop |"
    cold, warm, hybrid = lines[2:]
    # Seeds 0 and 1 only (featgan has no seed 2): +0.1 and +0.2, both ahead.
    assert cold.startswith("| cold | +0.1500 (p ") and cold.endswith(", 2/2) |")
    assert warm == "| warm | +0.0000 (0/2) |"  # no difference: no test
    assert hybrid.startswith("| hybrid | +0.0000 (p ") and hybrid.endswith("1/2) |")
    assert cold_items.versus_table({"runs": {"pop": {}}, "summary": {"pop": {}}}) == []


def test_a_shift_moves_only_new_products_and_z_units_ignore_the_score_scale():
    class Scores:
        def score_users(self, users):
            return np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])[users]

    new = np.array([True, False, False, False])
    users = np.array([0, 1])
    z = cold_calibration.Shifted(Scores(), 1.0, new, "z").score_users(users)
    expected = (np.array([1.0, 2.0, 3.0, 4.0]) - 2.5) / np.std([1.0, 2.0, 3.0, 4.0]) + [1.0, 0, 0, 0]
    assert np.allclose(z, [expected, expected])  # one shift means the same for both customers
    absolute = cold_calibration.Shifted(Scores(), 1.0, new).score_users(users)
    assert absolute.tolist() == [[2.0, 2.0, 3.0, 4.0], [11.0, 20.0, 30.0, 40.0]]


def test_calibration_names_a_row_missing_from_the_tuned_file(store, tmp_path, monkeypatch):
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"tuned": {"bpr": {"params": {}}}}))
    monkeypatch.setattr(sys, "argv", ["cold_calibration.py", "--store", str(store), "--model", "clcrec",
                                      "--tuned-from", str(tuned)])
    with pytest.raises(SystemExit, match="no tuned settings for 'clcrec' \\(it has: bpr\\)"):
        cold_calibration.main()


def test_saved_rows_score_again_with_shifts_without_a_refit(store, tmp_path, monkeypatch):
    out, models = tmp_path / "a.json", tmp_path / "models"
    cold_items.run(_args(store, out, "0", models="contentknn", save_dir=models))
    doc, _ = cold_items.load_results(out)
    shifted = tmp_path / "shift.json"
    monkeypatch.setattr(sys, "argv", ["cold_calibration.py", "--store", str(store), "--model", "contentknn",
                                      "--part", "test", "--seeds", "0", "--shifts", "0,1", "--units", "z",
                                      "--load-dir", str(models / "contentknn"), "--json", str(shifted)])
    cold_calibration.main()
    rows = json.loads(shifted.read_text())["test"]["0"]["shifts"]
    run = doc["runs"]["contentknn"]["0"]["views"]
    # Shift 0 in z units keeps every customer's order: the saved model gives the run's figures.
    for view in ("cold", "warm", "hybrid"):
        assert rows["0.0"][view]["ndcg@20"] == pytest.approx(run[view]["ndcg@20"], abs=1e-12)
    assert rows["1.0"]["cold"]["ndcg@20"] == pytest.approx(run["cold"]["ndcg@20"], abs=1e-12)


def test_gather_makes_a_shift_file_from_validation_and_shifted_rows(tmp_path):
    views = {v: {"recall@20": 0.1, "ndcg@20": x, "n_users": 5}
             for v, x in (("cold", 0.3), ("warm", 0.2), ("hybrid", 0.25))}
    val = {"validation": {"0": {"shifts": {"0.0": {"hybrid": {"ndcg@20": 0.1}}, "0.3": {"hybrid": {"ndcg@20": 0.2}}}}}}
    rows = {"tuned": {"featgan": {"params": {"cold_shift": 0.3}}},
            "runs": {"featgan": {"0": {"views": views}, "1": {"views": views}}}}
    (tmp_path / "v.json").write_text(json.dumps(val))
    (tmp_path / "r.json").write_text(json.dumps(rows))
    doc = cold_calibration.gather(tmp_path / "v.json", tmp_path / "r.json", "featgan")
    assert doc["validation"] == val["validation"] and set(doc["test"]) == {"0", "1"}
    assert doc["test"]["1"]["shifts"]["0.3"]["hybrid"]["ndcg@20"] == 0.25
    (tmp_path / "g.json").write_text(json.dumps(doc))
    line = cold_calibration.table([tmp_path / "g.json"]).splitlines()[2]
    assert line.startswith("| featgan | 0.3 (abs) | 0.2000 |  | 0.2500 ± 0.0000 | 2 |")
    with pytest.raises(SystemExit, match="no 'gar' rows"):
        cold_calibration.gather(tmp_path / "v.json", tmp_path / "r.json", "gar")
