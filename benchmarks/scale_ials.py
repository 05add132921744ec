"""An ``ials`` model of a store too large to load whole (size L of benchmarks/retail_log.py).

``load_dataset`` holds every (customer, product) pair with its ids as Python strings: its peak
is about 290 bytes a purchase (measured at S), so 200M purchases would need about 54 GiB. This
script builds the same kind of model in bounded memory, in four steps:

1. **Pairs straight from DuckDB**: customers and products numbered by joining the events with
   their sorted distinct ids, one int32 (customer, product) row per pair, fetched in batches
   into a binary customers x products CSR matrix (about 8 bytes a pair).
2. **Item factors**: retailgan's ``ials`` (``IALS.fit``, the parameters of bench_scale.py,
   a fixed number of sweeps, no early stopping) on the purchases of a seeded sample of customers;
   every product is a column, so a product no sampled customer bought gets a zero vector.
3. **Every customer's factors**: one least-squares solve per customer against those item
   factors, iALS's own user step: implicit's conjugate-gradient solver, the one ``IALS`` sweeps
   with, from zero with :data:`CG_STEPS` steps (at S: factors within 5e-5 relative of the
   Cholesky solution, the same top-10 lists, 4 x faster).
4. The model: all customers, all products with sales, ``seen`` = every pair (what the batch job
   excludes), popularity = distinct buyers, the catalogue's titles, categories and prices; saved
   with ``save_model`` (memory-mappable).

The result has the shape of a full fit (customers, products, factors, history), which is what
the batch job's time per customer depends on; its item factors have seen a sample of the
customers. Timings and peak RSS of each step go to ``--json``.

Usage: python benchmarks/scale_ials.py --store STORE --out MODEL_DIR [--sample 0.1] [--sweeps 8]
       [--memory-limit 3GB] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import PARAMS

FETCH_ROWS = 1 << 22
"""Pairs per Arrow batch fetched from DuckDB."""
CG_STEPS = 6
"""Conjugate-gradient steps of the user solve (IALS sweeps with implicit's 3, warm-started)."""


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_pairs(store: Path, memory_limit: str, temp_dir: Path) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """(customer ids, product ids, binary customers x products CSR) of every event in ``store``."""
    import duckdb

    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(temp_dir)})
    con.execute("ATTACH ? AS s (READ_ONLY)", [str(store)])
    con.execute("CREATE TEMP TABLE u AS SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1)::INTEGER AS r "
                "FROM (SELECT DISTINCT user_id FROM s.events)")
    con.execute("CREATE TEMP TABLE i AS SELECT item_id, (row_number() OVER (ORDER BY item_id) - 1)::INTEGER AS c "
                "FROM (SELECT DISTINCT item_id FROM s.events)")
    users = con.execute("SELECT user_id FROM u ORDER BY r").fetchnumpy()["user_id"].astype(object)
    items = con.execute("SELECT item_id FROM i ORDER BY c").fetchnumpy()["item_id"].astype(object)
    reader = con.sql("SELECT u.r, i.c FROM s.events e JOIN u USING (user_id) JOIN i USING (item_id) "
                     "GROUP BY ALL").to_arrow_reader(FETCH_ROWS)
    rows, cols = [], []
    for batch in reader:
        rows.append(batch.column(0).to_numpy())
        cols.append(batch.column(1).to_numpy())
    con.close()
    r, c = np.concatenate(rows), np.concatenate(cols)
    del rows, cols
    X = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(users), len(items)))
    del r, c
    X.sort_indices()
    return users, items, X


def catalogue_info(store: Path, items: np.ndarray) -> Any:
    """The store catalogue's titles, categories and prices aligned with ``items``."""
    from retailgan.data.dataset import ItemInfo
    from retailgan.data.store import Store

    with Store.open(store, create=False, read_only=True, threads=1) as st:
        cat = st.con.execute("SELECT item_id, title, category, price FROM items").fetchnumpy()
    info = ItemInfo.empty(len(items))
    pos = {str(i): n for n, i in enumerate(items)}
    for iid, title, category, price in zip(cat["item_id"], cat["title"], cat["category"], cat["price"], strict=True):
        n = pos.get(str(iid))
        if n is not None:
            info.titles[n], info.categories[n] = title, category
            info.prices[n] = np.nan if price is None or np.ma.is_masked(price) else float(price)
    return info


