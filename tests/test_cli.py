"""The command line end to end on small generated logs: ingest, info, compare, tune, train, recommend."""

from __future__ import annotations

import json
import re
import sys

import pytest
from typer.testing import CliRunner

from retailgan.cli import app
from tests.conftest import write_shop_logs

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with two customer groups buying from two product blocks over time."""
    root = tmp_path_factory.mktemp("cli")
    events, products = write_shop_logs(root, customers=60, events=1500, products=15)
    path = root / "shop.duckdb"
    res = runner.invoke(app, [
        "ingest", str(events), "--format", "events", "--store", str(path),
        "--user-col", "customer", "--item-col", "sku", "--time-col", "ts", "--event-col", "action",
        "--catalogue", str(products), "--catalogue-item-col", "sku", "--title-col", "name",
        "--category-col", "dept", "--catalogue-price-col", "price", "--json", str(root / "ingest.json"),
    ])
    assert res.exit_code == 0, res.output
    return path


def test_ingest_report_and_info(store):
    report = json.loads((store.parent / "ingest.json").read_text())
    assert report["rows_in"] == 1500
    res = runner.invoke(app, ["info", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert "events" in res.output


def test_ingest_force_reads_an_ingested_file_again(tmp_path):
    events, _ = write_shop_logs(tmp_path, customers=5, events=40, products=3)
    args = ["ingest", str(events), "--format", "events", "--store", str(tmp_path / "s.duckdb"),
            "--user-col", "customer", "--item-col", "sku", "--time-col", "ts", "--event-col", "action"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, [*args, "--json", str(tmp_path / "again.json")])
    assert again.exit_code == 0 and "--force re-reads it" in again.output
    assert json.loads((tmp_path / "again.json").read_text())["skipped"]
    forced = runner.invoke(app, [*args, "--force", "--json", str(tmp_path / "forced.json")])
    assert forced.exit_code == 0, forced.output
    report = json.loads((tmp_path / "forced.json").read_text())
    assert not report["skipped"] and report["rows_in"] == 40 and report["new_events"] == 0


def test_compare_writes_json_table_plot_report(store, tmp_path):
    out = tmp_path / "c.json"
    res = runner.invoke(app, [
        "compare", "--store", str(store), "--protocol", "random", "--models", "pop,ease,itemknn",
        "--k", "5,10", "--seed", "1", "--json", str(out), "--plot", str(tmp_path / "c.png"),
        "--report", str(tmp_path / "r.md"), "--tune-trials", "2", "--save-dir", str(tmp_path / "models"),
    ])
    assert res.exit_code == 0, res.output
    assert "| model | ndcg@5" in res.stdout
    # Progress on stderr, a line per step, with the time spent (and left, where the steps are alike).
    assert "compare: model 3/3 done, itemknn: test ndcg@10" in res.stderr
    trial = r"  tune ease: trial 2/2 done, validation ndcg@10 [\d.]+ \(best [\d.]+\); \d+ s elapsed"
    assert re.search(trial, res.stderr)
    doc = json.loads(out.read_text())
    assert doc["dataset"] and doc["protocol"] == "random" and doc["seed"] == 1
    names = [r["model"] for r in doc["results"]]
    assert names == ["pop", "ease", "itemknn"]
    for r in doc["results"]:
        assert {"ndcg@10", "recall@10", "precision@5", "map@10", "mrr@10", "hitrate@10", "coverage@5",
                "novelty@5", "ild@5", "revenue@5"} <= set(r["metrics"])
        assert {"fit_s", "eval_s"} <= set(r["timings"])
        assert 0.0 <= r["metrics"]["ndcg@10"] <= 1.0
    # Group structure is learnable: personalised models beat popularity.
    by = {r["model"]: r["metrics"]["ndcg@10"] for r in doc["results"]}
    assert by["ease"] > by["pop"]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Paired comparison" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "models" / "ease" / "model.json").exists()


def test_train_then_recommend_shows_titles(store, tmp_path):
    model_dir = tmp_path / "ease"
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "ease", "--out", str(model_dir),
                              "--params", '{"l2": 10}', "--json", str(tmp_path / "train.json")])
    assert res.exit_code == 0, res.output
    trained = json.loads((tmp_path / "train.json").read_text())
    assert trained["params"]["l2"] == 10 and trained["users"] == 60
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--user", "C0", "--user", "nobody",
                              "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.output)
    assert [(r["customer_id"], r["known_customer"]) for r in recs] == [("C0", True), ("nobody", False)]
    assert len(recs[0]["items"]) == 3
    assert recs[0]["items"][0]["title"].startswith("Product ")
    assert recs[0]["items"][0]["price"] is not None
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--user", "C0", "--k", "3"])
    assert res.exit_code == 0 and "Product" in res.output


def test_train_shows_only_what_validation_chose(store, tmp_path):
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "ials", "--out", str(tmp_path / "ials"),
                              "--params", '{"factors": 4, "epochs": 3}'])
    assert res.exit_code == 0, res.output
    chosen = res.output.split("chosen on validation: ")[1].split(" (")[0]
    assert list(json.loads(chosen)) == ["epochs"]  # the early-stopped epoch count, not every parameter
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "ease", "--out", str(tmp_path / "ease")])
    assert res.exit_code == 0 and "chosen on validation" not in res.output
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "ease", "--out", str(tmp_path / "tuned"),
                              "--tune-trials", "2"])
    chosen = res.output.split("chosen on validation: ")[1].split(" (")[0]
    assert list(json.loads(chosen)) == ["l2"]


def test_recommend_suggests_the_known_id_an_unknown_one_is_close_to(store, tmp_path):
    model_dir = tmp_path / "ease"
    assert runner.invoke(app, ["train", "--store", str(store), "--out", str(model_dir)]).exit_code == 0
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--user", "c0.0", "--json"])
    assert res.exit_code == 0 and "did you mean C0?" in res.stderr
    assert json.loads(res.stdout)[0]["known_customer"] is False


def test_tune_command(store, tmp_path):
    res = runner.invoke(app, ["tune", "--store", str(store), "--model", "ease", "--trials", "3",
                              "--protocol", "random", "--json", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "t.json").read_text())
    assert len(doc["trials"]) == 3 and "l2" in doc["best_params"]
    # Fixed parameters stay in every trial.
    res = runner.invoke(app, ["tune", "--store", str(store), "--model", "ials", "--trials", "2", "--protocol",
                              "random", "--params", '{"factors": 4}', "--json", str(tmp_path / "f.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["fixed"] == {"factors": 4} and doc["best_params"]["factors"] == 4
    assert all(t["params"].get("factors", 4) == 4 for t in doc["trials"])
    res = runner.invoke(app, ["tune", "--store", str(store), "--model", "ease", "--params", "[1]"])
    assert res.exit_code != 0 and "--params must be a JSON object" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "--protocol", "sideways"], "unknown protocol"),
        (["compare", "--models", "pop,gpt"], "unknown model 'gpt'"),
        (["compare", "--k", "ten"], "--k must be"),
        (["compare", "--params", "{bad"], "--params is not valid JSON"),
        (["compare", "--event-weights", "view"], "--event-weights"),
        (["recommend", "--model-dir", "/nonexistent/model", "--user", "1"], "no such model directory"),
    ],
)
def test_bad_arguments_give_one_clear_error(store, args, message):
    if args[0] == "compare":
        args = [*args, "--store", str(store)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_featgan_with_a_faiss_index_needs_the_ann_extra_before_training(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu were not installed
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "featgan", "--out", str(tmp_path / "fg"),
                              "--params", '{"index": "hnsw"}'])
    assert res.exit_code == 2
    assert "pip install 'retailgan[ann]'" in res.output and "pip install -e '.[ann]'" in res.output
    assert not (tmp_path / "fg").exists()


def test_serve_without_the_serve_extra_names_it(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    res = runner.invoke(app, ["serve", "--model-dir", str(tmp_path), "--store", str(store), "--no-auth"])
    assert res.exit_code == 2 and "pip install 'retailgan[serve]'" in res.output


def test_compare_on_missing_store(tmp_path):
    res = runner.invoke(app, ["compare", "--store", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2
    assert "none.duckdb" in res.output
    assert not (tmp_path / "none.duckdb").exists()


DATA_PARALLEL = {
    "cfgan": {"mode": "user", "g_hidden": 32, "d_hidden": 16, "lr_g": 0.01, "lr_d": 0.01, "batch_size": 16,
              "batch_size_d": 16, "epochs": 4, "patience": 4},
    "featgan": {"emb_dim": 16, "hidden": 32, "noise_dim": 4, "text_dim": 8, "collab_dim": 4, "batch_size": 16,
                "epochs": 3, "patience": 3},
}


@pytest.mark.parametrize("name", list(DATA_PARALLEL))
def test_train_data_parallel_on_two_processes(name, store, tmp_path):
    model_dir = tmp_path / name
    params = DATA_PARALLEL[name]
    res = runner.invoke(app, ["train", "--store", str(store), "--model", name, "--out", str(model_dir),
                              "--params", json.dumps(params), "--protocol", "random", "--nproc", "2",
                              "--json", str(tmp_path / "train.json")])
    assert res.exit_code == 0, res.output
    trained = json.loads((tmp_path / "train.json").read_text())
    assert trained["processes"] == 2 and trained["users"] == 60
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--user", "C0", "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)[0]["items"]) == 3


def test_train_data_parallel_needs_a_model_that_supports_it(store, tmp_path):
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "ease", "--out", str(tmp_path / "m"),
                              "--nproc", "2"])
    assert res.exit_code == 2
    assert "does not train data-parallel" in res.output and "featgan" in res.output
    assert not (tmp_path / "m").exists()


def test_recommend_explain_names_history_products_or_popularity(store, tmp_path):
    model_dir = tmp_path / "ease"
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "ease", "--out", str(model_dir),
                              "--params", '{"l2": 10}'])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--user", "C0", "--user", "nobody",
                              "--k", "3", "--explain", "--json"])
    assert res.exit_code == 0, res.output
    known, unknown = json.loads(res.output)
    assert all(r.startswith("because of Product ") for it in known["items"] for r in it["reasons"][:1])
    assert all(it["because"] for it in known["items"])
    assert all(it["reasons"][0].startswith("popular: bought by") for it in unknown["items"])
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--user", "C0", "--k", "3", "--explain"])
    assert res.exit_code == 0 and "because of" in res.output


def test_compare_cold_items_reports_three_views(store, tmp_path):
    out = tmp_path / "cold.json"
    res = runner.invoke(app, [
        "compare", "--store", str(store), "--protocol", "cold-items", "--models", "pop,contentknn", "--k", "20",
        "--json", str(out),
    ])
    assert res.exit_code == 0, res.output
    assert "cold recall@20 | cold ndcg@20" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "cold-items" and doc["split"]["cold_test_items"] > 0
    for r in doc["results"]:
        assert set(r["views"]) == {"cold", "warm", "hybrid"}
        assert r["views"]["hybrid"]["metrics"]["ndcg@20"] == r["metrics"]["ndcg@20"]
    assert "vs_best" in doc["results"][0]["views"]["cold"] or "vs_best" in doc["results"][1]["views"]["cold"]
