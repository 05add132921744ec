"""Memory-mapped model loading (``load_model(path, mmap=True)``, the service's and batch workers'
way): the same model as a normal load, every array a read-only view of the mapped file, and a
damaged file header refused like any other defect."""

from __future__ import annotations

import json
import mmap
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from retailgan.errors import ModelFileError
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.persistence import ARRAYS_FILE, load_model, map_arrays
from retailgan.serving.engine import ModelBundle
from tests.conftest import oracle_dataset


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mmap")
    ds, _ = oracle_dataset()
    params = {"ease": {"l2": 1.0}, "ials": {"factors": 4, "epochs": 2}, "itemknn": {},
              "sansa": {"l2": 1.0, "neighbors": 20}}
    return {name: get_model_class(name)(**p).fit(ds, TrainingOptions(seed=0)).save(root / name)
            for name, p in params.items()}


LEARNED = {"ease": ["W"], "ials": ["user_factors", "item_factors"], "itemknn": ["W"], "sansa": ["Ut", "V"]}
"""The arrays each model keeps from its file."""


def _arrays(model, name: str) -> dict[str, np.ndarray]:
    out = {"popularity": model.popularity}
    for attr in ["seen", *LEARNED[name]]:
        value = getattr(model, attr)
        if isinstance(value, np.ndarray):
            out[attr] = value
        else:  # a sparse matrix: its three arrays
            out.update({f"{attr}.{part}": getattr(value, part) for part in ("data", "indices", "indptr")})
    return out


def _mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of a memory map (not a copy in this process's heap)."""
    base = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, mmap.mmap)


@pytest.mark.parametrize("name", ["ease", "ials", "itemknn", "sansa"])
def test_a_mapped_model_is_the_read_model(saved, name):
    read, mapped = load_model(saved[name]), load_model(saved[name], mmap=True)
    a, b = _arrays(read, name), _arrays(mapped, name)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
        assert _mapped(b[key]) and not b[key].flags.writeable, key  # shared pages, never written
    users = [*read.users.ids[:20].tolist(), "nobody"]
    x, y = read.recommend(users, 5), mapped.recommend(users, 5)
    np.testing.assert_array_equal(x.item_idx, y.item_idx)
    np.testing.assert_array_equal(x.scores, y.scores)
    t = mapped.top_k(users, 5)
    np.testing.assert_array_equal(t.item_idx, x.item_idx)


def test_writing_into_a_mapped_model_fails(saved):
    model = load_model(saved["ials"], mmap=True)
    with pytest.raises(ValueError, match="read-only"):
        model.item_factors[0, 0] = 1.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_service_bundle_maps_the_file(saved, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(saved["ials"], path)
    bundle = ModelBundle.load(path)
    assert str((path / ARRAYS_FILE).resolve()) in Path("/proc/self/maps").read_text()
    assert not bundle.model.user_factors.flags.writeable
    # A model directory is replaced by a rename: the old mapping stays valid and keeps serving.
    shutil.rmtree(path)
    assert bundle.model.recommend([str(bundle.model.users.ids[0])], 3).item_idx.shape == (1, 3)


def _rewrite(src: Path, dst: Path, header: object | None = None, *, raw: bytes | None = None,
             data: bytes | None = None) -> Path:
    """A copy of the model at ``src`` whose arrays file has another header (or raw bytes)."""
    shutil.copytree(src, dst)
    f = dst / ARRAYS_FILE
    if raw is None:
        blob = f.read_bytes()
        n = struct.unpack("<Q", blob[:8])[0]
        text = json.dumps(header).encode()
        raw = struct.pack("<Q", len(text)) + text + (blob[8 + n :] if data is None else data)
    f.write_bytes(raw)
    return dst


def _header(path: Path) -> dict:
    blob = (path / ARRAYS_FILE).read_bytes()
    return json.loads(blob[8 : 8 + struct.unpack("<Q", blob[:8])[0]])


def _edit(key: str, **changes):
    def edit(h: dict) -> dict:
        h[key] = {**h[key], **changes}
        return h

    return edit


def _shift(h: dict) -> dict:
    end = max(e["data_offsets"][1] for k, e in h.items() if k != "__metadata__")
    last = next(k for k, e in h.items() if k != "__metadata__" and e["data_offsets"][1] == end)
    b, e = h[last]["data_offsets"]
    h[last]["data_offsets"] = [b - 4, e - 4]  # overlaps the array before it, leaves 4 bytes unused
    return h


HEADER_DEFECTS = {
    "unknown_dtype": (_edit("item_factors", dtype="F99"), "item_factors: unknown dtype 'F99'"),
    "negative_shape": (_edit("item_factors", shape=[-1, 4]), "item_factors: bad shape"),
    "offsets_past_end": (_edit("item_factors", data_offsets=[0, 10**12]), "item_factors: data offsets"),
    "size_mismatch": (_edit("item_factors", shape=[3, 4]), r"item_factors: \d+ bytes for shape \[3, 4\]"),
    "overlap": (_shift, "a gap or an overlap"),
    "not_an_object": (lambda h: [1, 2], "header is not a JSON object"),
}


@pytest.mark.parametrize("defect", list(HEADER_DEFECTS))
def test_a_damaged_header_is_refused_naming_the_file(saved, tmp_path, defect):
    edit, message = HEADER_DEFECTS[defect]
    path = _rewrite(saved["ials"], tmp_path / "m", edit(_header(saved["ials"])))
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(path, mmap=True)
    assert str(err.value).startswith(f"{path / ARRAYS_FILE}: corrupt")
    with pytest.raises(ModelFileError):  # and the normal load refuses it too
        load_model(path)


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x01\x02", "shorter than the 8-byte header length"),
    (struct.pack("<Q", 10**6) + b"{}", "header length 1000000 is past the end"),
    (struct.pack("<Q", 4) + b"{no}", "header is not JSON"),
])
def test_a_truncated_or_garbled_file_is_refused(saved, tmp_path, raw, message):
    path = _rewrite(saved["ials"], tmp_path / "m", raw=raw)
    with pytest.raises(ModelFileError, match=message):
        load_model(path, mmap=True)


