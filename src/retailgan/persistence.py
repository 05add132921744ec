"""Model files: ``model.json`` (the arrays' SHA-256, class, config, id maps, catalogue, version) +
``arrays.safetensors``.

Loading needs neither the training data nor pickle: arrays come from safetensors, everything else
from JSON. A directory is written to a temporary sibling first and renamed into place, so a
crash never leaves a half-written model where a server might load it.

Everything read is checked before it is used (:func:`load_model`): each array's dtype and shape
against what the model saves and its id maps, every float array finite, sparse offsets monotone
and indices in range (scipy and torch index without bounds checks, so a corrupt index would read
out of bounds). A file that fails raises :class:`ModelFileError` naming the file and the array.

``load_model(path, mmap=True)`` (the service and batch workers) maps ``arrays.safetensors`` into
memory instead of reading it: every array is a read-only view of the file's pages (the format is an
8-byte header length, a JSON header, then raw little-endian data), so processes that load the same
model share one copy of the weights in the page cache (safetensors' own numpy API,
``safe_open(...).get_tensor``, returns a private copy of each array, hence a reader here). The
checks are the same, and they run on the views. A mapped file must never be rewritten in place;
model directories are only ever replaced by a rename (:func:`atomic_directory`), which leaves a
mapping of the old file valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap as _mmap
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file

from retailgan import __version__
from retailgan.data.dataset import ItemInfo, Vocabulary
from retailgan.errors import ModelFileError, RetailganError
from retailgan.fileio import file_mode, make_temp_dir

FORMAT_VERSION = 1
META_FILE = "model.json"
ARRAYS_FILE = "arrays.safetensors"
_RECORDED_ARRAYS = re.compile(rb'\{"arrays_sha256": "([0-9a-f]{64})", "arrays_bytes": (\d+)[,}]')
"""How model.json starts when it records the SHA-256 and size of arrays.safetensors (``save_model``
writes them first, so they are read without parsing the id maps after them)."""


def _csr_arrays(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.data": np.ascontiguousarray(m.data, dtype=np.float32),
        f"{prefix}.indices": np.ascontiguousarray(m.indices, dtype=np.int64),
        f"{prefix}.indptr": np.ascontiguousarray(m.indptr, dtype=np.int64),
    }


# -- checks of the arrays read from a model file ---------------------------------------------------
# Each check reads every entry once: O(total array size), the same order as reading the file.

SAVED_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int64, np.uint8))
"""The dtypes retailgan writes; anything else (float16, int32, bool, ...) is a foreign or corrupt file."""


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def take(arrays: dict[str, np.ndarray], key: str, dtype: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """``arrays[key]``, checked against the dtype and shape the model saves (None: any length).

    Raises :class:`ModelFileError` ("<key>: ...") when missing or different."""
    if key not in arrays:
        raise ModelFileError(f"{key}: missing")
    a = arrays[key]
    if a.dtype != np.dtype(dtype):
        raise ModelFileError(f"{key}: dtype {a.dtype}, expected {np.dtype(dtype)}")
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape, strict=True)):
        raise ModelFileError(f"{key}: shape {a.shape}, expected {_shape_text(shape)}")
    return a


def check_indices(a: np.ndarray, key: str, n: int) -> None:
    """Every entry of the integer array ``a`` is an index in ``[0, n)``."""
    if a.size and (int(a.min()) < 0 or int(a.max()) >= n):
        bad = int(np.flatnonzero((a < 0) | (a >= n))[0])
        raise ModelFileError(f"{key}: entry {bad} is {int(a[bad])}, outside [0, {n})")


def check_offsets(indptr: np.ndarray, key: str, total: int) -> None:
    """CSR-style row offsets: start at 0, never decrease, end at ``total`` (the entries' count)."""
    if indptr[0] != 0:
        raise ModelFileError(f"{key}: starts at {int(indptr[0])}, expected 0")
    step = np.diff(indptr)
    if (step < 0).any():
        bad = int(np.flatnonzero(step < 0)[0]) + 1
        raise ModelFileError(f"{key}: decreases at entry {bad} ({int(indptr[bad - 1])} -> {int(indptr[bad])})")
    if indptr[-1] != total:
        raise ModelFileError(f"{key}: ends at {int(indptr[-1])}, expected {total} (the number of entries)")


def check_nonnegative(a: np.ndarray, key: str) -> None:
    """Counts (popularity, recent sales) are >= 0 (negative ones turn ``log1p`` into NaN)."""
    if a.size and (a < 0).any():
        bad = int(np.flatnonzero(a.ravel() < 0)[0])
        raise ModelFileError(f"{key}: entry {bad} is {a.ravel()[bad]}, expected a count >= 0")


def take_csr(arrays: dict[str, np.ndarray], prefix: str, shape: tuple[int, int]) -> sp.csr_matrix:
    """The sparse matrix saved as ``prefix.data`` / ``.indices`` / ``.indptr``, checked in full
    before scipy sees it (scipy trusts the offsets and indices it is given). Read-only (mapped)
    arrays are kept as they are, without a copy."""
    indptr = take(arrays, f"{prefix}.indptr", np.int64, (shape[0] + 1,))
    indices = take(arrays, f"{prefix}.indices", np.int64, (None,))
    data = take(arrays, f"{prefix}.data", np.float32, (len(indices),))
    check_offsets(indptr, f"{prefix}.indptr", len(indices))
    check_indices(indices, f"{prefix}.indices", shape[1])
    if data.flags.writeable:
        return sp.csr_matrix((data, indices, indptr), shape=shape)
    # scipy's constructor copies int64 offsets and indices down to int32 when they fit, which
    # would give every process its own copy of a mapped history; the checked arrays are set as
    # they are instead (scipy works with int64 offsets and indices alike).
    m = sp.csr_matrix(shape, dtype=np.float32)
    m.data, m.indices, m.indptr = data, indices, indptr
    return m


def check_arrays(arrays: dict[str, np.ndarray]) -> None:
    """What holds for every array of every model: a dtype retailgan saves, finite floats."""
    for key, a in arrays.items():
        if a.dtype not in SAVED_DTYPES:
            raise ModelFileError(f"{key}: dtype {a.dtype} is not one retailgan saves")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            flat = a.ravel()
            bad = int(np.flatnonzero(~np.isfinite(flat))[0])
            where = tuple(int(i) for i in np.unravel_index(bad, a.shape)) if a.ndim > 1 else bad
            raise ModelFileError(f"{key}: entry {where} is {flat[bad]} (not finite)")


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
        write_arrays(arrays, tmp / ARRAYS_FILE)
        # The arrays' digest in model.json makes a digest of model.json alone a version of the whole
        # directory: a loader need not read the weights to name the model (engine.model_version).
        # First in the file, so that a loader finds it without parsing the rest (ARRAYS_DIGEST_PREFIX).
        digest, size = file_sha256(tmp / ARRAYS_FILE)
        meta = {"arrays_sha256": digest, "arrays_bytes": size, **meta}
        (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return path


def write_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write ``arrays`` as a safetensors file, each straight from its own memory (safetensors'
    numpy ``save_file`` copies every array into bytes first: twice a model's size at peak)."""
    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {}
    offset = 0
    for key in sorted(arrays):
        a = arrays[key]
        header[key] = {"dtype": names[np.dtype(a.dtype).newbyteorder("<")], "shape": list(a.shape),
                       "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # data 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for key in sorted(arrays):
            a = np.require(arrays[key], dtype=np.dtype(arrays[key].dtype).newbyteorder("<"), requirements="C")
            f.write(memoryview(a.reshape(-1)).cast("B"))


def recorded_arrays(meta: bytes) -> tuple[str, int] | None:
    """The SHA-256 (hex) and size of arrays.safetensors recorded at the start of model.json's
    bytes ``meta``, or None (a model.json written before they were recorded)."""
    m = _RECORDED_ARRAYS.match(meta)
    return (m.group(1).decode(), int(m.group(2))) if m else None


def file_sha256(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size in bytes of a file, read in 1 MiB chunks (hashlib releases the
    interpreter lock for each)."""
    h, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


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
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(src: Path, dest: Path) -> None:
    """Rename the finished directory ``src`` to ``dest`` (same file system), replacing a previous
    ``dest`` in one rename."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dest)


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


SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    code: np.dtype(t).newbyteorder("<")
    for code, t in (("F64", np.float64), ("F32", np.float32), ("F16", np.float16), ("I64", np.int64),
                    ("I32", np.int32), ("I16", np.int16), ("I8", np.int8), ("U64", np.uint64),
                    ("U32", np.uint32), ("U16", np.uint16), ("U8", np.uint8), ("BOOL", np.bool_))
}
"""safetensors' dtype codes that numpy has (any other code is refused as corrupt)."""
MAX_HEADER_BYTES = 100 << 20
"""safetensors' own limit on the JSON header."""


def map_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the safetensors file ``path`` as a read-only view of one memory map (no
    copy: pages are read on first use and shared with every process mapping the same file).

    The header is checked as safetensors checks it: known dtypes, non-negative shapes, each
    array's byte range the size its shape says, the ranges covering the data without gaps or
    overlaps. Raises :class:`ValueError` (corrupt) or :class:`FileNotFoundError`."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"header length {n} is past the end of the file ({size} bytes)")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"header is not JSON ({exc})") from None
        mapped = _mmap.mmap(fh.fileno(), 0, access=_mmap.ACCESS_READ)
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    start, data_bytes = 8 + n, size - 8 - n
    spans: list[tuple[int, int, str]] = []
    arrays: dict[str, np.ndarray] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"{key}: header entry is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{key}: unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
            raise ValueError(f"{key}: bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise ValueError(f"{key}: data offsets {offsets!r} outside the {data_bytes} data bytes")
        dt = SAFETENSORS_DTYPES[dtype]
        if offsets[1] - offsets[0] != math.prod(shape) * dt.itemsize:
            raise ValueError(f"{key}: {offsets[1] - offsets[0]} bytes for shape {shape} of {dtype}")
        spans.append((offsets[0], offsets[1], key))
        a = np.ndarray(tuple(shape), dtype=dt, buffer=mapped, offset=start + offsets[0])
        arrays[key] = a if dt.isnative else a.astype(dt.newbyteorder("="))  # a copy only on big-endian hosts
    end = 0
    for begin, stop, key in sorted(spans):
        if begin != end:
            raise ValueError(f"{key}: data starts at {begin}, expected {end} (a gap or an overlap)")
        end = stop
    if end != data_bytes:
        raise ValueError(f"the arrays end at byte {end} of {data_bytes} data bytes")
    return arrays


def load_model(path: str | Path, *, mmap: bool = False) -> Any:
    """Load a recommender saved by :func:`save_model`; every array is checked first (module
    docstring). Raises :class:`ModelFileError` naming the file (and array) for any defect.

    ``mmap``: the arrays are read-only views of the mapped file, shared between processes (for
    scoring; a model to change, as :mod:`retailgan.forget` does, is read into memory)."""
    path = Path(path)
    meta = read_meta(path)
    meta_path, arrays_path = path / META_FILE, path / ARRAYS_FILE
    try:
        model = _model_from_meta(meta)
    except (RetailganError, KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelFileError(f"{meta_path}: {detail}") from None
    if mmap:
        # torch warns once per process when it wraps a read-only array; mapped model arrays are read-only
        # on purpose (nothing may write into a shared model), so the warning says nothing here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    try:
        arrays = map_arrays(arrays_path) if mmap else load_file(str(arrays_path))
    except FileNotFoundError:
        raise ModelFileError(f"{arrays_path}: missing") from None
    except Exception as exc:  # safetensors raises its own error types on corrupt headers
        raise ModelFileError(f"{arrays_path}: corrupt ({exc})") from None
    try:
        check_arrays(arrays)
        n_users, n_items = len(model.users), len(model.items)
        model.seen = take_csr(arrays, "_seen", (n_users, n_items))
        model.popularity = take(arrays, "_popularity", np.float32, (n_items,))
        check_nonnegative(model.popularity, "_popularity")
        model._load_state({k: v for k, v in arrays.items() if not k.startswith(("_seen.", "_popularity"))})
    except ModelFileError as exc:
        raise ModelFileError(f"{arrays_path}: {exc}") from None
    except Exception as exc:  # anything else a file that passed the checks can still raise
        raise ModelFileError(f"{path}: inconsistent model files ({type(exc).__name__}: {exc})") from None
    return model


def _model_from_meta(meta: dict[str, Any]) -> Any:
    """An unfitted model with the config, id maps, catalogue and extras of ``meta``."""
    from retailgan.models.registry import get_model_class

    cls = get_model_class(meta["model"])
    model = cls(cls.config_class.from_dict(meta["config"]))
    model.users = Vocabulary(meta["user_ids"])
    model.items = Vocabulary(meta["item_ids"])
    info = meta["item_info"]
    model.item_info = ItemInfo(
        titles=np.asarray(info["titles"], dtype=object),
        categories=np.asarray(info["categories"], dtype=object),
        prices=np.asarray([np.nan if p is None else p for p in info["prices"]], dtype=np.float64),
    )
    n_items = len(model.items)
    if any(len(a) != n_items for a in (model.item_info.titles, model.item_info.categories, model.item_info.prices)):
        raise ModelFileError(f"item_info does not match the {n_items} item ids")
    model.fit_seconds = float(meta.get("fit_seconds", 0.0))
    if hasattr(model, "_load_extra_meta"):
        model._load_extra_meta(meta.get("extra", {}))
    return model
