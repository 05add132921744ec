"""Fuzz worker: corrupt saved models of every registered model; each must be refused or serve.

Run by ``tests/models/test_model_files.py`` in a subprocess (``python -m tests.models.model_file_fuzz
--out DIR --seed S --cases N``) so that a crash (a segmentation fault in scipy or torch) fails that
test instead of killing pytest. For each fitted model it applies ``N`` seeded corruptions:

* ``bytes:arrays`` / ``bytes:meta``: flip 1 to 3 random bits anywhere in ``arrays.safetensors`` /
  ``model.json`` (headers included);
* ``entry``: set one random entry of one random array to an extreme value (+-1e9, -1, NaN, +-inf
  for floats; +-1e9, -1 for integers) or flip one random bit of it;
* ``dtype``: rewrite one random array as float16 (floats) or int32 (integers).

A case passes when :func:`retailgan.persistence.load_model`, reading the files and mapping them
(``mmap=True``) alike, raises :class:`ModelFileError`, or when the model loads and ``recommend``
(and ``score_histories`` where supported) gives finite, well-formed lists: the right shapes, known
product ids, no duplicates, every unseen product ranked. The worker prints each case before running
it (so the parent can name the case that crashed) and ends with one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from retailgan.errors import ModelFileError
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.persistence import ARRAYS_FILE, META_FILE, load_model
from tests.conftest import oracle_dataset
from tests.models.test_contract import FAST_CONFIGS

FLOAT_VALUES = (1e9, -1e9, -1.0, np.nan, np.inf, -np.inf)
INT_VALUES = (10**9, -(10**9), -1)


def fuzz_configs() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every registered model (few epochs: quality is not the point) plus the variants that save
    other arrays (weighted feedback, featgan's trend arrays, cfgan's item mode)."""
    configs = {name: (name, {**p, **({"epochs": 2} if "epochs" in p else {})}) for name, p in FAST_CONFIGS.items()}
    configs["ease-weight"] = ("ease", {"l2": 1.0, "feedback": "weight"})
    configs["itemknn-weight"] = ("itemknn", {**FAST_CONFIGS["itemknn"], "feedback": "weight"})
    configs["featgan-trend"] = ("featgan", {**configs["featgan"][1], "trend_days": 3})
    configs["cfgan-item"] = ("cfgan", {**configs["cfgan"][1], "mode": "item"})
    return configs


def flip_bits(path: Path, rng: np.random.Generator) -> str:
    data = bytearray(path.read_bytes())
    where = []
    for _ in range(int(rng.integers(1, 4))):
        pos, bit = int(rng.integers(len(data))), int(rng.integers(8))
        data[pos] ^= 1 << bit
        where.append(f"{pos}.{bit}")
    path.write_bytes(bytes(data))
    return f"bits {','.join(where)}"


def set_entry(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> str:
    key = sorted(arrays)[int(rng.integers(len(arrays)))]
    a = arrays[key].copy()
    flat = a.reshape(-1)
    if flat.size == 0:
        return f"{key}: empty, unchanged"
    i = int(rng.integers(flat.size))
    values = FLOAT_VALUES if a.dtype.kind == "f" else INT_VALUES if a.dtype != np.uint8 else (255,)
    choice = int(rng.integers(len(values) + 1))
    if choice == len(values):
        byte = i * a.itemsize + int(rng.integers(a.itemsize))
        bit = int(rng.integers(8))
        flat.view(np.uint8)[byte] ^= 1 << bit
        what = f"bit {bit} of byte {byte}"
    else:
        flat[i] = values[choice]
        what = repr(values[choice])
    arrays[key] = a
    return f"{key}[{i}] = {what}"


def set_dtype(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> str:
    key = sorted(arrays)[int(rng.integers(len(arrays)))]
    a = arrays[key]
    arrays[key] = a.astype(np.float16 if a.dtype.kind == "f" else np.int32)
    return f"{key} as {arrays[key].dtype}"


def corrupt(path: Path, rng: np.random.Generator) -> str:
    kind = ("bytes:arrays", "bytes:meta", "entry", "entry", "dtype")[int(rng.integers(5))]
    if kind.startswith("bytes"):
        return f"{kind} {flip_bits(path / (ARRAYS_FILE if kind == 'bytes:arrays' else META_FILE), rng)}"
    arrays = load_file(str(path / ARRAYS_FILE))
    what = set_entry(arrays, rng) if kind == "entry" else set_dtype(arrays, rng)
    save_file(arrays, str(path / ARRAYS_FILE))
    return f"{kind} {what}"


def check_serves(model: Any) -> None:
    """``recommend`` for every customer and an unknown one: finite, well-formed, complete lists."""
    users = [*map(str, model.users.ids), "nobody-in-particular"]
    n, k = model.n_items, model.n_items + 1  # one longer than the catalogue: padding included
    recs = model.recommend(users, k)
    assert recs.item_ids.shape == recs.scores.shape == recs.item_idx.shape == (len(users), k), "shapes"
    for r, user in enumerate(users):
        valid = recs.item_idx[r] >= 0
        ids = [str(i) for i in recs.item_ids[r][valid]]
        assert all(i in model.items for i in ids), f"{user}: unknown product ids"
        assert len(set(ids)) == len(ids), f"{user}: duplicate products"
        assert np.isfinite(recs.scores[r][valid]).all(), f"{user}: non-finite scores"
        u = model.users.index([user], missing="negative")[0]
        seen = model.seen.indices[model.seen.indptr[u] : model.seen.indptr[u + 1]] if recs.known[r] else []
        expected = n - len(np.unique(seen))
        assert valid.sum() == expected, f"{user}: {valid.sum()} products listed, {expected} unseen"
    history = sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 1], [0, 0, n - 1])), shape=(3, n))
    try:
        scores = np.asarray(model.score_histories(history))
    except NotImplementedError:
        return
    assert scores.shape == (3, n) and np.isfinite(scores).all(), "score_histories: non-finite or misshaped"


def run(out: Path, seed: int, cases: int) -> dict[str, Any]:
    ds, _ = oracle_dataset()
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {"cases": 0, "refused": 0, "served": 0, "failures": []}
    for label, (name, params) in fuzz_configs().items():
        clean = get_model_class(name)(**params).fit(ds, TrainingOptions(seed=seed)).save(out / label)
        for c in range(cases):
            path = out / f"{label}-case"
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(clean, path)
            case = f"{label} #{c}: {corrupt(path, rng)}"
            print(json.dumps({"case": case}), flush=True)
            summary["cases"] += 1
            for mmap in (False, True):  # read into memory, and mapped (the service's and batch workers' way)
                how = "mapped" if mmap else "read"
                try:
                    model = load_model(path, mmap=mmap)
                except ModelFileError as exc:
                    if "\n" in str(exc):
                        summary["failures"].append(f"{case} ({how}): multi-line error {exc!s:.300}")
                    summary["refused"] += 1
                    print(json.dumps({"refused": str(exc), "how": how}), flush=True)
                    continue
                except Exception as exc:
                    summary["failures"].append(f"{case} ({how}): load raised {type(exc).__name__}: {exc!s:.300}")
                    continue
                try:
                    check_serves(model)
                except Exception as exc:
                    tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                    summary["failures"].append(f"{case} ({how}): loaded but {tb[:300]}")
                    continue
                summary["served"] += 1
                print(json.dumps({"served": case, "how": how}), flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=30, help="corruptions per model")
    args = parser.parse_args(argv)
    summary = run(args.out, args.seed, args.cases)
    print(json.dumps({"summary": summary}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
