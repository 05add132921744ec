"""Batch recommendations (``retailgan recommend --all``): same lists as ``recommend``, resumable,
atomic, independent of the number of workers, bounded blocks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from retailgan.batch import recommend_all
from retailgan.cli import app
from retailgan.data.store import Store
from retailgan.errors import ConfigError
from retailgan.persistence import load_model
from tests.conftest import shop_store_and_model

runner = CliRunner()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A small store (45 customers in two countries) and an EASE model."""
    return shop_store_and_model(tmp_path_factory.mktemp("batch"), customers=45, products=14,
                                customer_id=lambda c: f"C{c:02d}")


def _lists(path) -> dict[str, list[tuple[str, float]]]:
    t = pq.read_table(path).to_pylist()
    out: dict[str, list[tuple[str, float]]] = {}
    for row in t:
        out.setdefault(row["customer_id"], []).append((row["product_id"], row["score"]))
        assert row["rank"] == len(out[row["customer_id"]])
    return out


def test_every_customer_gets_the_lists_of_recommend(shop, tmp_path):
    store, model_dir = shop
    summary = recommend_all(model_dir, tmp_path / "recs.parquet", store=store, k=5, block_size=8)
    got = _lists(tmp_path / "recs.parquet")
    with Store.open(store, read_only=True) as s:
        customers = sorted(s.con.execute("SELECT user_id FROM users").fetchnumpy()["user_id"].tolist())
    assert summary.customers == len(customers) and list(got) == customers  # every customer, in id order
    model = load_model(model_dir)
    for c in customers:
        recs = model.recommend([c], k=5)
        expected = [(str(i), float(s)) for i, s in zip(recs.item_ids[0], recs.scores[0], strict=True) if i is not None]
        assert [p for p, _ in got[c]] == [p for p, _ in expected], c
        np.testing.assert_allclose([s for _, s in got[c]], [s for _, s in expected], rtol=1e-6)
    table = pq.read_table(tmp_path / "recs.parquet")
    assert table.column_names == ["customer_id", "rank", "product_id", "score", "model_version"]
    assert set(table.column("model_version").to_pylist()) == {summary.model_version}
    assert not list(tmp_path.glob(".*"))  # no work directory left behind


def test_without_a_store_the_customers_are_the_models(shop, tmp_path):
    _, model_dir = shop
    summary = recommend_all(model_dir, tmp_path / "r.parquet", k=3, block_size=10)
    assert list(_lists(tmp_path / "r.parquet")) == sorted(load_model(model_dir).users.ids.tolist())
    assert summary.rows == 3 * summary.customers


class Stop(Exception):
    pass


def test_killed_run_resumes_to_identical_bytes(shop, tmp_path):
    store, model_dir = shop
    kwargs = dict(store=store, k=4, block_size=6)
    recommend_all(model_dir, tmp_path / "full.parquet", **kwargs)

    def stop_after_second(c: int) -> None:
        if c == 1:
            raise Stop

    out = tmp_path / "resumed.parquet"
    with pytest.raises(Stop):
        recommend_all(model_dir, out, after_block=stop_after_second, **kwargs)
    assert not out.exists()  # nothing half-written at the output's name
    assert json.loads((tmp_path / ".resumed.parquet.work" / "progress.json").read_text())["done"] == 2
    seen: list[int] = []
    recommend_all(model_dir, out, after_block=seen.append, **kwargs)
    assert seen == list(range(2, 8))  # 45 customers in blocks of 6; blocks 0 and 1 were not redone
    assert out.read_bytes() == (tmp_path / "full.parquet").read_bytes()
    assert not (tmp_path / ".resumed.parquet.work").exists()


