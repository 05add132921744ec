"""Data-parallel training with torch.distributed: 2 local processes (gloo) against 1 process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retailgan import distributed
from retailgan.data.dataset import InteractionDataset
from retailgan.data.splits import split
from retailgan.errors import ConfigError, RetailganError
from retailgan.evaluation import evaluate
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.persistence import load_model

CONFIGS = {
    "cfgan": {
        "mode": "user", "g_hidden": 32, "d_hidden": 16, "lr_g": 0.01, "lr_d": 0.01, "zr_alpha": 0.1,
        "batch_size": 16, "batch_size_d": 16, "epochs": 12,
    },
    "resgan": {"l2": 5.0, "hidden": 16, "d_hidden": 16, "batch_size": 32, "epochs": 4, "crossfit": 2},
    "featgan": {
        "emb_dim": 16, "hidden": 32, "noise_dim": 4, "text_dim": 8, "collab_dim": 8, "recent": 2,
        "temperature": 0.3, "lr_g": 0.01, "batch_size": 64, "epochs": 8, "ema": 0.9,
    },
}


def problem() -> tuple[InteractionDataset, InteractionDataset]:
    """Four customer segments buying within their own 15 products, plus a little noise; a seeded
    random 80/20 split of each customer's purchases."""
    rng = np.random.default_rng(7)
    users, items = [], []
    for u in range(160):
        seg = u % 4
        for i in [*(rng.choice(15, size=8, replace=False) + 15 * seg), *rng.choice(60, size=1)]:
            users.append(f"u{u}")
            items.append(f"i{i}")
    s = split(InteractionDataset.from_arrays(users, items, timestamps=np.arange(len(users))), "random", seed=0)
    return s.train, s.test


def _job(out: str, name: str) -> None:
    """What every process runs: the same fit; rank 0 saves the model, every rank its weights."""
    train, _ = problem()
    model = get_model_class(name)(**CONFIGS[name]).fit(train, TrainingOptions(seed=0))
    np.savez(Path(out) / f"rank{distributed.rank()}.npz", **model._state())
    if distributed.rank() == 0:
        model.save(Path(out) / "model")


def ndcg(model, train: InteractionDataset, test: InteractionDataset) -> float:
    return float(evaluate(model, train.matrix(), test.matrix(), ks=(10,)).summary()["ndcg@10"])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_processes_match_one_process(name, tmp_path):
    train, test = problem()
    single = get_model_class(name)(**CONFIGS[name]).fit(train, TrainingOptions(seed=0))
    distributed.launch(2, _job, str(tmp_path), name)

    # DDP averaged the gradients: both replicas hold the same weights after training.
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert sorted(r0.files) == sorted(r1.files)
    for key in r0.files:
        np.testing.assert_allclose(r0[key], r1[key], rtol=0, atol=1e-6, err_msg=key)

    parallel = load_model(tmp_path / "model")
    one, two = ndcg(single, train, test), ndcg(parallel, train, test)
    pop = ndcg(get_model_class("pop")().fit(train), train, test)
    # Same quality within noise (the two runs draw different masks and noise), far above popularity.
    assert abs(one - two) <= 0.08, (one, two)
    assert min(one, two) > pop + 0.1, (one, two, pop)


def test_helpers_are_identities_in_one_process():
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1
    batch = torch.arange(10)
    assert distributed.shard(batch) is batch
    order, draws = distributed.generators(3, torch.device("cpu"))
    assert order is draws
    assert distributed.broadcast_float(0.25) == 0.25


def test_launch_rejects_bad_process_count():
    with pytest.raises(ConfigError, match="nproc"):
        distributed.launch(0, _job, "unused", "cfgan")


def _fail_on_rank_one() -> None:
    if distributed.rank() == 1:
        raise ConfigError("cfgan: lr_g must be > 0")


def test_a_worker_error_is_one_clear_error():
    with pytest.raises(RetailganError, match=r"process 1: cfgan: lr_g must be > 0"):
        distributed.launch(2, _fail_on_rank_one)
