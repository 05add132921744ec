"""A corrupt model, or a model of another store's catalogue, is refused: 422 on a reload (the old
model keeps serving) and exit 2 from `retailgan serve`, never a crash (docs/reliability.md)."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from retailgan.cli import app
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.persistence import ARRAYS_FILE
from tests.conftest import oracle_dataset
from tests.serving.test_api import A, make_client, rec


def nan_outside_smoke_check(arrays: dict[str, np.ndarray]) -> None:
    # The W row of a product customer 0 never bought: only other customers' scores turn NaN.
    indptr, indices = arrays["_seen.indptr"], arrays["_seen.indices"]
    j = int(np.setdiff1d(np.arange(1, len(arrays["W"])), indices[indptr[0] : indptr[1]])[0])
    arrays["W"][j, :] = np.nan


def set_index(key: str, i: int, value: int):
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays[key][i] = value

    return edit


PROBES = {
    "indices_minus_1e9": (set_index("_seen.indices", 7, -(10**9)), "_seen.indices: entry 7 is -1000000000"),
    "indices_1e9": (set_index("_seen.indices", 7, 10**9), "_seen.indices: entry 7 is 1000000000"),
    "indptr_1e9": (set_index("_seen.indptr", 10, 10**9), "_seen.indptr: decreases at entry 11"),
    "nan_outside_smoke_check": (nan_outside_smoke_check, "W: entry ("),
    "float16_weights": (lambda a: a.update(W=a["W"].astype(np.float16)), "W: dtype float16"),
}


def corrupt(model_dir, edit) -> None:
    arrays = load_file(str(model_dir / ARRAYS_FILE))
    edit(arrays)
    save_file(arrays, str(model_dir / ARRAYS_FILE))


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory):
    """A model trained on another shop (product ids i0_0 ...), not on the served store."""
    ds, _ = oracle_dataset()
    return get_model_class("ease")(l2=1.0).fit(ds, TrainingOptions(seed=0)).save(tmp_path_factory.mktemp("f") / "m")


@pytest.mark.parametrize("probe", list(PROBES))
def test_reload_of_a_corrupt_model_is_422_and_the_old_model_keeps_serving(built, tmp_path, probe):
    edit, message = PROBES[probe]
    c, s = make_client(built, tmp_path)
    with c:
        before = rec(c, customer_id="C1", k=3)
        corrupt(s.model_dir, edit)
        r = c.post("/admin/models/reload", json={"wait": True}, headers=A)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["reload_state"] == "failed"
        assert body["last_error"].startswith(f"{s.model_dir / ARRAYS_FILE}: ") and message in body["last_error"]
        assert rec(c, customer_id="C1", k=3) == before  # the old model, unchanged
        assert rec(c, customer_id="C2", k=3)["items"]


def test_reload_of_a_model_of_another_catalogue_is_422(built, tmp_path, foreign_model):
    import shutil

    c, s = make_client(built, tmp_path)
    with c:
        before = rec(c, customer_id="C1", k=3)
        shutil.rmtree(s.model_dir)
        shutil.copytree(foreign_model, s.model_dir)
        r = c.post("/admin/models/reload", json={"wait": True}, headers=A)
        assert r.status_code == 422, r.text
        error = r.json()["last_error"]
        assert "12 of the model's 12 products are not in the catalogue of" in error and "'i0_0'" in error
        assert rec(c, customer_id="C1", k=3) == before


@pytest.mark.parametrize("probe", ["indices_1e9", "float16_weights"])
def test_serve_refuses_a_corrupt_model_at_start_with_exit_2(built, tmp_path, probe):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(built["models"]["ease"], model_dir)
    corrupt(model_dir, PROBES[probe][0])
    res = CliRunner().invoke(app, ["serve", "--model-dir", str(model_dir), "--store", str(built["store"]),
                                   "--no-auth"])
    assert res.exit_code == 2
    assert PROBES[probe][1] in " ".join(res.output.split())


def test_serve_refuses_a_model_of_another_catalogue_with_exit_2(built, foreign_model):
    res = CliRunner().invoke(app, ["serve", "--model-dir", str(foreign_model), "--store", str(built["store"]),
                                   "--no-auth"])
    assert res.exit_code == 2
    assert "not in the catalogue of" in " ".join(res.output.split())
