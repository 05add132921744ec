"""BPR's sparse option: lazy Adam on the rows of each batch (``BPRConfig.sparse``)."""

from __future__ import annotations

import numpy as np
import torch

from retailgan.models.base import TrainingOptions
from retailgan.models.baselines import BPR
from tests.conftest import oracle_dataset

_STEP = BPR._step


def _first_row_after_each_step(sparse: bool, monkeypatch) -> list[np.ndarray]:
    """Customer 0's factors after every step of one epoch whose batches are one customer each."""
    ds, _ = oracle_dataset()
    monkeypatch.setattr(torch, "randperm", lambda n, generator=None: torch.arange(n))  # pairs in customer order
    rows: list[np.ndarray] = []

    def recording_step(self, *args):
        out = _STEP(self, *args)
        rows.append(self._U.weight[0].detach().numpy().copy())
        return out

    monkeypatch.setattr(BPR, "_step", recording_step)
    # 5 products per oracle customer: every batch is one customer's pairs.
    BPR(factors=4, lr=0.05, epochs=1, batch_size=5, sparse=sparse).fit(ds, TrainingOptions(seed=1, num_threads=1))
    return rows


def test_a_step_leaves_rows_outside_its_batch_unchanged(monkeypatch):
    sparse = _first_row_after_each_step(True, monkeypatch)
    dense = _first_row_after_each_step(False, monkeypatch)
    assert len(sparse) == len(dense) == 40  # 40 customers, one a batch
    for row in sparse[1:]:  # customer 0 is in the first batch only
        np.testing.assert_array_equal(row, sparse[0])
    assert not np.allclose(dense[-1], dense[0])  # dense Adam's momentum moves it at every step


def test_sparse_bpr_ranks_the_oracle_answers_first():
    ds, answer = oracle_dataset()
    model = BPR(factors=8, lr=0.05, reg=0.05, epochs=100, batch_size=64, sparse=True)  # the contract config
    model.fit(ds, TrainingOptions(seed=0))
    users = list(answer)
    recs = model.recommend(users, k=1)
    assert np.mean([recs.item_ids[r, 0] == answer[u] for r, u in enumerate(users)]) >= 0.95


def test_lazy_adam_is_sparse_adams_rule():
    # The same rows and gradients through torch's SparseAdam and through _LazyAdam.
    from retailgan.models.baselines import _LazyAdam

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(6, 3, generator=gen)
    ours, ref = start.clone(), torch.nn.Parameter(start.clone())
    lazy, sparse_adam = _LazyAdam([ours], lr=0.1), torch.optim.SparseAdam([ref], lr=0.1)
    for rows in ([0, 2], [2, 5], [1, 2, 3]):
        r = torch.tensor(rows)
        g = torch.randn(len(rows), 3, generator=gen)
        lazy.step([r], [g])
        ref.grad = torch.sparse_coo_tensor(r[None], g, (6, 3), check_invariants=True)
        sparse_adam.step()
    np.testing.assert_allclose(ours.numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[4].numpy(), start[4].numpy())  # never in a step
