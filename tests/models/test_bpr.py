"""BPR's sparse option: lazy Adam on sparse embedding gradients (``BPRConfig.sparse``)."""

from __future__ import annotations

import numpy as np
import torch

from retailgan.models.base import TrainingOptions
from retailgan.models.baselines import BPR
from tests.conftest import oracle_dataset


def _first_row_after_each_step(sparse: bool, monkeypatch) -> list[np.ndarray]:
    """Customer 0's factors after every step of one epoch whose batches are one customer each."""
    ds, _ = oracle_dataset()
    monkeypatch.setattr(torch, "randperm", lambda n, generator=None: torch.arange(n))  # pairs in customer order
    optimiser = torch.optim.SparseAdam if sparse else torch.optim.Adam
    rows: list[np.ndarray] = []
    step = optimiser.step

    def recording_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        rows.append(self.param_groups[0]["params"][0][0].detach().numpy().copy())  # U's first row
        return out

    monkeypatch.setattr(optimiser, "step", recording_step)
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
