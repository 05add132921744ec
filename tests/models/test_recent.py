"""Any recommender plus recent sales: the blend, its counts, files and errors."""

from __future__ import annotations

import numpy as np
import pytest

from retailgan.data.dataset import InteractionDataset
from retailgan.errors import ConfigError
from retailgan.models.base import TrainingOptions
from retailgan.models.recent import RecentSalesBlend, recent_buyers
from retailgan.models.registry import get_model_class
from retailgan.persistence import load_model

DAY = 86400


def _log() -> InteractionDataset:
    # "old" bought by four customers in the first days, "new" by two in the last two days.
    users = ["a", "b", "c", "d", "e", "f", "a", "b"]
    items = ["old", "old", "old", "old", "new", "new", "mid", "mid"]
    ts = [0, DAY, 2 * DAY, 3 * DAY, 40 * DAY + 5, 41 * DAY, 10 * DAY, 39 * DAY]
    return InteractionDataset.from_arrays(users, items, timestamps=ts)


def test_scores_are_the_base_plus_weighted_log_recent_sales(tmp_path):
    ds = _log()
    np.testing.assert_array_equal(recent_buyers(ds, 3), [0 if i == "old" else (2 if i == "new" else 1)
                                                         for i in ds.items.ids])
    blend = RecentSalesBlend(base="pop", trend_days=3, weight=4.0).fit(ds, TrainingOptions(seed=0))
    base = get_model_class("pop")().fit(ds, TrainingOptions(seed=0))
    users = np.arange(ds.n_users)
    expected = base.score_users(users) + 4.0 * np.log1p(recent_buyers(ds, 3)).astype(np.float32)
    np.testing.assert_allclose(blend.score_users(users), expected, rtol=1e-6)
    # Recent sales outweigh all-time popularity here; unknown customers keep the base's fallback.
    assert blend.recommend(["f"], k=3, exclude_seen=False).item_ids[0].tolist() == ["new", "mid", "old"]
    assert blend.recommend(["nobody"], k=1).item_ids[0].tolist() == ["old"]
    # New sales without refitting; saved with the model.
    blend.set_recent_sales(["old"], [100.0])
    assert blend.recommend(["f"], k=1, exclude_seen=False).item_ids[0].tolist() == ["old"]
    loaded = load_model(blend.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score_users(users), blend.score_users(users))
    assert loaded.config.base_params == {} and loaded.base_model.config == base.config


def test_bad_configs_and_counts_fail_clearly():
    ds = _log()
    for params, message in (
        ({"base": "recent"}, "another model"),
        ({"weight": -1.0}, "weight"),
        ({"trend_days": 0}, "trend_days"),
        ({"base": "gpt"}, "unknown model 'gpt'"),
        ({"base_params": {"l3": 1}}, "unknown parameter"),
    ):
        with pytest.raises(ConfigError, match=message):
            RecentSalesBlend(**params).fit(ds)
    blend = RecentSalesBlend(base="pop").fit(ds)
    with pytest.raises(ConfigError, match="counts of shape"):
        blend.set_recent_sales(["old", "new"], [1.0])
    with pytest.raises(ConfigError, match="finite and >= 0"):
        blend.set_recent_sales(["old"], [np.nan])


def test_cli_trains_a_blend_of_ease(tmp_path):
    from typer.testing import CliRunner

    from retailgan.cli import app
    from tests.conftest import SHOP_INGEST_ARGS, write_shop_logs

    events, products = write_shop_logs(tmp_path, customers=20, events=300, products=6, step_s=3000)
    store = tmp_path / "shop.duckdb"
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(events), "--store", str(store), "--catalogue", str(products),
                              *SHOP_INGEST_ARGS])
    assert res.exit_code == 0, res.output
    params = '{"base": "ease", "base_params": {"l2": 10}, "trend_days": 2, "weight": 0.3}'
    res = runner.invoke(app, ["train", "--store", str(store), "--model", "recent", "--params", params,
                              "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    model = load_model(tmp_path / "m")
    assert model.config.base_params == {"l2": 10} and model.base_model.config.l2 == 10.0
