"""Models with items x items arrays refuse before allocating what the machine does not have."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from retailgan.errors import ConfigError
from retailgan.models import memory
from retailgan.models.baselines import EASE, ease_bytes, ease_weights
from retailgan.models.gan.resgan import ResGAN, ResGANConfig, resgan_bytes
from tests.conftest import oracle_dataset


def test_parse_bytes():
    assert memory.parse_bytes("512") == 512
    assert memory.parse_bytes("8G") == 8 * 2**30
    assert memory.parse_bytes("1.5GiB") == int(1.5 * 2**30)
    with pytest.raises(ConfigError, match="RETAILGAN_MEMORY_LIMIT"):
        memory.parse_bytes("lots")


def test_available_memory_reads_the_override_then_meminfo(monkeypatch):
    monkeypatch.setenv(memory.ENV_LIMIT, "3M")
    assert memory.available_memory() == 3 * 2**20
    monkeypatch.delenv(memory.ENV_LIMIT)
    available = memory.available_memory()
    assert available is None or available > 0


def test_ease_refuses_before_allocating(monkeypatch):
    ds, _ = oracle_dataset()
    monkeypatch.setattr(memory, "available_memory", lambda: ease_bytes(ds.n_items) - 1)

    def never(*args, **kwargs):
        raise AssertionError("allocated despite the refusal")

    monkeypatch.setattr("retailgan.models.baselines.ease_weights", never)
    with pytest.raises(ConfigError, match=r"^ease: needs about .* GiB .* is available; use sansa") as err:
        EASE(l2=1.0).fit(ds)
    assert "\n" not in str(err.value)
    monkeypatch.setenv(memory.ENV_CHECK, "off")  # the override lets it try anyway
    with pytest.raises(AssertionError, match="allocated"):
        EASE(l2=1.0).fit(ds)


def test_ease_fits_when_the_estimate_fits(monkeypatch):
    ds, _ = oracle_dataset()
    monkeypatch.setattr(memory, "available_memory", lambda: ease_bytes(ds.n_items))
    assert EASE(l2=1.0).fit(ds).W.shape == (ds.n_items, ds.n_items)
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # unknown: no check
    assert EASE(l2=1.0).fit(ds).W.shape == (ds.n_items, ds.n_items)


def test_ease_estimate_counts_what_it_allocates():
    rng = np.random.default_rng(0)
    X = sp.random(3000, 1000, density=0.01, format="csr", random_state=rng, dtype=np.float32)
    tracemalloc.start()
    ease_weights(X, 10.0, block=64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    sparse_copies = 2 * X.nnz * (8 + 8) + 2 * 8 * 3001  # float64 CSC and CSR copies of X
    # One more float64 items x items array (8 MB here) would break this.
    assert peak <= ease_bytes(1000, block=64) + sparse_copies


def test_resgan_refuses_and_names_the_alternative(monkeypatch):
    ds, _ = oracle_dataset()
    cfg = ResGANConfig(l2=1.0, hidden=16, d_hidden=16, batch_size=16, epochs=1, crossfit=2)
    need = resgan_bytes(cfg, ds.n_users, ds.n_items)
    assert need >= (2 + 1) * 4 * ds.n_items**2 + 4 * ds.n_users * ds.n_items
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(ConfigError, match=r"^resgan: needs about .* use sansa"):
        ResGAN(cfg).fit(ds)