def fit_items(X: sp.csr_matrix, users: np.ndarray, items: np.ndarray, info: Any, sample: np.ndarray,
              sweeps: int) -> Any:
    """retailgan's ials fitted on the rows ``sample`` of ``X`` (every product a column)."""
    from retailgan.data.dataset import InteractionDataset, Vocabulary
    from retailgan.models.base import TrainingOptions
    from retailgan.models.registry import get_model_class

    Xs = X[sample]
    n = Xs.nnz
    ds = InteractionDataset(
        users=Vocabulary(users[sample]), items=Vocabulary(items),
        user_idx=np.repeat(np.arange(len(sample)), np.diff(Xs.indptr)), item_idx=Xs.indices.astype(np.int64),
        timestamp=np.zeros(n, np.int64), weight=np.ones(n, np.float32), count=np.ones(n, np.int64),
        item_info=info, name="sample",
    )
    del Xs
    params = {**PARAMS["ials"], "epochs": sweeps}
    return get_model_class("ials")(**params).fit(ds, TrainingOptions(seed=0, num_threads=os.cpu_count()))


def solve_users(X: sp.csr_matrix, item_factors: np.ndarray, threads: int) -> np.ndarray:
    """Every customer's factors: iALS's least-squares user step against fixed item factors."""
    from implicit.cpu._als import least_squares_cg
    from threadpoolctl import threadpool_limits

    p = PARAMS["ials"]
    Cui = sp.csr_matrix((X.data * np.float32(p["alpha"]), X.indices, X.indptr), shape=X.shape)
    U = np.zeros((X.shape[0], item_factors.shape[1]), np.float32)
    with threadpool_limits(1, "blas"):
        least_squares_cg(Cui, U, np.ascontiguousarray(item_factors, np.float32), p["regularization"], threads,
                         CG_STEPS)
    return U


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sample", type=float, default=0.1, help="share of customers the item factors are fitted on")
    ap.add_argument("--sweeps", type=int, default=8)
    ap.add_argument("--memory-limit", default="3GB", help="DuckDB's (it spills to --temp beyond)")
    ap.add_argument("--temp", type=Path, default=None, help="DuckDB spill directory (default: next to --out)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from retailgan.data.dataset import Vocabulary

    temp = args.temp or args.out.parent / f".{args.out.name}.duckdb-tmp"
    temp.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                           "load_average_at_start": os.getloadavg(), "sample": args.sample, "sweeps": args.sweeps,
                           "params": PARAMS["ials"]}
    t0 = time.perf_counter()
    users, items, X = read_pairs(args.store, args.memory_limit, temp)
    info = catalogue_info(args.store, items)
    res |= {"read_s": time.perf_counter() - t0, "customers": len(users), "products": len(items), "pairs": X.nnz,
            "read_peak_rss_mib": _peak_mib()}
    print(json.dumps(res), flush=True)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(users), max(1, round(args.sample * len(users))), replace=False))
    t0 = time.perf_counter()
    model = fit_items(X, users, items, info, sample, args.sweeps)
    bought = np.bincount(X[sample].indices, minlength=len(items)) > 0
    res |= {"fit_s": time.perf_counter() - t0, "sample_customers": len(sample), "sample_pairs": int(model.seen.nnz),
            "products_bought_in_sample": int(bought.sum()), "fit_peak_rss_mib": _peak_mib()}
    print(json.dumps(res), flush=True)
    t0 = time.perf_counter()
    U = solve_users(X, model.item_factors, os.cpu_count() or 1)
    res |= {"user_step_s": time.perf_counter() - t0, "user_step_peak_rss_mib": _peak_mib()}
    model.users, model.seen, model.user_factors = Vocabulary(users), X, U
    model.popularity = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float32)  # distinct buyers
    del users
    t0 = time.perf_counter()
    model.save(args.out)
    res |= {"save_s": time.perf_counter() - t0, "peak_rss_mib": _peak_mib(), "load_average_at_end": os.getloadavg(),
            "model_dir_mib": sum(f.stat().st_size for f in args.out.iterdir()) / 2**20}
    print(json.dumps(res), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
