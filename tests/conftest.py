"""Shared fixtures: small oracle datasets and the path of the shared real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retailgan.data.dataset import InteractionDataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BUNDLED_RETAIL = REPO / "data" / "online-retail" / "online_retail.csv.gz"


def shared(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def oracle_dataset(n_per_cluster: int = 20, items_per_cluster: int = 6) -> tuple[InteractionDataset, dict[str, str]]:
    """Two customer groups, each buying within its own block of products.

    Every user owns all of the block's items but one; that missing item is the known answer:
    any sensible collaborative model ranks it first among the user's unseen items.
    """
    users, items, answer = [], [], {}
    for c in range(2):
        for u in range(n_per_cluster):
            uid = f"u{c}_{u}"
            block = [f"i{c}_{j}" for j in range(items_per_cluster)]
            missing = block[u % items_per_cluster]
            answer[uid] = missing
            for it in block:
                if it != missing:
                    users.append(uid)
                    items.append(it)
    ts = np.arange(len(users))
    info = {
        f"i{c}_{j}": {"title": f"Product {c}-{j}", "category": f"cat{c}", "price": 1.0 + j}
        for c in range(2)
        for j in range(items_per_cluster)
    }
    return InteractionDataset.from_arrays(users, items, timestamps=ts, item_info=info, name="oracle"), answer


@pytest.fixture
def oracle():
    return oracle_dataset()
