"""Model files: ``model.json`` (class, config, id maps, catalogue, version) + ``arrays.safetensors``.

Loading needs neither the training data nor pickle: arrays come from safetensors, everything else
from JSON. A directory is written to a temporary sibling first and renamed into place, so a
crash never leaves a half-written model where a server might load it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from retailgan import __version__
from retailgan.data.dataset import ItemInfo, Vocabulary
from retailgan.errors import ModelFileError
from retailgan.fileio import file_mode, make_temp_dir

FORMAT_VERSION = 1
META_FILE = "model.json"
ARRAYS_FILE = "arrays.safetensors"


def _csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.data": np.ascontiguousarray(m.data, dtype=np.float32),
        f"{prefix}.indices": np.ascontiguousarray(m.indices, dtype=np.int64),
        f"{prefix}.indptr": np.ascontiguousarray(m.indptr, dtype=np.int64),
    }


def _csr_from(prefix: str, arrays: dict[str, np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix(
        (arrays.pop(f"{prefix}.data"), arrays.pop(f"{prefix}.indices"), arrays.pop(f"{prefix}.indptr")),
        shape=shape,
    )


def _json_nan(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def save_model(model: Any, path: str | Path) -> Path:
    """Save a fitted recommender to directory ``path`` (replaced atomically if it exists)."""
    from retailgan.models.registry import name_of

    model._check_fitted()
    path = Path(path)
    arrays = dict(model._state())
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise TypeError(f"state entry {key!r} is not a numeric numpy array")
    arrays.update(_csr_arrays("_seen", model.seen))
    arrays["_popularity"] = np.asarray(model.popularity, dtype=np.float32)
    info: ItemInfo = model.item_info
    meta = {
        "format_version": FORMAT_VERSION,
        "retailgan_version": __version__,
        "model": name_of(type(model)),
        "config": model.config.to_dict(),
        "fit_seconds": model.fit_seconds,
        "extra": model._extra_meta() if hasattr(model, "_extra_meta") else {},
        "user_ids": [str(u) for u in model.users.ids],
        "item_ids": [str(i) for i in model.items.ids],
        "item_info": {
            "titles": [None if t is None else str(t) for t in info.titles],
            "categories": [None if c is None else str(c) for c in info.categories],
            "prices": [_json_nan(float(p)) for p in info.prices],
        },
    }
    with atomic_directory(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / ARRAYS_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return path


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Write a directory's files into the yielded temporary directory; on success it replaces
    ``path`` in one rename (readers never see a half-written directory), on error it is removed
    and ``path`` is left as it was. The folder and its files get the modes of a plain write
    (:mod:`retailgan.fileio`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, prefix=f".{path.name}.")
    try:
        yield tmp
        for f in tmp.rglob("*"):  # safetensors writes its files 0600; give them a plain file's mode
            if f.is_file():
                os.chmod(f, file_mode())
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a model directory (validated)."""
    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise ModelFileError(f"{path}: no such model directory")
    if not meta_path.is_file():
        raise ModelFileError(f"{meta_path}: missing (not a retailgan model directory)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{meta_path}: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{meta_path}: unsupported format_version {version!r} (expected {FORMAT_VERSION})")
    for key in ("model", "config", "user_ids", "item_ids", "item_info"):
        if key not in meta:
            raise ModelFileError(f"{meta_path}: missing field {key!r}")
    return meta


def load_model(path: str | Path) -> Any:
    """Load a recommender saved by :func:`save_model`."""
    from retailgan.models.registry import get_model_class

    path = Path(path)
    meta = read_meta(path)
    cls = get_model_class(meta["model"])
    try:
        arrays = load_file(str(path / ARRAYS_FILE))
    except FileNotFoundError:
        raise ModelFileError(f"{path / ARRAYS_FILE}: missing") from None
    except Exception as exc:  # safetensors raises its own error types on corrupt headers
        raise ModelFileError(f"{path / ARRAYS_FILE}: corrupt ({exc})") from None
    model = cls(cls.config_class.from_dict(meta["config"]))
    model.users = Vocabulary(meta["user_ids"])
    model.items = Vocabulary(meta["item_ids"])
    info = meta["item_info"]
    n_items = len(model.items)
    try:
        model.item_info = ItemInfo(
            titles=np.asarray(info["titles"], dtype=object),
            categories=np.asarray(info["categories"], dtype=object),
            prices=np.asarray([np.nan if p is None else p for p in info["prices"]], dtype=np.float64),
        )
        model.seen = _csr_from("_seen", arrays, (len(model.users), n_items))
        model.popularity = arrays.pop("_popularity")
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{path}: inconsistent model files ({exc})") from None
    if len(model.item_info.titles) != n_items or model.popularity.shape != (n_items,):
        raise ModelFileError(f"{path}: item metadata does not match the {n_items} item ids")
    model.fit_seconds = float(meta.get("fit_seconds", 0.0))
    if hasattr(model, "_load_extra_meta"):
        model._load_extra_meta(meta.get("extra", {}))
    model._load_state(arrays)
    return model
