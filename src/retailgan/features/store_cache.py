"""The product feature cache in the DuckDB store, refreshed incrementally for new products.

Two tables, created on first write:

* ``item_features(item_id VARCHAR PRIMARY KEY, vector FLOAT[], imputed BOOLEAN)``: one feature
  vector per product (``imputed``: its collaborative block came from text neighbours);
* ``feature_space(name VARCHAR PRIMARY KEY, meta VARCHAR, shape BIGINT[], data DOUBLE[])``: the
  fitted space (``name = 'meta'`` holds its JSON; the other rows its arrays), so the cache can
  embed products without the model that fitted it.

:func:`refresh_feature_cache` embeds every catalogue product (``items`` table) that has no row yet,
from its title, category and price, without refitting; existing rows are never rewritten. Every
write is one transaction: on error the store is unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retailgan.data.store import Store
from retailgan.errors import StoreError
from retailgan.features.space import FeatureSpace

_DDL = (
    "CREATE TABLE IF NOT EXISTS item_features (item_id VARCHAR PRIMARY KEY, vector FLOAT[], imputed BOOLEAN)",
    "CREATE TABLE IF NOT EXISTS feature_space (name VARCHAR PRIMARY KEY, meta VARCHAR, shape BIGINT[], data DOUBLE[])",
)


def write_feature_cache(
    store_path: str | Path,
    space: FeatureSpace,
    item_ids: np.ndarray,
    features: np.ndarray,
    imputed: np.ndarray | None = None,
) -> int:
    """Replace the store's feature cache with ``space`` and ``features`` (rows = ``item_ids``).
    Returns the number of products written."""
    if len(item_ids) != len(features):
        raise StoreError(f"{len(item_ids)} item ids for {len(features)} feature rows")
    imputed = np.zeros(len(item_ids), bool) if imputed is None else np.asarray(imputed, bool)
    with Store.open(store_path, create=False) as store, store.transaction() as con:
        for ddl in _DDL:
            con.execute(ddl)
        con.execute("DELETE FROM item_features")
        con.execute("DELETE FROM feature_space")
        con.execute("INSERT INTO feature_space VALUES ('meta', ?, NULL, NULL)", [json.dumps(space.meta())])
        for name, arr in space.arrays().items():
            a = np.asarray(arr, np.float64)
            con.execute("INSERT INTO feature_space VALUES (?, NULL, ?, ?)", [name, list(a.shape), a.ravel().tolist()])
        _insert(con, item_ids, features, imputed)
    return len(item_ids)


def _insert(con, item_ids: np.ndarray, features: np.ndarray, imputed: np.ndarray) -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "item_id": pa.array([str(i) for i in item_ids], pa.string()),
            "vector": pa.array(list(np.asarray(features, np.float32)), pa.list_(pa.float32())),
            "imputed": pa.array(np.asarray(imputed, bool)),
        }
    )
    con.register("_new_features", table)
    try:
        con.execute("INSERT INTO item_features SELECT item_id, vector, imputed FROM _new_features")
    finally:
        con.unregister("_new_features")


def _has_cache(store: Store) -> bool:
    row = store.con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('item_features', 'feature_space')"
    ).fetchone()
    return bool(row and row[0] == 2)


def read_feature_cache(store_path: str | Path) -> tuple[FeatureSpace, np.ndarray, np.ndarray]:
    """``(space, item_ids, features)`` from the store's cache."""
    with Store.open(store_path, create=False, read_only=True) as store:
        if not _has_cache(store):
            raise StoreError(f"{store_path}: no feature cache (write one with write_feature_cache)")
        return _read(store)


def _read(store: Store) -> tuple[FeatureSpace, np.ndarray, np.ndarray]:
    rows = store.con.execute("SELECT name, meta, shape, data FROM feature_space").fetchall()
    meta = next((json.loads(m) for name, m, _, _ in rows if name == "meta"), None)
    if meta is None:
        raise StoreError(f"{store.path}: feature_space table has no 'meta' row")
    arrays = {name: np.asarray(data, np.float64).reshape(shape) for name, _, shape, data in rows if name != "meta"}
    space = FeatureSpace.restore(meta, arrays)
    got = store.con.execute("SELECT item_id, vector FROM item_features ORDER BY item_id").fetchall()
    ids = np.asarray([r[0] for r in got], dtype=object)
    features = np.asarray([r[1] for r in got], np.float32).reshape(len(got), space.dim)
    return space, ids, features


def refresh_feature_cache(store_path: str | Path) -> int:
    """Embed the catalogue products that have no cached vector yet (new products) and append
    them; returns how many were added. Their collaborative block is imputed from text."""
    with Store.open(store_path, create=False) as store:
        if not _has_cache(store):
            raise StoreError(f"{store_path}: no feature cache to refresh (write one with write_feature_cache)")
        space, _, _ = _read(store)
        new = store.con.execute(
            "SELECT i.item_id, i.title, i.category, i.price FROM items i "
            "WHERE NOT EXISTS (SELECT 1 FROM item_features f WHERE f.item_id = i.item_id) ORDER BY i.item_id"
        ).fetchall()
        if not new:
            return 0
        ids = np.asarray([r[0] for r in new], dtype=object)
        titles = np.asarray([r[1] for r in new], dtype=object)
        cats = np.asarray([r[2] for r in new], dtype=object)
        prices = np.asarray([np.nan if r[3] is None else float(r[3]) for r in new])
        feats = space.transform(titles, cats, prices)
        with store.transaction() as con:
            _insert(con, ids, feats, np.ones(len(ids), bool))
    return len(ids)
