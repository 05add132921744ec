"""Cold-start models take products added to the catalogue after fitting, and keep them in their files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from retailgan.errors import ConfigError, ModelFileError
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.persistence import ARRAYS_FILE, load_model
from tests.conftest import oracle_dataset
from tests.models.test_contract import FAST_CONFIGS

COLD = ["dropoutnet", "heater", "clcrec", "gar", "contentknn"]


@pytest.fixture(scope="module", params=COLD)
def added(request):
    ds, answer = oracle_dataset()
    model = get_model_class(request.param)(**FAST_CONFIGS[request.param]).fit(ds, TrainingOptions(seed=0))
    n = model.n_items
    model.add_products(["new0", "new1"], ["Product 0-9", "Product 1-9"], ["cat0", "cat1"], [2.0, None])
    return request.param, model, n, answer


def test_added_products_are_scored_from_their_content(added):
    name, model, n, answer = added
    assert model.n_items == n + 2 and model.popularity[-1] == 0 and "new1" in model.items
    assert model.item_info.titles[-1] == "Product 1-9"
    u0 = next(u for u in answer if u.startswith("u0_"))
    u1 = next(u for u in answer if u.startswith("u1_"))
    scores = model.score_users(model.users.index([u0, u1]))
    assert scores.shape == (2, n + 2) and np.isfinite(scores).all()
    if name == "contentknn":  # exact: the new product's content is its group's
        assert model.recommend([u0], k=1, candidates=["new0", "new1"]).item_ids[0, 0] == "new0"
        assert model.recommend([u1], k=1, candidates=["new0", "new1"]).item_ids[0, 0] == "new1"
    with pytest.raises(ConfigError, match="already in the catalogue"):
        model.add_products(["new0"], ["x"])


def test_save_load_keeps_added_products_and_adds_more(added, tmp_path):
    name, model, n, _ = added
    loaded = load_model(model.save(tmp_path / "m"))
    assert list(loaded.items.ids) == list(model.items.ids)
    users = np.arange(model.n_users)
    np.testing.assert_array_equal(loaded.score_users(users), model.score_users(users))
    # The loaded model embeds further products as the fitted one does.
    model.add_products(["new2"], ["Product 1-8"], ["cat1"], [3.0])
    loaded.add_products(["new2"], ["Product 1-8"], ["cat1"], [3.0])
    np.testing.assert_allclose(loaded.score_users(users), model.score_users(users), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["nan", "shape", "missing"])
def test_damaged_content_space_is_refused(added, tmp_path, damage):
    _, model, _, _ = added
    path = model.save(tmp_path / "m")
    arrays = load_file(str(path / ARRAYS_FILE))
    key = "content.price_edges" if damage != "shape" else next(
        k for k in arrays if k.startswith("content.text.") and arrays[k].ndim == 2
    )
    if damage == "nan":
        arrays[key] = arrays[key].copy()
        arrays[key][0] = np.nan
    elif damage == "shape":
        arrays[key] = np.ascontiguousarray(arrays[key][:, :-1])
    else:
        del arrays[key]
    save_file(arrays, str(path / ARRAYS_FILE))
    with pytest.raises(ModelFileError):
        load_model(path)


def test_model_file_without_its_content_space_is_refused(added, tmp_path):
    _, model, _, _ = added
    path = model.save(tmp_path / "m")
    meta = json.loads((path / "model.json").read_text())
    meta["extra"].pop("content_space")
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="content_space"):
        load_model(path)


def test_cold_shift_lifts_products_without_sales_on_each_customers_scale(added, tmp_path):
    name, model, n, _ = added
    if name == "contentknn":  # no backbone, no shift
        return
    users = np.arange(4)
    plain = model.score_users(users)
    plain_config = model.config
    try:
        model.config = dataclasses.replace(plain_config, cold_shift=1.5)
        shifted = model.score_users(users)
        model.save(tmp_path / "m")
    finally:
        model.config = plain_config
    new = model.popularity == 0
    assert new[-2:].all() and not new.all()
    z = (plain - plain.mean(axis=1, keepdims=True)) / plain.std(axis=1, keepdims=True)
    np.testing.assert_allclose(shifted, z + 1.5 * new[None, :], rtol=1e-5, atol=1e-5)
    assert shifted.dtype == np.float32
    np.testing.assert_array_equal(load_model(tmp_path / "m").score_users(users), shifted)
    with pytest.raises(ConfigError, match="cold_shift"):
        get_model_class(name)(**{**FAST_CONFIGS[name], "cold_shift": float("nan")}).fit(
            oracle_dataset()[0], TrainingOptions(seed=0))
