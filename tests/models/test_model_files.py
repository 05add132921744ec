"""Corrupt model files are refused at load with one clear error naming the file and the array
(docs/reliability.md, "Model files"), never a crash; a fuzz run covers every registered model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from retailgan.errors import ModelFileError
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.persistence import ARRAYS_FILE, load_model
from tests.conftest import REPO, oracle_dataset
from tests.models.model_file_fuzz import fuzz_configs

Edit = Callable[[dict[str, np.ndarray]], None]


@pytest.fixture(params=[False, True], ids=["read", "mapped"])
def mmap(request) -> bool:
    """Every refusal holds for files read into memory and for mapped ones (the service's way)."""
    return request.param


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("model-files")
    ds, _ = oracle_dataset()
    params = {"ease": {"l2": 1.0}, "ials": {"factors": 4, "epochs": 2}}
    return {name: get_model_class(name)(**p).fit(ds, TrainingOptions(seed=0)).save(root / name)
            for name, p in params.items()}


def corrupted(src: Path, dst: Path, edit: Edit) -> Path:
    shutil.copytree(src, dst)
    arrays = load_file(str(dst / ARRAYS_FILE))
    edit(arrays)
    save_file(arrays, str(dst / ARRAYS_FILE))
    return dst


def setter(key: str, index: int | tuple[int, ...], value: float) -> Edit:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays[key][index] = value

    return edit


def flip_bit(key: str, index: int, bit: int) -> Edit:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays[key][index : index + 1].view(np.uint64)[0] ^= np.uint64(1) << np.uint64(bit)

    return edit


def swap_offsets(arrays: dict[str, np.ndarray]) -> None:
    p = arrays["_seen.indptr"]
    p[10], p[11] = p[11], p[10]  # one row "ends" before it starts


def as_dtype(key: str, dtype: type) -> Edit:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays[key] = arrays[key].astype(dtype)

    return edit


# Items 1 and 2 of the hardening issue: each of these crashed scipy (exit 139) or gave a 500.
INDEX_PROBES = {
    "indices_minus_1e9": (setter("_seen.indices", 5, -(10**9)), r"_seen\.indices: entry 5 is -1000000000, out"),
    "indices_1e9": (setter("_seen.indices", 5, 10**9), r"_seen\.indices: entry 5 is 1000000000, outside \[0, 12\)"),
    "indices_bit40": (flip_bit("_seen.indices", 5, 40), r"_seen\.indices: entry 5 is \d+, outside \[0, 12\)"),
    "indptr_1e9": (setter("_seen.indptr", 10, 10**9), r"_seen\.indptr: decreases at entry 11"),
    "indptr_not_monotone": (swap_offsets, r"_seen\.indptr: decreases at entry 11"),
}


@pytest.mark.parametrize("probe", list(INDEX_PROBES))
def test_corrupt_sparse_index_is_refused_naming_file_and_array(saved, mmap, tmp_path, probe):
    edit, message = INDEX_PROBES[probe]
    path = corrupted(saved["ease"], tmp_path / "m", edit)
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(path, mmap=mmap)
    assert str(err.value).startswith(f"{path / ARRAYS_FILE}: ")


@pytest.mark.parametrize("probe", ["indices_minus_1e9", "indices_1e9", "indptr_1e9"])
def test_cli_recommend_exits_2_on_a_corrupt_index(saved, tmp_path, probe):
    # A subprocess: were the check missing, scipy's out-of-bounds read would kill it, not pytest.
    path = corrupted(saved["ease"], tmp_path / "m", INDEX_PROBES[probe][0])
    res = subprocess.run([sys.executable, "-m", "retailgan.cli", "recommend", "--model-dir", str(path),
                          "--user", "u1_3", "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path / ARRAYS_FILE}: _seen.ind" in lines[0], lines


@pytest.mark.parametrize(
    ("model", "key", "index"),
    [("ease", "W", (11, 3)), ("ials", "user_factors", (33, 1)), ("ials", "item_factors", (10, 0))],
)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weight_anywhere_is_refused(saved, mmap, tmp_path, model, key, index, value):
    # Item 3: rows of customers in the second group (and of its products), which the service's
    # one-customer smoke check never scores.
    path = corrupted(saved[model], tmp_path / "m", setter(key, index, value))
    with pytest.raises(ModelFileError, match=rf"{key}: entry \({index[0]}, {index[1]}\) is {value}"):
        load_model(path, mmap=mmap)


@pytest.mark.parametrize(
    ("model", "key", "dtype", "message"),
    [
        ("ease", "W", np.float16, "W: dtype float16 is not one retailgan saves"),
        ("ease", "W", np.float64, "W: dtype float64, expected float32"),
        ("ials", "item_factors", np.float16, "item_factors: dtype float16 is not one retailgan saves"),
        ("ease", "_seen.indices", np.int32, "_seen.indices: dtype int32 is not one retailgan saves"),
        ("ease", "_popularity", np.float64, "_popularity: dtype float64, expected float32"),
    ],
)
def test_other_dtypes_are_refused(saved, mmap, tmp_path, model, key, dtype, message):
    path = corrupted(saved[model], tmp_path / "m", as_dtype(key, dtype))
    with pytest.raises(ModelFileError, match=message):
        load_model(path, mmap=mmap)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.update(W=a["W"][:, :-1]), r"W: shape \(12, 11\), expected \(12, 12\)"),
        (lambda a: a.update(_popularity=a["_popularity"][:-1]), r"_popularity: shape \(11,\), expected \(12,\)"),
        (lambda a: a.pop("W"), "W: missing"),
        (setter("_popularity", 3, -1.0), r"_popularity: entry 3 is -1.0, expected a count >= 0"),
    ],
)
def test_shapes_and_counts_must_match_the_id_maps(saved, mmap, tmp_path, edit, message):
    with pytest.raises(ModelFileError, match=message):
        load_model(corrupted(saved["ease"], tmp_path / "m", edit), mmap=mmap)


def test_cli_recommend_exits_2_on_float16_weights(saved, tmp_path):
    from typer.testing import CliRunner

    from retailgan.cli import app

    path = corrupted(saved["ease"], tmp_path / "m", as_dtype("W", np.float16))
    res = CliRunner().invoke(app, ["recommend", "--model-dir", str(path), "--user", "u0_1"])
    assert res.exit_code == 2
    assert "arrays.safetensors: W: dtype float16" in " ".join(res.output.split())


def test_fuzzed_model_files_are_refused_or_serve_well_formed_lists(tmp_path):
    """Random bit flips, extreme entries and foreign dtypes in saved models of every registered
    model (tests/models/model_file_fuzz.py), in a subprocess so a crash is reported here."""
    res = subprocess.run(
        [sys.executable, "-m", "tests.models.model_file_fuzz", "--out", str(tmp_path), "--seed", "0", "--cases", "25"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    last_case = next((line["case"] for line in reversed(lines) if "case" in line), None)
    assert res.returncode == 0, f"the worker died ({res.returncode}) during {last_case}: {res.stderr[-2000:]}"
    summary = lines[-1]["summary"]
    assert summary["failures"] == []
    assert summary["cases"] == 25 * len(fuzz_configs()) and summary["refused"] > 0 and summary["served"] > 0