def test_other_arguments_restart_the_work(shop, tmp_path):
    store, model_dir = shop
    out = tmp_path / "r.parquet"

    def stop(c: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        recommend_all(model_dir, out, store=store, k=2, block_size=10, after_block=stop)
    seen: list[int] = []
    recommend_all(model_dir, out, store=store, k=3, block_size=10, after_block=seen.append)
    assert seen == [0, 1, 2, 3, 4]
    assert set(pq.read_table(out).column("rank").to_pylist()) == {1, 2, 3}


def test_two_workers_write_the_same_bytes_as_one(shop, tmp_path):
    store, model_dir = shop
    recommend_all(model_dir, tmp_path / "one.parquet", store=store, k=4, block_size=5, explain=True)
    recommend_all(model_dir, tmp_path / "two.parquet", store=store, k=4, block_size=5, explain=True, workers=2)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()


def test_the_model_never_scores_more_than_a_block(shop, tmp_path, monkeypatch):
    from retailgan.models.base import Recommender

    store, model_dir = shop
    sizes: list[int] = []
    top_k, score_users = Recommender.top_k, load_model(model_dir).__class__.score_users

    def spy_top_k(self, user_ids, *a, **kw):
        sizes.append(len(user_ids))
        return top_k(self, user_ids, *a, **kw)

    def spy_score(self, user_idx):
        sizes.append(len(user_idx))
        return score_users(self, user_idx)

    monkeypatch.setattr(Recommender, "top_k", spy_top_k)
    monkeypatch.setattr(load_model(model_dir).__class__, "score_users", spy_score)
    monkeypatch.setattr(Recommender, "recommend", lambda *a, **kw: pytest.fail("the dense path was used"))
    summary = recommend_all(model_dir, tmp_path / "r.parquet", store=store, k=3, block_size=7)
    assert sizes and max(sizes) <= 7
    assert len(sizes) >= 2 * (summary.customers // 7)  # top_k and score_users once per block at least


def test_segment_and_as_of(shop, tmp_path):
    store, model_dir = shop
    summary = recommend_all(model_dir, tmp_path / "fr.parquet", store=store, segment="country:France", k=2)
    assert set(_lists(tmp_path / "fr.parquet")) == {f"C{c:02d}" for c in range(20, 45)}
    assert summary.segment == "country:France"
    # recent:N counts back from --as-of: the later it is, the fewer customers bought within N days.
    with Store.open(store, read_only=True) as s:
        last = s.reference_time(None).ts
    early = recommend_all(model_dir, tmp_path / "a.parquet", store=store, segment="recent:20", k=2,
                          as_of=last.replace(microsecond=0) - __import__("datetime").timedelta(days=40))
    late = recommend_all(model_dir, tmp_path / "b.parquet", store=store, segment="recent:20", k=2)
    assert early.reference_time < late.reference_time
    assert early.ignored_events > 0 and late.ignored_events == 0
    from retailgan.campaign.query import parse_segment, segment_customers

    with Store.open(store, read_only=True) as s:
        expected = segment_customers(s, parse_segment("recent:20"), s.reference_time(None).ts)
    assert sorted(_lists(tmp_path / "b.parquet")) == expected


def test_explain_gives_the_reasons_of_recommend_explain(shop, tmp_path):
    store, model_dir = shop
    recommend_all(model_dir, tmp_path / "r.parquet", store=store, k=3, explain=True, block_size=9)
    rows = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert all(r["reason"] for r in rows)
    c = rows[0]["customer_id"]
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--user", c, "--k", "3", "--explain",
                              "--json"])
    assert res.exit_code == 0, res.output
    want = ["; ".join(it["reasons"]) for it in json.loads(res.stdout)[0]["items"]]
    assert [r["reason"] for r in rows if r["customer_id"] == c] == want


def test_cli_writes_the_table_and_reports_progress(shop, tmp_path):
    store, model_dir = shop
    out = tmp_path / "recs.parquet"
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), "--all", "--store", str(store),
                              "--k", "3", "--out", str(out), "--block-size", "5"])
    assert res.exit_code == 0, res.output
    assert "recommend: 45/45 customers (100%)" in res.stderr  # not a terminal: progress lines
    assert " left" in res.stderr  # an estimate of the time left
    assert pq.read_table(out).num_rows == 3 * 45


@pytest.mark.parametrize("args, message", [
    (["--all"], "--out"),
    (["--segment", "all", "--out", "X"], "--segment needs --store"),
    (["--all", "--segment", "all", "--out", "X"], "not both"),
    (["--all", "--user", "C01", "--out", "X"], "cannot be combined"),
    (["--all", "--out", "X", "--as-of", "2011-01-01"], "need --store"),
    (["--segment", "spend:a-b", "--out", "X", "--store", "STORE"], "spend"),
    (["--all", "--out", "X", "--store", "STORE", "--as-of", "yesterday"], "--as-of"),
    (["--all", "--out", "X", "--block-size", "0"], "--block-size must be >= 1"),
    (["--all", "--out", "X", "--workers", "0"], "--workers must be >= 1"),
    (["--all", "--out", "DIR"], "is a directory"),
    (["--all", "--out", "X", "--store", "missing.duckdb"], "no such file"),
    ([], "give --user"),
    (["--user", "C01", "--out", "X"], "go with --all"),
])
def test_bad_inputs_exit_2_with_one_line(shop, tmp_path, args, message):
    store, model_dir = shop
    args = [str(store) if a == "STORE" else str(tmp_path / "x.parquet") if a == "X" else
            str(tmp_path) if a == "DIR" else str(tmp_path / a) if a == "missing.duckdb" else a for a in args]
    res = runner.invoke(app, ["recommend", "--model-dir", str(model_dir), *args])
    assert res.exit_code == 2, res.output
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "x.parquet").exists()


