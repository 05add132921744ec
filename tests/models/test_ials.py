"""iALS epochs are implicit's ALS sweeps, exactly (the matrix is prepared once, not per epoch)."""

from __future__ import annotations

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares

from retailgan.models.base import TrainingOptions
from retailgan.models.baselines import IALS
from tests.conftest import oracle_dataset


def test_epochs_equal_one_implicit_fit_with_as_many_sweeps():
    ds, _ = oracle_dataset()
    model = IALS(factors=4, regularization=0.1, alpha=5.0, epochs=4).fit(ds, TrainingOptions(seed=3, num_threads=1))
    peer = AlternatingLeastSquares(
        factors=4, regularization=0.1, alpha=5.0, iterations=4, random_state=3, num_threads=1
    )
    peer.fit(ds.matrix(), show_progress=False)
    np.testing.assert_array_equal(model.user_factors, peer.user_factors)
    np.testing.assert_array_equal(model.item_factors, peer.item_factors)
