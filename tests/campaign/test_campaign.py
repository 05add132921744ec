"""`retailgan campaign build` end to end on a tiny store: segments, themes, outputs, errors, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from retailgan.campaign import build_campaign, parse_segment, parse_theme
from retailgan.campaign.build import CONVERSION_RATE
from retailgan.campaign.query import recent_purchases
from retailgan.campaign.render import EmailProduct, email_stem, render_html, render_text
from retailgan.cli import app
from retailgan.data.store import Store
from retailgan.errors import ConfigError

runner = CliRunner()


def _build(shop, out: Path, *args: str):
    store, model = shop
    return runner.invoke(app, ["campaign", "build", "--store", str(store), "--model-dir", str(model),
                               "--out", str(out), *args])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_all_customers(shop, tmp_path):
    out = tmp_path / "camp"
    res = _build(shop, out, "--k", "4", "--chunk-size", "16")
    assert res.exit_code == 0, res.output
    # One line, even in a log (not wrapped at 80 columns).
    assert any(ln.startswith("wrote ") and ln.endswith("report.html)") for ln in res.stderr.splitlines())
    assert sorted(p.name for p in out.iterdir()) == ["banners", "campaign.parquet", "emails", "report.html",
                                                      "report.png", "summary.json"]
    assert not list(tmp_path.glob(".*"))  # no work directory left behind
    table = pq.read_table(out / "campaign.parquet")
    assert table.column_names == ["customer_id", "rank", "product_id", "title", "price", "score", "reason",
                                  "image", "model_version"]
    rows = table.to_pylist()
    by_customer: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_customer[r["customer_id"]].append(r)
    assert len(by_customer) == 40 and all([r["rank"] for r in v] == [1, 2, 3, 4] for v in by_customer.values())
    assert [r["customer_id"] for r in rows] == sorted(r["customer_id"] for r in rows)
    assert all(r["model_version"].startswith("ease-") for r in rows)
    # EASE is item-item: every reason names history products ("because of ...") or says it has none.
    assert all(r["reason"].startswith(("because of ", "no product of the history")) for r in rows)
    assert sum(r["reason"].startswith("because of ") for r in rows) > 0.9 * len(rows)
    # Products bought in the last 30 days are never sent.
    store, _ = shop
    with Store.open(store, read_only=True) as s:
        recent = recent_purchases(s, sorted(by_customer), 30, s.reference_time().ts)
    assert recent  # the window does exclude something
    for u, items in recent.items():
        assert not {r["product_id"] for r in by_customer[u]} & set(items)
    summary = json.loads((out / "summary.json").read_text())
    distinct = len({r["product_id"] for r in rows})
    assert summary["customers"] == 40 and summary["rows"] == len(rows) == 160
    assert summary["distinct_products"] == distinct
    assert summary["catalogue_coverage"] == pytest.approx(distinct / summary["catalogue_size"])
    assert summary["diversity"] == pytest.approx(distinct / 160)
    # Expected revenue recomputed from the table with the documented formula.
    expected = 0.0
    for g in by_customer.values():
        w = [max(r["score"], 0.0) for r in g]
        share = [x / sum(w) for x in w] if sum(w) > 0 else [1 / len(g)] * len(g)
        expected += sum((r["price"] or 0.0) * CONVERSION_RATE * sh for r, sh in zip(g, share, strict=True))
    assert summary["expected_revenue"] == pytest.approx(expected, abs=0.01)
    html = (out / "emails" / "C03.html").read_text()
    text = (out / "emails" / "C03.txt").read_text()
    for r in by_customer["C03"]:
        assert f"{r['price']:.2f}" in html and f"{r['price']:.2f}" in text and r["reason"] in text
        assert r["reason"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in html
    assert "image placeholder" in html and "<script" not in html
    assert len(list((out / "emails").glob("*.html"))) == 40
    assert len(list((out / "banners").glob("*.png"))) == 40
    # No images in this store: every slot is "no image".
    assert all(r["image"] is None for r in rows)
    assert summary["no_image_share"] == 1.0 and summary["generated_image_share"] == 0.0


def test_segments_select_customers(shop, tmp_path):
    store, _ = shop
    res = _build(shop, tmp_path / "uk", "--segment", "country:United Kingdom", "--k", "2")
    assert res.exit_code == 0, res.output
    ids = set(pq.read_table(tmp_path / "uk" / "campaign.parquet").column("customer_id").to_pylist())
    assert ids == {f"C{c:02d}" for c in range(20)}
    res = _build(shop, tmp_path / "ids", "--segment", "ids:C05,C01", "--k", "2")
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "ids" / "campaign.parquet").column("customer_id").to_pylist() == [
        "C01", "C01", "C05", "C05"]
    with Store.open(store, read_only=True) as s:
        last = dict(s.con.execute("SELECT user_id, max(ts) FROM events WHERE event_type = 'purchase' "
                                  "GROUP BY 1").fetchall())
        latest = s.con.execute("SELECT max(ts) FROM events").fetchone()[0]
        spend = dict(s.con.execute("SELECT e.user_id, sum(i.price) FROM events e JOIN items i USING (item_id) "
                                   "WHERE event_type = 'purchase' GROUP BY 1").fetchall())
    res = _build(shop, tmp_path / "recent", "--segment", "recent:3", "--k", "1")
    assert res.exit_code == 0, res.output
    got = set(pq.read_table(tmp_path / "recent" / "campaign.parquet").column("customer_id").to_pylist())
    want = {u for u, t in last.items() if (latest - t).total_seconds() <= 3 * 86400}
    assert got == want and 0 < len(want) < 40
    res = _build(shop, tmp_path / "spend", "--segment", "spend:100-150", "--k", "1")
    assert res.exit_code == 0, res.output
    got = set(pq.read_table(tmp_path / "spend" / "campaign.parquet").column("customer_id").to_pylist())
    assert got == {u for u, v in spend.items() if 100 <= v <= 150} and got


def test_theme_restricts_candidates(shop, tmp_path):
    res = _build(shop, tmp_path / "t", "--theme", "category:dept1;max_price:8", "--k", "3")
    assert res.exit_code == 0, res.output
    rows = pq.read_table(tmp_path / "t" / "campaign.parquet").to_pylist()
    assert rows and all(r["product_id"].startswith("P1") and r["price"] <= 8 for r in rows)
    res = _build(shop, tmp_path / "kw", "--theme", "keyword:MUG", "--k", "3", "--recent-days", "0")
    assert res.exit_code == 0, res.output
    rows = pq.read_table(tmp_path / "kw" / "campaign.parquet").to_pylist()
    assert {r["product_id"] for r in rows} == {"P000", "P100"} and len(rows) == 2 * 40
    html = (tmp_path / "kw" / "emails" / "C00.html").read_text()
    assert "Mug &lt;b&gt;" in html and "<b>0" not in html  # titles are escaped


@pytest.mark.parametrize(("args", "message"), [
    (["--segment", "country:Atlantis"], "no customer has country 'Atlantis'"),
    (["--segment", "ids:C01,NOPE"], "unknown customer id(s) NOPE"),
    (["--segment", "recent:soon"], "days must be a whole number"),
    (["--segment", "spend:500-100"], "low 500 is above high 100"),
    (["--segment", "vip"], "unknown segment kind 'vip'"),
    (["--theme", "category:Garden"], "unknown category 'Garden'"),
    (["--theme", "keyword:zeppelin"], "matches no product"),
    (["--theme", "colour:red"], "unknown theme part 'colour:red'"),
    (["--theme", "max_price:-3"], "must be a finite number >= 0"),
])
def test_bad_queries_fail_cleanly(shop, tmp_path, args, message):
    res = _build(shop, tmp_path / "bad", *args)
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert list(tmp_path.iterdir()) == []  # neither output nor work directory


def test_empty_segment_gives_empty_campaign(shop, tmp_path):
    out = tmp_path / "empty"
    res = _build(shop, out, "--segment", "spend:100000-200000")
    assert res.exit_code == 0, res.output
    assert "has no customers" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["customers"] == 0 and summary["rows"] == 0 and summary["expected_revenue"] == 0
    table = pq.read_table(out / "campaign.parquet")
    assert table.num_rows == 0 and "reason" in table.column_names
    assert list((out / "emails").iterdir()) == [] and list((out / "banners").iterdir()) == []
    assert summary["generated_image_share"] is None
    assert "No product was recommended" in (out / "report.html").read_text()


class Stop(Exception):
    pass


def test_resumed_run_is_byte_identical(shop, tmp_path, capsys):
    store, model = shop
    kwargs = dict(segment="all", theme="max_price:10", k=3, recent_days=30, chunk_size=7)
    full = build_campaign(store, model, tmp_path / "full", **kwargs)

    def stop_after_second(c: int) -> None:
        if c == 1:
            raise Stop

    out = tmp_path / "resumed"
    with pytest.raises(Stop):
        build_campaign(store, model, out, after_chunk=stop_after_second, **kwargs)
    assert not out.exists()
    progress = json.loads((tmp_path / ".resumed.work" / "progress.json").read_text())
    assert progress["done"] == 2
    seen: list[int] = []
    capsys.readouterr()
    resumed = build_campaign(store, model, out, after_chunk=seen.append, progress=True, **kwargs)
    assert seen == [2, 3, 4, 5]  # 40 customers in chunks of 7: chunks 0 and 1 were not redone
    lines = capsys.readouterr().err.splitlines()  # progress counts on from the earlier run's customers
    assert lines[0].startswith("campaign: 21/40 customers (52%); ") and "left" in lines[0]
    assert lines[-1].startswith("campaign: 40/40 customers (100%); ")
    assert resumed == full
    assert _files(out) == _files(tmp_path / "full")
    assert not (tmp_path / ".resumed.work").exists()


def test_other_arguments_restart_the_work(shop, tmp_path):
    store, model = shop
    out = tmp_path / "c"

    def stop(c: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        build_campaign(store, model, out, k=2, chunk_size=10, after_chunk=stop)
    seen: list[int] = []
    build_campaign(store, model, out, k=3, chunk_size=10, after_chunk=seen.append)
    assert seen == [0, 1, 2, 3]
    assert set(pq.read_table(out / "campaign.parquet").column("rank").to_pylist()) == {1, 2, 3}


def test_query_parsing():
    assert parse_segment(" all ").kind == "all"
    assert parse_segment("ids:b,a,b").ids == ("a", "b")
    seg = parse_segment("spend:100-500")
    assert (seg.low, seg.high) == (100, 500)
    assert parse_theme("category:Home ; keyword:mug;max_price:20").max_price == 20
    assert parse_theme(None).empty
    for bad in ["ids:", "ids:a,,b", "spend:100", "recent:0", "country:"]:
        with pytest.raises(ConfigError):
            parse_segment(bad)
    with pytest.raises(ConfigError, match="given twice"):
        parse_theme("keyword:a;keyword:b")


def test_render_escapes_and_names_files_safely():
    products = [EmailProduct(rank=1, product_id="X<1>", title="A & <i>B</i>", price=None, reason="because of \"C\"")]
    html = render_html("<u>", products, "keyword:<x>")
    assert "<i>" not in html and "A &amp; &lt;i&gt;B&lt;/i&gt;" in html and "&lt;u&gt;" in html
    assert "price unknown" in html and "image placeholder" in html
    assert "A & <i>B</i> - price unknown" in render_text("<u>", products, None)
    assert email_stem("C01") == "C01"
    assert email_stem("../etc/passwd").startswith("id-") and email_stem("a b") != email_stem("a_b")


def test_popularity_model_reasons_say_popular(shop, tmp_path):
    store, _ = shop
    model = tmp_path / "pop"
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "pop", "--out", str(model)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "camp"
    res = runner.invoke(app, ["campaign", "build", "--store", str(store), "--model-dir", str(model), "--k", "2",
                              "--segment", "ids:C07", "--out", str(out)])
    assert res.exit_code == 0, res.output
    reasons = pq.read_table(out / "campaign.parquet").column("reason").to_pylist()
    assert len(reasons) == 2 and all(r.startswith("popular: bought by ") for r in reasons)


def test_missing_store_is_a_clear_error(shop, tmp_path):
    _, model = shop
    res = runner.invoke(app, ["campaign", "build", "--store", str(tmp_path / "nope.duckdb"), "--model-dir",
                              str(model), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "nope.duckdb: no such file" in res.output
    assert list(tmp_path.iterdir()) == []


def test_sigkilled_run_resumes_to_identical_output(shop, tmp_path):
    """A real SIGKILL after chunk 1 (no clean-up code runs), then the CLI with the same arguments."""
    store, model = shop
    script = (
        "import os, signal, sys\n"
        "from retailgan.campaign import build_campaign\n"
        "def kill(c):\n"
        "    if c == 1:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "build_campaign(sys.argv[1], sys.argv[2], sys.argv[3], k=3, chunk_size=9, after_chunk=kill)\n"
    )
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", script, str(store), str(model), str(out)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert not out.exists()
    assert json.loads((tmp_path / ".killed.work" / "progress.json").read_text())["done"] == 2
    res = _build(shop, out, "--k", "3", "--chunk-size", "9")
    assert res.exit_code == 0, res.output
    res = _build(shop, tmp_path / "whole", "--k", "3", "--chunk-size", "9")
    assert res.exit_code == 0, res.output
    assert _files(out) == _files(tmp_path / "whole")
