"""ELSA: the low-rank loss and scores equal their dense definitions without forming items x items."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from retailgan.models.base import TrainingOptions
from retailgan.models.elsa import ELSA, _torch_rows, reconstruction_cosine
from tests.conftest import oracle_dataset


def test_reconstruction_cosine_equals_the_dense_reconstruction():
    rng = np.random.default_rng(0)
    X = sp.random(50, 30, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    X.data[:] = 1.0
    X = X[np.diff(X.indptr) > 0]
    A = torch.nn.functional.normalize(torch.randn(30, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    x_sq = torch.from_numpy(np.diff(X.indptr).astype(np.float32))
    got = reconstruction_cosine(_torch_rows(X, np.arange(X.shape[0])), x_sq, A)
    dense = torch.from_numpy(X.toarray())
    recon = dense @ A @ A.T - dense
    want = torch.nn.functional.cosine_similarity(recon, dense, dim=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_scores_are_the_low_rank_item_item_product():
    ds, _ = oracle_dataset()
    model = ELSA(factors=4, epochs=2, batch_size=8).fit(ds, TrainingOptions(seed=0))
    history = ds.matrix()[:7]
    W = model.A.astype(np.float64) @ model.A.T.astype(np.float64) - np.eye(ds.n_items)
    np.testing.assert_allclose(model.score_histories(history), history.toarray() @ W, atol=1e-5)
    np.testing.assert_allclose(model.score_users(np.arange(7)), history.toarray() @ W, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(model.A, axis=1), 1.0, atol=1e-5)


def test_training_lowers_the_loss_and_is_seeded():
    ds, _ = oracle_dataset()
    a = ELSA(factors=4, epochs=5, batch_size=8).fit(ds, TrainingOptions(seed=1))
    b = ELSA(factors=4, epochs=5, batch_size=8).fit(ds, TrainingOptions(seed=1))
    losses = [h["loss"] for h in a.history]
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(a.A, b.A)
