"""Provenance: PNG metadata on every generated file, the visible label, the CLI's outputs."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from retailgan.cli import app
from retailgan.imagegen.provenance import (
    REQUIRED_KEYS,
    image_grid,
    is_synthetic,
    label_generated,
    provenance,
    read_provenance,
    save_png,
)


def test_save_png_carries_metadata(tmp_path):
    img = np.arange(28 * 28, dtype=np.uint8).reshape(1, 28, 28)
    meta = provenance("retailgan-cgan", "retailgan-cgan-abc", 7, category="Bag")
    path = save_png(img, tmp_path / "x.png", meta)
    got = read_provenance(path)
    assert got == {
        "generator": "retailgan-cgan",
        "model_version": "retailgan-cgan-abc",
        "seed": "7",
        "synthetic": "true",
        "category": "Bag",
    }
    assert is_synthetic(path)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img[0])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_real_image_is_not_synthetic(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "real.png")
    assert not is_synthetic(tmp_path / "real.png")


def test_visible_label():
    img = np.zeros((1, 28, 28), np.uint8)
    shown = label_generated(img)
    assert shown.mode == "RGB" and shown.size == (112, 112)
    a = np.asarray(shown)
    # A red banner along the bottom edge with white text in it; the top is untouched.
    assert (a[-2, 2] == (200, 30, 30)).all()
    assert (a[-16:, :, 1] > 150).any()
    assert (a[:50] == 0).all()


def test_grid_layout():
    imgs = np.stack([np.full((1, 2, 2), i * 10, np.uint8) for i in range(6)])
    g = image_grid(imgs, rows=2, pad=1)
    assert g.shape == (1, 7, 10)
    assert g[0, 1, 1] == 0 and g[0, 4, 7] == 50


def test_cli_generate_writes_labelled_pngs_with_provenance(trained_tiny, tmp_path):
    model_dir = trained_tiny.model_dir
    out = tmp_path / "gen"
    res = CliRunner().invoke(
        app,
        [
            "images",
            "generate",
            "--model-dir",
            str(model_dir),
            "--category",
            "shoe",
            "--n",
            "3",
            "--out",
            str(out),
            "--seed",
            "4",
            "--labelled",
        ],
    )
    assert res.exit_code == 0, res.output
    files = json.loads(res.stdout)["files"]
    assert len(files) == 3
    for f in files:
        meta = read_provenance(f)
        assert all(k in meta for k in REQUIRED_KEYS)
        assert meta["synthetic"] == "true" and meta["seed"] == "4" and meta["category"] == "shoe"
        assert meta["model_version"] == trained_tiny.model.version
    assert len(list((out / "labelled").glob("*.png"))) == 3
    # Same seed, same images.
    res2 = CliRunner().invoke(
        app,
        [
            "images",
            "generate",
            "--model-dir",
            str(model_dir),
            "--category",
            "2",
            "--n",
            "3",
            "--out",
            str(tmp_path / "gen2"),
            "--seed",
            "4",
        ],
    )
    assert res2.exit_code == 0, res2.output
    for a, b in zip(files, json.loads(res2.stdout)["files"], strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_cli_generate_like_and_errors(trained_tiny, image_folder, tmp_path):
    model_dir = str(trained_tiny.model_dir)
    like = sorted((image_folder / "shirt").glob("*.png"))[:2]
    args = [
        "images",
        "generate",
        "--model-dir",
        model_dir,
        "--category",
        "shirt",
        "--n",
        "2",
        "--out",
        str(tmp_path / "like"),
    ]
    res = CliRunner().invoke(app, [*args, "--like", str(like[0]), "--like", str(like[1])])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["inversion_mse"]) == 2
    assert "shirt/0024.png" in read_provenance(out["files"][0])["like"]
    res = CliRunner().invoke(app, [*args[:5], "hat", *args[6:]])
    assert res.exit_code == 2 and "unknown category 'hat'" in res.output
    res = CliRunner().invoke(app, [*args, "--like", str(tmp_path / "missing.png")])
    assert res.exit_code == 2 and "missing.png: no such image file" in res.output
    res = CliRunner().invoke(
        app, ["images", "generate", "--model-dir", str(tmp_path), "--category", "x", "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "model.json: missing" in res.output


def test_cli_train_rejects_bad_folder(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    res = CliRunner().invoke(
        app, ["images", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--dry-run"]
    )
    assert res.exit_code == 2 and "empty category folder" in res.output
    assert not (tmp_path / "m").exists()