def test_trailing_bytes_are_refused(saved, tmp_path):
    blob = (saved["ials"] / ARRAYS_FILE).read_bytes()
    path = _rewrite(saved["ials"], tmp_path / "m", raw=blob + b"\0" * 8)
    with pytest.raises(ModelFileError, match="the arrays end at byte"):
        load_model(path, mmap=True)


def test_map_arrays_reads_what_safetensors_wrote(tmp_path):
    from safetensors.numpy import save_file

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([7], dtype=np.uint8),
              "c": np.zeros((0, 5), dtype=np.int64), "d": np.linspace(0, 1, 5)}
    save_file(arrays, str(tmp_path / "x.safetensors"), metadata={"k": "v"})
    got = map_arrays(tmp_path / "x.safetensors")
    assert got.keys() == arrays.keys()
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)


def test_the_version_is_named_by_model_json_which_records_the_arrays_digest(saved, tmp_path):
    import hashlib

    from retailgan.serving.engine import model_version

    path = tmp_path / "m"
    shutil.copytree(saved["ials"], path)
    meta_bytes = (path / "model.json").read_bytes()
    meta = json.loads(meta_bytes)
    arrays = (path / ARRAYS_FILE).read_bytes()
    assert meta["arrays_sha256"] == hashlib.sha256(arrays).hexdigest() and meta["arrays_bytes"] == len(arrays)
    assert model_version(path) == hashlib.sha256(meta_bytes).hexdigest()[:12] == ModelBundle.load(path).version
    # A model.json written before the digest was recorded: both files are hashed, as they were.
    del meta["arrays_sha256"], meta["arrays_bytes"]
    old = json.dumps(meta).encode()
    (path / "model.json").write_bytes(old)
    assert model_version(path) == hashlib.sha256(old + arrays).hexdigest()[:12] == ModelBundle.load(path).version


def test_arrays_of_another_size_than_model_json_records_are_refused(saved, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(saved["ials"], path)
    meta = json.loads((path / "model.json").read_text())
    meta["arrays_bytes"] += 8  # arrays that pass every check, but not the ones model.json describes
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"arrays.safetensors: \d+ bytes, .*model.json records \d+"):
        ModelBundle.load(path)


def test_a_directory_replaced_while_it_loads_is_refused(saved, tmp_path, monkeypatch):
    import retailgan.serving.engine as engine

    path = tmp_path / "m"
    shutil.copytree(saved["ials"], path)
    real = engine.load_model

    def load_then_replace(p, **kw):
        model = real(p, **kw)
        shutil.rmtree(path)
        shutil.copytree(saved["ials"], path)  # the same model, written again: a new arrays file
        return model

    monkeypatch.setattr(engine, "load_model", load_then_replace)
    with pytest.raises(ModelFileError, match="changed while it was being loaded"):
        ModelBundle.load(path)
    monkeypatch.setattr(engine, "load_model", real)
    assert ModelBundle.load(path).version == ModelBundle.load(saved["ials"]).version