@pytest.fixture(scope="module")
def ials_dir(tmp_path_factory):
    """An ials model of a power-law log (300 customers, about 600 products)."""
    pytest.importorskip("faiss")
    from retailgan.models.base import TrainingOptions
    from retailgan.models.registry import get_model_class
    from tests.models.test_fast_topk import CONFIGS, _power_law_log

    path = tmp_path_factory.mktemp("ials") / "model"
    get_model_class("ials")(**CONFIGS["ials"]).fit(_power_law_log(), TrainingOptions(seed=0)).save(path)
    return path


def test_an_exhaustive_index_passes_the_recall_gate_with_the_exact_lists(ials_dir, tmp_path):
    exact = recommend_all(ials_dir, tmp_path / "exact.parquet", k=10, block_size=64)
    summary = recommend_all(ials_dir, tmp_path / "ivf.parquet", k=10, block_size=64, index="ivf",
                            index_params={"nlist": 8, "nprobe": 8}, recall_sample=100)
    assert exact.recall is None and summary.recall == 1.0 and summary.recall_customers == 100
    assert _lists(tmp_path / "ivf.parquet").keys() == _lists(tmp_path / "exact.parquet").keys()
    for c, got in _lists(tmp_path / "ivf.parquet").items():
        assert [p for p, _ in got] == [p for p, _ in _lists(tmp_path / "exact.parquet")[c]], c
    meta = pq.read_schema(tmp_path / "ivf.parquet").metadata
    assert meta[b"retailgan.index"] == b"ivf" and float(meta[b"retailgan.recall"]) == 1.0
    assert json.loads(meta[b"retailgan.index_params"]) == {"nlist": 8, "nprobe": 8}


def test_an_index_below_the_recall_gate_refuses_before_writing(ials_dir, tmp_path):
    coarse = {"hnsw_m": 4, "ef_construction": 8, "ef_search": 1}  # a sparse graph, a greedy search
    ok = recommend_all(ials_dir, tmp_path / "r.parquet", k=10, index="hnsw", index_params=coarse, min_recall=0.0)
    assert ok.recall is not None and ok.recall < 0.97
    with pytest.raises(ConfigError, match=r"recall@10 of the hnsw index .* below --min-recall 0.99"):
        recommend_all(ials_dir, tmp_path / "refused.parquet", k=10, index="hnsw", index_params=coarse,
                      min_recall=0.99)
    assert not (tmp_path / "refused.parquet").exists() and not list(tmp_path.glob(".*"))


def test_the_recall_gate_measures_the_share_of_the_exact_lists_found(ials_dir):
    from retailgan.batch import index_recall

    model = load_model(ials_dir)
    users = sorted(model.users.ids.tolist())
    recall, n = index_recall(model, users, 10, True, "ivf", {"nlist": 16, "nprobe": 2}, sample=50)
    exact = {u: set(model.recommend([u], 10).item_idx[0].tolist()) for u in users}
    picked = [users[i] for i in np.sort(np.random.default_rng(0).permutation(len(users))[:50])]
    approx = model.top_k(picked, 10).item_idx  # the model now ranks through the index
    expected = np.mean([len(exact[u] & set(a.tolist())) / len(exact[u]) for u, a in zip(picked, approx, strict=True)])
    assert n == 50 and recall == pytest.approx(expected)


def test_cli_all_with_an_index_reports_its_recall(ials_dir, tmp_path):
    out = tmp_path / "recs.parquet"
    res = runner.invoke(app, ["recommend", "--model-dir", str(ials_dir), "--all", "--out", str(out), "--k", "5",
                              "--index", "ivf", "--index-params", '{"nlist": 8, "nprobe": 8}'])
    assert res.exit_code == 0, res.output
    assert "ivf index: recall@5 1.0000 against the exact lists (300 sampled customers)" in res.output
    res = runner.invoke(app, ["recommend", "--model-dir", str(ials_dir), "--all", "--out", str(out),
                              "--index", "ivf", "--index-params", "nprobe=8"])
    assert res.exit_code == 2 and "--index-params is not JSON" in res.output
