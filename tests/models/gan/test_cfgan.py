"""CFGAN: negative sampling, gradient flow, ablation switches, modes, curves, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from retailgan.data.dataset import InteractionDataset
from retailgan.data.splits import split
from retailgan.errors import ConfigError, ModelFileError
from retailgan.evaluation import evaluate
from retailgan.models.base import TrainingOptions
from retailgan.models.gan import cfgan as cfgan_module
from retailgan.models.gan.cfgan import CFGAN, CFGANConfig, sample_unobserved
from retailgan.models.gan.curves import save_curves
from retailgan.persistence import load_model
from tests.conftest import oracle_dataset, shared

# Small and fast; solves the oracle dataset (same as the contract test's config).
FAST = {
    "mode": "user",
    "g_hidden": 32,
    "d_hidden": 16,
    "lr_g": 0.01,
    "lr_d": 0.01,
    "zr_alpha": 0.1,
    "batch_size": 8,
    "batch_size_d": 8,
    "epochs": 15,
}


def oracle_hits(model: CFGAN, answer: dict[str, str]) -> float:
    users = list(answer)
    recs = model.recommend(users, k=1)
    return float(np.mean([recs.item_ids[r, 0] == answer[u] for r, u in enumerate(users)]))


def started(**params: object) -> tuple[CFGAN, InteractionDataset]:
    """A model after ``init_training`` on the oracle data, ready for single steps."""
    ds, _ = oracle_dataset()
    model = CFGAN(**{**FAST, **params})
    model.users, model.items, model.seen = ds.users, ds.items, ds.matrix()
    model.init_training(ds, TrainingOptions(seed=0))
    return model, ds


# -- PM / ZR sampling --------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 1.0])
def test_sampled_entries_are_never_observed(ratio):
    gen = torch.Generator().manual_seed(1)
    observed = (torch.rand(300, 500, generator=gen) < 0.1).float()
    mask = sample_unobserved(observed, ratio, torch.Generator().manual_seed(2))
    assert mask.shape == observed.shape and mask.dtype == observed.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert not (mask * observed).any(), "a PM/ZR sample hit an observed item"
    unobserved = observed == 0
    share = float(mask[unobserved].mean())
    assert share == pytest.approx(ratio, abs=0.01)
    if ratio == 1.0:
        assert torch.equal(mask.bool(), unobserved)
    # Same generator seed, same draw.
    again = sample_unobserved(observed, ratio, torch.Generator().manual_seed(2))
    assert torch.equal(mask, again)


def test_training_masks_only_touch_unobserved_items(monkeypatch):
    model, ds = started()
    drawn = []

    def spy(observed, ratio, generator):
        mask = sample_unobserved(observed, ratio, generator)
        drawn.append((observed.clone(), mask))
        return mask

    monkeypatch.setattr(cfgan_module, "sample_unobserved", spy)
    model.train_epoch(1)
    assert drawn
    X = ds.matrix().toarray()
    for observed, mask in drawn:
        assert not (mask * observed).any()
        # The conditions are real training rows, so "observed" really is the training data.
        assert all((row.numpy() == X).all(axis=1).any() for row in observed)


# -- gradients ---------------------------------------------------------------------------------


def test_adversarial_loss_alone_moves_the_generator():
    # No ZR, no PM, no L2: the only signal G gets is D's judgement of its output.
    model, _ = started(use_zr=False, use_pm=False, l2_g=0.0)
    assert model.G is not None and model.D is not None
    g_before = [p.detach().clone() for p in model.G.parameters()]
    d_before = [p.detach().clone() for p in model.D.parameters()]
    model.D.requires_grad_(False)
    model._g_step(torch.arange(8))
    for p, old in zip(model.G.parameters(), g_before, strict=True):
        assert p.grad is not None and p.grad.abs().sum() > 0
        assert not torch.equal(p.detach(), old)
    for p, old in zip(model.D.parameters(), d_before, strict=True):
        assert torch.equal(p.detach(), old), "a G step must not update D"


def test_discriminator_step_updates_only_d():
    model, _ = started()
    assert model.G is not None and model.D is not None
    g_before = [p.detach().clone() for p in model.G.parameters()]
    d_before = [p.detach().clone() for p in model.D.parameters()]
    model._d_step(torch.arange(8))
    assert all(torch.equal(p.detach(), old) for p, old in zip(model.G.parameters(), g_before, strict=True))
    assert any(not torch.equal(p.detach(), old) for p, old in zip(model.D.parameters(), d_before, strict=True))


# -- ablation switches and variants --------------------------------------------------------------


def test_no_adversarial_term_builds_no_discriminator_and_still_learns():
    ds, answer = oracle_dataset()
    model = CFGAN(**FAST, adversarial=False).fit(ds, TrainingOptions(seed=0))
    assert model.D is None
    assert all("loss_d" not in h and "loss_g" in h for h in model.history)
    assert oracle_hits(model, answer) >= 0.95


@pytest.mark.parametrize(
    ("use_zr", "use_pm", "draws_per_g_step"), [(True, True, 2), (False, True, 1), (True, False, 1)]
)
def test_zr_and_pm_switches(monkeypatch, use_zr, use_pm, draws_per_g_step):
    model, _ = started(use_zr=use_zr, use_pm=use_pm)
    calls = []
    monkeypatch.setattr(
        cfgan_module, "sample_unobserved", lambda o, r, g: calls.append(r) or sample_unobserved(o, r, g)
    )
    model._g_step(torch.arange(8))
    assert len(calls) == draws_per_g_step
    calls.clear()
    model._d_step(torch.arange(8))
    assert len(calls) == int(use_pm)  # D only ever sees PM masks


def test_degenerate_and_invalid_configs_are_refused():
    ds, _ = oracle_dataset()
    with pytest.raises(ConfigError, match="adversarial=False needs"):
        CFGAN(adversarial=False, use_zr=False, use_pm=False).fit(ds)
    for bad in ({"mode": "basket"}, {"loss": "hinge"}, {"zr_ratio": 1.5}, {"g_layers": 0}):
        with pytest.raises(ConfigError):
            CFGAN(**{**FAST, **bad}).fit(ds)


def test_wgan_gp_with_spectral_norm_and_noise_is_deterministic():
    ds, _ = oracle_dataset()
    params = {**FAST, "loss": "wgan-gp", "spectral_norm": True, "noise_dim": 4, "epochs": 3}
    a = CFGAN(**params).fit(ds, TrainingOptions(seed=3))
    b = CFGAN(**params).fit(ds, TrainingOptions(seed=3))
    idx = np.arange(ds.n_users)
    np.testing.assert_array_equal(a.score_users(idx), b.score_users(idx))
    assert all(np.isfinite(h["loss_d"]) and np.isfinite(h["loss_g"]) for h in a.history)


def test_item_mode_learns_and_round_trips(tmp_path):
    ds, answer = oracle_dataset()
    model = CFGAN(**{**FAST, "mode": "item", "epochs": 30}).fit(ds, TrainingOptions(seed=1))
    assert oracle_hits(model, answer) >= 0.8  # chance is 1/7
    assert model.G is not None and model.G[0].in_features == ds.n_users
    loaded = load_model(model.save(tmp_path / "item"))
    idx = np.arange(ds.n_users)
    np.testing.assert_array_equal(loaded.score_users(idx), model.score_users(idx))
    with pytest.raises(NotImplementedError, match="mode='user'"):
        model.score_histories(ds.matrix()[:2])


def test_user_mode_fold_in_equals_scores_of_the_training_rows():
    ds, _ = oracle_dataset()
    model = CFGAN(**FAST).fit(ds, TrainingOptions(seed=0))
    idx = np.array([0, 5, 21])
    np.testing.assert_allclose(model.score_histories(ds.matrix()[idx]), model.score_users(idx), rtol=1e-6)
    new = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 1])), shape=(1, ds.n_items))
    assert model.score_histories(new).shape == (1, ds.n_items)
    with pytest.raises(ValueError, match="item columns"):
        model.score_histories(sp.csr_matrix((1, 3)))


def test_state_keys_are_generator_parameters():
    ds, _ = oracle_dataset()
    model = CFGAN(**{**FAST, "epochs": 1}).fit(ds, TrainingOptions(seed=0))
    assert sorted(model._state()) == ["G.0.bias", "G.0.weight", "G.2.bias", "G.2.weight"]
    bad = {k: v[:-1] for k, v in model._state().items()}
    with pytest.raises(ModelFileError, match=r"G\.0\.weight: shape \(31, 12\), expected \(32, 12\)"):
        model._load_state(bad)


# -- trainer loop and curves ---------------------------------------------------------------------


def test_early_stopping_history_and_curves(tmp_path):
    ds, _ = oracle_dataset()
    s = split(ds, "leave-last", seed=0)
    model = CFGAN(**{**FAST, "epochs": 6, "eval_every": 2}).fit(
        s.train_inner, TrainingOptions(seed=0, validation=s.validation)
    )
    assert [h["epoch"] for h in model.history] == list(range(1, len(model.history) + 1))
    assert all("loss_d" in h and "loss_g" in h for h in model.history)
    assert [h["epoch"] for h in model.history if "val_ndcg@20" in h] == [2, 4, 6]
    best = max(h["val_ndcg@20"] for h in model.history if "val_ndcg@20" in h)
    assert model.validation_score(s.validation, "ndcg@20") == pytest.approx(best)  # best epoch restored

    json_path, png_path = save_curves(model.history, tmp_path / "curves", title="cfgan")
    doc = json.loads(json_path.read_text())
    assert doc["epochs"] == list(range(1, 7))
    assert set(doc["series"]) == {"loss_d", "loss_g", "val_ndcg@20"}
    assert doc["series"]["val_ndcg@20"][0] is None and doc["series"]["val_ndcg@20"][1] is not None
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "curves").iterdir()) == ["curves.json", "curves.png"]  # no temp files


def test_config_round_trips_through_json():
    cfg = CFGANConfig(mode="user", spectral_norm=True, zr_ratio=0.5)
    assert CFGANConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# -- real data (skipped without ../shared/data) --------------------------------------------------


def test_movielens_100k_learns_within_a_few_epochs():
    raw = np.loadtxt(shared("movielens-100k", "u.data"), dtype=np.int64)
    ds = InteractionDataset.from_arrays(raw[:, 0], raw[:, 1], name="ml-100k")
    s = split(ds, "cfgan-paper", seed=0)
    params = {"g_hidden": 200, "d_hidden": 125, "lr_g": 1e-3, "lr_d": 1e-3, "batch_size": 64, "g_steps": 1}
    ndcg = {}
    for epochs in (1, 6):
        model = CFGAN(**params, d_steps=1, epochs=epochs).fit(s.train, TrainingOptions(seed=0, num_threads=1))
        ndcg[epochs] = evaluate(model, s.train.matrix(), s.test.matrix(), ks=(20,)).summary()["ndcg@20"]
    # A random ranking scores about 0.01 here; the tuned model about 0.4 after ~100 epochs.
    assert ndcg[6] > 0.1 and ndcg[6] > 2 * ndcg[1], ndcg


# -- cost before training --------------------------------------------------------------------------


def test_cost_probe_leaves_the_fit_unchanged_and_is_reported(monkeypatch, capsys):
    from retailgan import progress

    ds, _ = oracle_dataset()
    probed = CFGAN(**{**FAST, "epochs": 3}).fit(ds, TrainingOptions(seed=0, progress=True))
    assert probed.epoch_seconds is not None and probed.epoch_seconds > 0
    line = probed.cost_estimate()
    assert "an epoch here" in line and "at most 3 epochs" in line
    monkeypatch.setattr(progress, "_enabled", True)
    CFGAN(**{**FAST, "epochs": 1}).fit(ds, TrainingOptions(seed=0))
    assert "fit cfgan: about" in capsys.readouterr().err
    monkeypatch.setattr(cfgan_module, "COST_PROBE_STEPS", 0)
    plain = CFGAN(**{**FAST, "epochs": 3}).fit(ds, TrainingOptions(seed=0))
    assert plain.epoch_seconds is None
    for a, b in zip(probed.G.parameters(), plain.G.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_memory_estimate_refuses_before_allocating(monkeypatch):
    cfg = CFGANConfig()
    # Item mode at 1M customers x 100k products: the scores alone are 800 GB.
    assert cfgan_module.memory_estimate(cfg, 1_000_000, 100_000) > 8e11
    user = CFGANConfig(mode="user")
    small = cfgan_module.memory_estimate(user, 1_000_000, 100_000)
    assert 1e9 < small < 4e9  # weights, gradients and moments of G (100k x 400 x 2) and D
    ds, _ = oracle_dataset()
    monkeypatch.setenv("RETAILGAN_MEMORY_LIMIT", "1K")
    with pytest.raises(ConfigError, match=r"cfgan: needs about .* mode='user'"):
        CFGAN(**FAST).fit(ds)
