"""Catalogue images: retailer photos and generated images stored with the products, flagged, via the CLI too."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from retailgan.cli import app
from retailgan.data.images import (
    ItemImage,
    encode_png,
    get_image,
    get_images,
    image_counts,
    image_flags,
    import_photos,
    items_without_image,
    put_images,
)
from retailgan.data.store import Store
from retailgan.errors import ConfigError, ImageError
from retailgan.imagegen.catalogue import fill_catalogue, item_seed
from tests.conftest import SHOP_INGEST_ARGS, write_shop_logs

runner = CliRunner()


@pytest.fixture
def shop_store(tmp_path: Path) -> Path:
    """A store whose catalogue has categories 'bag' (block 0) and 'Shoe' / 'dept1' via the CLI ingest."""
    events, products = write_shop_logs(tmp_path, customers=6, events=60, products=4)
    store = tmp_path / "shop.duckdb"
    res = runner.invoke(app, ["ingest", str(events), "--store", str(store), "--catalogue", str(products),
                              *SHOP_INGEST_ARGS])
    assert res.exit_code == 0, res.output
    with Store.open(store) as s:
        s.con.execute("UPDATE items SET category = CASE WHEN item_id LIKE 'P0%' THEN 'bag' ELSE 'Shoe' END")
        s.con.execute("UPDATE items SET category = NULL WHERE item_id = 'P103'")
    return store


@pytest.fixture
def tiny_model(trained_tiny):
    return trained_tiny.model


def _png(color: int = 128, size: tuple[int, int] = (20, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (color, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_no_table_means_no_images(shop_store: Path) -> None:
    with Store.open(shop_store, read_only=True) as s:
        assert get_image(s, "P000") is None
        assert get_images(s, ["P000"]) == {}
        assert image_flags(s) == {}
        assert image_counts(s) == {"photos": 0, "generated": 0, "without_image": 8}
        assert items_without_image(s)[:2] == [("P000", "bag", "Product 0-0"), ("P001", "bag", "Product 0-1")]


def test_put_and_get_round_trip_and_keep_existing(shop_store: Path) -> None:
    png = _png()
    with Store.open(shop_store) as s:
        assert put_images(s, [ItemImage("P000", png, False, 20, 12, source="p.png")]) == 1
        # Without replace the photo stays; with replace it is swapped.
        assert put_images(s, [ItemImage("P000", _png(5), True, 20, 12, source="g")]) == 0
        assert get_image(s, "P000").png == png
        assert put_images(s, [ItemImage("P000", _png(5), True, 20, 12, source="g", seed=7)], replace=True) == 1
        im = get_image(s, "P000")
        assert im.generated and im.seed == 7 and im.source == "g"
        assert image_flags(s, ["P000", "P001"]) == {"P000": True}
        assert image_counts(s) == {"photos": 0, "generated": 1, "without_image": 7}


def test_unknown_product_rejects_the_whole_batch(shop_store: Path) -> None:
    with Store.open(shop_store) as s:
        with pytest.raises(ImageError, match="'NOPE' is not in the catalogue"):
            put_images(s, [ItemImage("P000", _png(), False, 20, 12), ItemImage("NOPE", _png(), False, 20, 12)])
        assert get_image(s, "P000") is None  # nothing written


def test_import_photos_reports_bad_files(shop_store: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (30, 40), (1, 2, 3)).save(photos / "P001.jpg")
    Image.new("L", (8, 8), 9).save(photos / "P100.png")
    (photos / "P002.png").write_bytes(b"not a png at all")
    (photos / "notes.txt").write_text("hello")
    Image.new("RGB", (8, 8)).save(photos / "UNKNOWN.png")
    with Store.open(shop_store) as s:
        res = import_photos(s, photos)
        assert res.stored == 2
        reasons = dict(res.skipped)
        assert "not a readable image" in reasons[str(photos / "P002.png")]
        assert "no product 'UNKNOWN'" in reasons[str(photos / "UNKNOWN.png")]
        assert "not an image file name" in reasons[str(photos / "notes.txt")]
        im = get_image(s, "P001")
        assert not im.generated and (im.width, im.height) == (30, 40) and im.source == "P001.jpg"
        assert Image.open(io.BytesIO(im.png)).format == "PNG"
    (photos / "P001.png").write_bytes(_png())
    with Store.open(shop_store) as s, pytest.raises(ImageError, match="already has a photo"):
        import_photos(s, photos)
    with Store.open(shop_store) as s, pytest.raises(ImageError, match="not a directory"):
        import_photos(s, tmp_path / "missing")


def test_fill_generates_flagged_images_with_provenance(shop_store: Path, tiny_model, tmp_path: Path) -> None:
    tiny_model.version = tiny_model.version or "retailgan-cgan-test"
    with Store.open(shop_store) as s:
        put_images(s, [ItemImage("P001", _png(), False, 20, 12, source="photo.png")])
        rep = fill_catalogue(s, tiny_model, category_map={"dept-x": "shirt"}, seed=4)
        # 'bag' and 'Shoe' match classes (case-insensitively); P001 keeps its photo; P103 has no category.
        assert rep.generated == 6 and rep.per_class == {"bag": 3, "shoe": 3}
        assert rep.unmatched == {"": 1}
        im = get_image(s, "P000")
        assert im.generated and im.model_version == tiny_model.version and im.seed == item_seed("P000", 4)
        meta = Image.open(io.BytesIO(im.png)).text
        assert meta["synthetic"] == "true" and meta["product_id"] == "P000" and meta["category"] == "bag"
        assert not get_image(s, "P001").generated
        assert image_counts(s) == {"photos": 1, "generated": 6, "without_image": 1}
        # A second run has nothing left to do.
        assert fill_catalogue(s, tiny_model, seed=4).generated == 0
    # Same product, same seed, same model: the same pixels.
    a = np.asarray(Image.open(io.BytesIO(im.png)))
    with Store.open(shop_store) as s:
        s.con.execute("DELETE FROM item_images WHERE item_id = 'P000'")
        fill_catalogue(s, tiny_model, seed=4)
        b = np.asarray(Image.open(io.BytesIO(get_image(s, "P000").png)))
    assert np.array_equal(a, b)


def test_fill_by_title_word_when_no_category_matches(shop_store: Path, tiny_model) -> None:
    tiny_model.version = tiny_model.version or "retailgan-cgan-test"
    with Store.open(shop_store) as s:
        s.con.execute("UPDATE items SET category = NULL")
        s.con.execute("UPDATE items SET title = 'JUMBO BAG RED' WHERE item_id = 'P000'")
        s.con.execute("UPDATE items SET title = 'BAGUETTE TIN' WHERE item_id = 'P001'")  # not the word 'bag'
        rep = fill_catalogue(s, tiny_model, title_map={"bag": "shoe"})
        assert rep.generated == 1 and rep.per_class == {"shoe": 1} and rep.unmatched == {"": 7}
        assert get_image(s, "P000").generated and get_image(s, "P001") is None
        with pytest.raises(ConfigError, match="title map"):
            fill_catalogue(s, tiny_model, title_map={"bag": "Sandal"})


def test_fill_rejects_a_map_to_an_unknown_class(shop_store: Path, tiny_model) -> None:
    tiny_model.version = tiny_model.version or "retailgan-cgan-test"
    with Store.open(shop_store) as s, pytest.raises(ConfigError, match="no class 'Sandal'"):
        fill_catalogue(s, tiny_model, category_map={"bag": "Sandal"})


def test_cli_attach_and_fill(shop_store: Path, trained_tiny, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(photos / "P000.png")
    (photos / "broken.png").write_bytes(b"\x89PNG broken")
    res = runner.invoke(app, ["images", "attach", "--store", str(shop_store), "--dir", str(photos)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["stored"] == 1 and out["skipped"] == 1 and out["catalogue"]["photos"] == 1
    res = runner.invoke(app, ["images", "fill", "--store", str(shop_store), "--model-dir", str(trained_tiny.model_dir),
                              "--map", "Shoe=shirt", "--limit", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["generated"] == 2 and out["catalogue"] == {"photos": 1, "generated": 2, "without_image": 5}
    res = runner.invoke(app, ["images", "fill", "--store", str(shop_store), "--model-dir", str(trained_tiny.model_dir),
                              "--map", "Shoe"])
    assert res.exit_code != 0 and "CATALOGUE_CATEGORY=MODEL_CLASS" in res.output


def test_encode_png_keeps_metadata() -> None:
    png, w, h = encode_png(np.zeros((1, 28, 28), np.uint8), {"synthetic": "true"})
    im = Image.open(io.BytesIO(png))
    assert (w, h) == (28, 28) and im.text["synthetic"] == "true"
