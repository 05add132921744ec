"""The conditional GAN: dry-run training, determinism under a seed, save/load, generation, inversion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from retailgan.cli import app
from retailgan.errors import ConfigError, ModelFileError
from retailgan.imagegen.data import to_uint8
from retailgan.imagegen.generate import generate_like, invert, train_gan
from retailgan.imagegen.model import ConditionalGAN, GANConfig
from retailgan.imagegen.provenance import read_provenance
from tests.imagegen.conftest import TINY_PARAMS, synthetic_images


def test_cli_dry_run_training(image_folder, tmp_path):
    out = tmp_path / "model"
    res = CliRunner().invoke(app, ["images", "train", "--data", str(image_folder), "--out", str(out), "--dry-run"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["epochs"] == 1 and report["classes"] == ["bag", "shirt", "shoe"]
    assert (out / "model.json").is_file() and (out / "arrays.safetensors").is_file()
    grid = out / "samples" / "epoch-001.png"
    assert grid.is_file()
    meta = read_provenance(grid)
    assert meta["synthetic"] == "true" and meta["epoch"] == "1"
    loaded = ConditionalGAN.load(out)
    assert loaded.version == report["version"] and loaded.version.startswith("retailgan-cgan-")


def test_training_is_deterministic_under_a_seed(image_folder, tmp_path):
    a = train_gan(image_folder, tmp_path / "a", epochs=2, seed=5, params=TINY_PARAMS).model
    b = train_gan(image_folder, tmp_path / "b", epochs=2, seed=5, params=TINY_PARAMS).model
    c = train_gan(image_folder, tmp_path / "c", epochs=2, seed=6, params=TINY_PARAMS).model
    sa, sb, sc = a.state_tensors(), b.state_tensors(), c.state_tensors()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.version == b.version != c.version
    assert [h["loss_d"] for h in a.history] == [h["loss_d"] for h in b.history]
    assert torch.equal(a.generate([0, 1, 2], seed=9), b.generate([0, 1, 2], seed=9))


def test_save_load_equality(trained_tiny, tmp_path):
    model = trained_tiny.model
    model.save(tmp_path / "copy")
    loaded = ConditionalGAN.load(tmp_path / "copy")
    assert loaded.classes == model.classes and loaded.shape == model.shape and loaded.config == model.config
    s1, s2 = model.state_tensors(), loaded.state_tensors()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    y = np.array([0, 1, 2, 2])
    assert torch.equal(model.generate(y, seed=1), loaded.generate(y, seed=1))
    # The discriminator (spectral norm state included) comes back identical too.
    x = model.generate(y, seed=2)
    assert torch.equal(model.D(x, torch.as_tensor(y)), loaded.D(x, torch.as_tensor(y)))
    # No pickle anywhere: JSON + safetensors only.
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["arrays.safetensors", "model.json"]


def test_load_errors(tmp_path, trained_tiny):
    with pytest.raises(ModelFileError, match="model.json: missing"):
        ConditionalGAN.load(tmp_path)
    (tmp_path / "model.json").write_text("{")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        ConditionalGAN.load(tmp_path)
    trained_tiny.model.save(tmp_path / "m")
    (tmp_path / "m" / "arrays.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="arrays.safetensors: corrupt"):
        ConditionalGAN.load(tmp_path / "m")


def test_generation_shapes_and_label_check(trained_tiny):
    model = trained_tiny.model
    x = model.generate(np.array([0, 1, 2]), seed=0)
    assert x.shape == (3, 1, 28, 28) and float(x.abs().max()) <= 1.0
    # Eval-mode generation does not depend on the batch an image is generated in.
    z = model.noise(3, 4)
    one = model.generate(np.array([1]), z=z[1:2])
    assert torch.allclose(one, model.generate(np.array([0, 1, 2]), z=z)[1:2], atol=1e-6)
    with pytest.raises(ConfigError, match="class labels must be in 0..2"):
        model.generate(np.array([3]))


def test_unsupported_image_size():
    with pytest.raises(ConfigError, match="not supported"):
        ConditionalGAN(GANConfig(), ("a", "b"), (1, 27, 27))


def test_inversion_reproduces_generated_images(trained_tiny):
    """Images the generator itself made are recovered far better than unrelated noise images."""
    model = trained_tiny.model
    target = to_uint8(model.generate(np.array([1, 1]), seed=11))
    _, err = invert(model, target, 1, steps=150, restarts=4, seed=0)
    noise = np.random.default_rng(0).integers(0, 256, target.shape, dtype=np.uint8)
    _, err_noise = invert(model, noise, 1, steps=150, restarts=4, seed=0)
    assert err.max() < 0.5 * err_noise.min()


def test_generate_like_is_closer_than_random(trained_tiny):
    model = trained_tiny.model
    images, labels = synthetic_images(4, seed=1)
    targets = images[labels == 2][:2]
    like, _ = generate_like(model, targets, 2, 6, spread=0.3, seed=0)
    rand = to_uint8(model.generate(np.full(6, 2), seed=0))

    def dist(a):
        return np.abs(a.astype(float)[:, None] - targets.astype(float)[None]).mean((2, 3, 4)).min(1).mean()

    assert like.shape == (6, 1, 28, 28)
    assert dist(like) < dist(rand)


def test_class_conditional_batch_norm_trains_saves_and_loads(image_folder, tmp_path):
    res = train_gan(image_folder, tmp_path / "cbn", epochs=1, seed=2, params={**TINY_PARAMS, "cond_bn": True})
    model = res.model
    assert any(k.startswith("G.cbn.0.gain") for k in model.state_tensors())
    loaded = ConditionalGAN.load(res.model_dir)
    assert loaded.config.cond_bn
    y = np.array([0, 1, 2])
    assert torch.equal(model.generate(y, seed=3), loaded.generate(y, seed=3))
    # The class reaches every layer: the same noise with another class changes the per-class gains' effect.
    z = model.noise(1, 0).repeat(3, 1)
    out = model.generate(y, z=z)
    assert not torch.equal(out[0], out[1])
