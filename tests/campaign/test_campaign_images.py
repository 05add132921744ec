"""Campaign e-mails and banners with product images, the per-customer API, the report, and parallel builds."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from retailgan.campaign import build_campaign, customer_campaign
from retailgan.campaign.render import GENERATED_BADGE, IMAGE_PLACEHOLDER
from retailgan.data.store import Store
from retailgan.errors import ConfigError, UnknownIdError
from retailgan.serving.engine import ModelBundle
from tests.campaign.conftest import GENERATED, PHOTOS


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(shop_images, tmp_path_factory):
    store, model = shop_images
    out = tmp_path_factory.mktemp("built") / "camp"
    summary = build_campaign(store, model, out, k=12, recent_days=0, chunk_size=16)
    return out, summary


def _data_images(html: str) -> list[Image.Image]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    return [Image.open(io.BytesIO(base64.b64decode(m))) for m in found]


def test_emails_inline_images_and_label_generated_ones(built):
    out, summary = built
    rows = pq.read_table(out / "campaign.parquet").to_pylist()
    kinds = Counter(r["image"] for r in rows)
    assert set(kinds) == {"photo", "generated", None}
    for r in rows:
        assert r["image"] == ("photo" if r["product_id"] in PHOTOS else "generated" if r["product_id"] in GENERATED
                              else None)
    n = len(rows)
    assert summary.photo_share == pytest.approx(kinds["photo"] / n, abs=1e-6)
    assert summary.generated_image_share == pytest.approx(kinds["generated"] / n, abs=1e-6)
    assert summary.no_image_share == pytest.approx(kinds[None] / n, abs=1e-6)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["generated_image_share"] == summary.generated_image_share
    html = (out / "emails" / "C00.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    mine = [r for r in rows if r["customer_id"] == "C00"]
    assert len(mine) == 12
    # One banner plus one picture per product with an image; the rest keep the placeholder.
    with_image = [r for r in mine if r["image"]]
    assert len(_data_images(html)) == 1 + len(with_image)
    assert html.count(IMAGE_PLACEHOLDER) == len(mine) - len(with_image)
    assert html.count(f">{GENERATED_BADGE}</div>") == sum(r["image"] == "generated" for r in mine) > 0
    for r in mine:  # the badge sits in the same row as the generated picture
        row = re.search(rf'<tr data-product="{r["product_id"]}">.*?</tr>', html).group(0)
        assert (f">{GENERATED_BADGE}</div>" in row) == (r["image"] == "generated")
        assert (f'data-image="{r["image"] or "none"}"') in row
    # The generated pictures carry the stamped red band along their bottom edge.
    gen = re.findall(r'<img data-image="generated" src="data:image/png;base64,([^"]+)"', html)
    for b64 in gen:
        im = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
        assert im.width >= 112 and im.getpixel((2, im.height - 3)) == (200, 30, 30)
    banner = Image.open(out / "banners" / "C00.png")
    assert banner.width > 4 * 128 and banner.height > 128
    assert (out / "banners" / "C00.png").read_bytes() == base64.b64decode(
        re.search(r'data-image="banner" src="data:image/png;base64,([^"]+)"', html).group(1))


def test_report_files(built):
    out, summary = built
    report = (out / "report.html").read_text()
    assert "Generated-image share" in report and f"{summary.generated_image_share:.1%}" in report
    assert "Expected revenue" in report and "max(s_ui, 0)" in report
    assert "Most recommended products" in report and "<script" not in report
    png = Image.open(out / "report.png")
    assert png.width > 400 and png.height > 150


def test_customer_campaign_matches_the_batch_build(shop_images, built):
    out, _ = built
    store, model = shop_images
    bundle = ModelBundle.load(model)
    rows = pq.read_table(out / "campaign.parquet").to_pylist()
    with Store.open(store, read_only=True) as s:
        for cid in ("C00", "C07", "C31"):
            cc = customer_campaign(bundle, s, cid, k=12, recent_days=0)
            mine = [r for r in rows if r["customer_id"] == cid]
            assert [(p.rank, p.product_id, p.title, p.price, p.score, p.reason, p.image) for p in cc.products] == [
                (r["rank"], r["product_id"], r["title"], r["price"], r["score"], r["reason"], r["image"]) for r in mine]
            assert cc.html == (out / "emails" / f"{cid}.html").read_text()
            assert cc.text == (out / "emails" / f"{cid}.txt").read_text()
            assert cc.banner_png == (out / "banners" / f"{cid}.png").read_bytes()
            assert cc.message is None and cc.model_version == bundle.label and cc.theme is None
        d = cc.to_dict()
        json.dumps(d)
        assert d["banner_png"].startswith("data:image/png;base64,") and d["products"][0]["rank"] == 1
        assert "banner_png" not in cc.to_dict(banner=False)
        plain = customer_campaign(bundle, s, "C00", k=3, banner=False)
        assert plain.banner_png is None and 'data-image="banner"' not in plain.html and len(plain.products) == 3
        with pytest.raises(UnknownIdError, match="NOPE"):
            customer_campaign(bundle, s, "NOPE")
        with pytest.raises(ConfigError, match="unknown category"):
            customer_campaign(bundle, s, "C00", theme="category:Garden")
        with pytest.raises(ConfigError, match="--k"):
            customer_campaign(bundle, s, "C00", k=0)
        # A theme whose only product the customer bought: an empty campaign with a message.
        buyer = s.con.execute("SELECT min(user_id) FROM events WHERE item_id = 'P103' AND event_type = 'purchase'"
                              ).fetchone()[0]
        empty = customer_campaign(bundle, s, buyer, theme="keyword:Product 1-3", recent_days=100000)
        assert empty.products == [] and empty.message and "No product matches" in empty.html


def test_parallel_build_is_byte_identical_and_resumes(shop_images, built, tmp_path):
    out, _ = built
    store, model = shop_images
    kwargs = dict(k=12, recent_days=0, chunk_size=16)
    par = tmp_path / "par"
    build_campaign(store, model, par, workers=2, **kwargs)
    assert _files(par) == _files(out)

    class Stop(Exception):
        pass

    def stop(c: int) -> None:
        raise Stop

    res = tmp_path / "res"
    with pytest.raises(Stop):
        build_campaign(store, model, res, workers=2, chunk_size=7, k=12, recent_days=0, after_chunk=stop)
    state = json.loads((tmp_path / ".res.work" / "progress.json").read_text())
    assert state["done"] == len(state["finished"]) >= 1
    seen: list[int] = []
    build_campaign(store, model, res, workers=2, chunk_size=7, k=12, recent_days=0, after_chunk=seen.append)
    assert sorted(seen) == sorted(set(range(6)) - set(state["finished"]))
    whole = tmp_path / "whole"
    build_campaign(store, model, whole, chunk_size=7, k=12, recent_days=0)
    assert _files(res) == _files(whole)


def test_small_caches_give_the_same_output(shop_images, built, tmp_path, monkeypatch):
    from retailgan.campaign import build

    monkeypatch.setattr(build, "IMAGE_CACHE_MAX", 3)  # cleared many times per chunk
    monkeypatch.setattr(build, "TILE_CACHE_MAX", 6)
    out, _ = built
    store, model = shop_images
    build_campaign(store, model, tmp_path / "c", k=12, recent_days=0, chunk_size=16)
    assert _files(tmp_path / "c") == _files(out)
    ctx = build.CampaignContext.create(ModelBundle.load(model), None, 3, 0)
    with Store.open(store, read_only=True) as s:
        assert set(ctx.product_images(s, PHOTOS[:2])) == set(PHOTOS[:2])
        assert set(ctx.product_images(s, PHOTOS[:4])) == set(PHOTOS[:4])  # the cache was cleared in between


def test_bad_workers_is_a_config_error(shop, tmp_path):
    from typer.testing import CliRunner

    from retailgan.cli import app

    store, model = shop
    with pytest.raises(ConfigError, match="--workers"):
        build_campaign(store, model, tmp_path / "x", workers=0)
    res = CliRunner().invoke(app, ["campaign", "build", "--store", str(store), "--model-dir", str(model),
                                   "--out", str(tmp_path / "y"), "--workers", "0"])
    assert res.exit_code == 2 and "--workers must be >= 1" in res.output
    assert list(tmp_path.iterdir()) == []


def test_sigkilled_parallel_run_resumes_to_identical_output(shop_images, tmp_path):
    """SIGKILL of the parent of a two-worker build after its first recorded chunk, then a rerun."""
    import signal
    import subprocess
    import sys

    store, model = shop_images
    script = (
        "import os, signal, sys\n"
        "from retailgan.campaign import build_campaign\n"
        "def kill(c):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "build_campaign(sys.argv[1], sys.argv[2], sys.argv[3], k=12, recent_days=0, chunk_size=7, workers=2,\n"
        "               after_chunk=kill)\n"
    )
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", script, str(store), str(model), str(out)], capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert not out.exists()
    state = json.loads((tmp_path / ".killed.work" / "progress.json").read_text())
    assert state["done"] >= 1
    build_campaign(store, model, out, k=12, recent_days=0, chunk_size=7, workers=2)
    whole = tmp_path / "whole"
    build_campaign(store, model, whole, k=12, recent_days=0, chunk_size=7)
    assert _files(out) == _files(whole)


def test_trend_model_campaign_uses_the_stores_recent_sales(shop, tmp_path):
    import pyarrow.parquet as pq

    from retailgan.data.dataset import load_dataset
    from retailgan.data.store import Store
    from retailgan.models.base import TrainingOptions
    from retailgan.models.gan.featgan import FeatureGAN
    from retailgan.persistence import load_model

    store, _ = shop
    ds = load_dataset(store)
    early = ds.subset(ds.timestamp < ds.timestamp.max() - 20 * 86400)  # trained before the last 20 days
    model_dir = FeatureGAN(trend_days=5, epochs=2, emb_dim=8, hidden=16, noise_dim=2, text_dim=4, collab_dim=2).fit(
        early, TrainingOptions(seed=0)
    ).save(tmp_path / "fg")
    one, two = tmp_path / "one", tmp_path / "two"
    build_campaign(store, model_dir, one, k=3, recent_days=0, chunk_size=7)
    build_campaign(store, model_dir, two, k=3, recent_days=0, workers=2, chunk_size=7)
    rows = pq.read_table(one / "campaign.parquet").to_pylist()
    assert rows == pq.read_table(two / "campaign.parquet").to_pylist()  # workers refresh the same sales
    # The products are the model's own top 3 (repeat purchases allowed with recent_days=0) once
    # given the store's recent sales.
    model = load_model(model_dir)
    customers = sorted({r["customer_id"] for r in rows})
    snapshot = model.recommend(customers, k=3, exclude_seen=False).item_ids
    with Store.open(store, read_only=True) as s:
        sales = s.recent_buyers(5)
    assert sales and sum(sales.values()) > 0
    ids = [i for i in sales if i in model.items]
    model.set_recent_sales(ids, [sales[i] for i in ids])
    refreshed = model.recommend(customers, k=3, exclude_seen=False).item_ids
    got = [[r["product_id"] for r in rows if r["customer_id"] == c] for c in customers]
    assert got == refreshed.tolist()
    assert got != snapshot.tolist()  # the training snapshot's sales would give other lists
