"""Image data loaders: Fashion-MNIST IDX files and category folders, and their error messages."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retailgan.errors import ConfigError, IngestError
from retailgan.imagegen.data import (
    FASHION_MNIST_CLASSES,
    class_index,
    load_fashion_mnist,
    load_image_folder,
    load_images,
    read_image_file,
)
from tests.conftest import shared
from tests.imagegen.conftest import CATEGORIES


def _write_idx(root, prefix, images, labels):
    with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">iiii", 2051, len(images), 28, 28) + images.tobytes())
    with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def test_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1])
    _write_idx(tmp_path, "t10k", images, labels)
    ds = load_fashion_mnist(tmp_path, "test")
    assert ds.images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.classes[9] == "Ankle boot"
    assert ds.class_index("sneaker") == 7
    assert class_index(ds.classes, "3") == 3


def test_idx_bad_magic_names_the_file(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    _write_idx(tmp_path, "t10k", images, np.array([0, 1]))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">ii", 1234, 2) + b"\x00\x01")
    with pytest.raises(IngestError, match="t10k-labels-idx1-ubyte.gz.*magic 1234"):
        load_fashion_mnist(tmp_path, "test")


def test_real_fashion_mnist():
    root = shared("fashion-mnist")
    test = load_fashion_mnist(root, "test")
    assert test.images.shape == (10_000, 1, 28, 28)
    assert test.classes == FASHION_MNIST_CLASSES
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_folder_loader(image_folder):
    ds = load_image_folder(image_folder)
    assert ds.classes == CATEGORIES
    assert ds.images.shape == (72, 1, 28, 28)
    assert np.bincount(ds.labels).tolist() == [24, 24, 24]
    assert ds.paths is not None and ds.paths[0].endswith("bag/0000.png")
    # A plain category folder serves as both splits.
    assert len(load_images(image_folder, "test")) == 72


def test_folder_with_splits(tmp_path, image_folder):
    import shutil

    shutil.copytree(image_folder, tmp_path / "split" / "train")
    shutil.copytree(image_folder / "bag", tmp_path / "split" / "test" / "bag")
    assert len(load_images(tmp_path / "split", "train")) == 72
    assert len(load_images(tmp_path / "split", "test")) == 24


def test_rgb_jpg_folder(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.full((8, 12, 3), 100, np.uint8), mode="RGB").save(tmp_path / c / "x.jpg")
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 3, 8, 12)


def test_empty_folder_rejected(image_folder):
    (image_folder / "hats").mkdir()
    with pytest.raises(ConfigError, match="hats: empty category folder"):
        load_image_folder(image_folder)


def test_no_categories_rejected(tmp_path):
    with pytest.raises(ConfigError, match="no category folders"):
        load_image_folder(tmp_path)
    with pytest.raises(ConfigError, match="no such image folder"):
        load_image_folder(tmp_path / "missing")


def test_mixed_sizes_rejected(image_folder):
    Image.fromarray(np.zeros((32, 32), np.uint8), mode="L").save(image_folder / "shoe" / "big.png")
    with pytest.raises(IngestError, match=r"shoe/big.png: image size 32x32 differs from 28x28"):
        load_image_folder(image_folder)


def test_non_image_rejected(image_folder):
    (image_folder / "shirt" / "notes.txt").write_text("not an image")
    with pytest.raises(IngestError, match=r"shirt/notes.txt: not an image file"):
        load_image_folder(image_folder)


def test_corrupt_png_rejected(image_folder):
    (image_folder / "bag" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(IngestError, match=r"bag/broken.png: not a readable image"):
        load_image_folder(image_folder)


def test_read_image_file_resizes_and_converts(tmp_path):
    Image.fromarray(np.full((56, 56, 3), 200, np.uint8), mode="RGB").save(tmp_path / "big.png")
    a = read_image_file(tmp_path / "big.png", (1, 28, 28))
    assert a.shape == (1, 28, 28) and a.dtype == np.uint8
    with pytest.raises(ConfigError, match="no such image file"):
        read_image_file(tmp_path / "nope.png", (1, 28, 28))


def test_bundled_fashion_mnist_subset_is_read_when_shared_is_absent(tmp_path, monkeypatch):
    import retailgan.imagegen.data as data_module

    monkeypatch.setattr(data_module, "__file__", str(tmp_path / "repo" / "src" / "retailgan" / "imagegen" / "data.py"))
    monkeypatch.chdir(tmp_path)
    assert data_module.default_fashion_mnist_root() == data_module.BUNDLED_FASHION_MNIST
    assert "the subset bundled in" in data_module.describe_source("fashion-mnist")
    train, test = load_images("fashion-mnist", "train"), load_images("fashion-mnist", "test")
    assert train.classes == test.classes == FASHION_MNIST_CLASSES
    assert np.bincount(train.labels).tolist() == [300] * 10 and np.bincount(test.labels).tolist() == [100] * 10
    # ../shared wins when it is there: the full set.
    full = tmp_path / "shared" / "data" / "fashion-mnist"
    full.mkdir(parents=True)
    _write_idx(full, "train", np.zeros((2, 28, 28), np.uint8), np.array([0, 1]))
    assert data_module.default_fashion_mnist_root() == full
    assert data_module.describe_source("fashion-mnist") == f"fashion-mnist: the full set in {full}"


def test_a_trained_model_remembers_its_data_and_the_image_commands_default_to_it(trained_tiny, capsys):
    from retailgan.imagegen.cli import _model_data
    from retailgan.imagegen.model import ConditionalGAN

    model = ConditionalGAN.load(trained_tiny.model_dir)
    assert model.data_source == str(Path(trained_tiny.data.paths[0]).parents[1].resolve())
    assert _model_data(model, None) == model.data_source and _model_data(model, "fashion-mnist") == "fashion-mnist"
    assert f"real data: {model.data_source}" in capsys.readouterr().err
    model.data_source, model.data_name = "", "fashion-mnist-train"  # saved before sources were recorded
    assert _model_data(model, None) == "fashion-mnist"
    model.data_name = "products"
    with pytest.raises(ConfigError, match="pass --data"):
        _model_data(model, None)


def test_fashion_mnist_location_from_the_environment(monkeypatch, tmp_path):
    from retailgan.imagegen.data import BUNDLED_FASHION_MNIST, default_fashion_mnist_root, describe_source

    monkeypatch.setenv("RETAILGAN_FASHION_MNIST", str(BUNDLED_FASHION_MNIST))
    assert default_fashion_mnist_root() == BUNDLED_FASHION_MNIST.resolve()
    assert "$RETAILGAN_FASHION_MNIST" in describe_source("fashion-mnist")
