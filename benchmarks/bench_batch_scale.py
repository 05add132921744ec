"""Time per customer of the batch job (``retailgan recommend --all``) on a seeded sample of its blocks.

What a worker of ``retailgan.batch.recommend_all`` does, measured step by step in this process:
load the model (memory-mapped, ``BlockScorer.load``), build the product index and run the recall
gate (with ``--index ivf|hnsw``), then for each of ``--blocks`` blocks drawn (seeded) from the
job's blocks (every model customer sorted by id, ``--block-size`` a block): rank the block's
top-k (seen products excluded) and build its Arrow table (``BlockScorer.__call__``), then write
its Parquet part (``write_part``). The exclusion read alone (the block's rows of the purchase
history, as ``Recommender.top_k`` builds them) is timed apart on the same blocks. Peak RSS is
this process's; the load average is read before and after.

Usage: python benchmarks/bench_batch_scale.py --model DIR --label M [--index exact|ivf|hnsw]
       [--index-params JSON] [--blocks 25] [--block-size 2000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--label", required=True, help="name of the run in --json (e.g. M-exact)")
    ap.add_argument("--index", default="exact")
    ap.add_argument("--index-params", default="{}")
    ap.add_argument("--blocks", type=int, default=25)
    ap.add_argument("--block-size", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None, help="results file (runs are added under their label)")
    args = ap.parse_args()
    from retailgan.batch import BatchOptions, BlockScorer, index_recall
    from retailgan.jobs import Chunks, write_part
    from retailgan.models.base import FORGOTTEN_PREFIX

    params = json.loads(args.index_params)
    res: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": str(args.model),
                           "index": args.index, "index_params": params, "k": args.k, "block_size": args.block_size,
                           "load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    scorer = BlockScorer.load(BatchOptions(model_dir=str(args.model), k=args.k))
    model = scorer.bundle.model
    customers = sorted(str(u) for u in model.users.ids if not str(u).startswith(FORGOTTEN_PREFIX))
    res |= {"load_s": time.perf_counter() - t0, "customers": len(customers), "products": model.n_items,
            "history_pairs": int(model.seen.nnz), "rss_after_load_mib": _peak_mib()}
    if args.index != "exact":
        t0 = time.perf_counter()
        model.use_index(args.index, **params)
        model.top_k(customers[:1], args.k)  # builds the index
        res["index_build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res["recall"], res["recall_customers"] = index_recall(model, customers, args.k, True, args.index, params)
        res["recall_gate_s"] = time.perf_counter() - t0
    chunks = Chunks(customers, args.block_size)
    picked = np.sort(np.random.default_rng(0).choice(len(chunks), min(args.blocks, len(chunks)), replace=False))
    rank_s, write_s, excl_s, sizes = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for c in picked.tolist():
            block = chunks[c]
            t0 = time.perf_counter()
            table = scorer(block)
            t1 = time.perf_counter()
            write_part(table, Path(tmp) / f"part-{c}.parquet")
            t2 = time.perf_counter()
            uidx = model.users.index(block, missing="negative")
            known = uidx >= 0
            model._exclusions(uidx, known, True, None)
            excl_s.append(time.perf_counter() - t2)
            rank_s.append(t1 - t0)
            write_s.append(t2 - t1)
            sizes.append(len(block))
    per = [(r + w) / n * 1e6 for r, w, n in zip(rank_s, write_s, sizes, strict=True)]
    res |= {
        "blocks": picked.tolist(), "n_blocks": len(chunks), "rank_s": rank_s, "write_s": write_s,
        "exclusions_s": excl_s,
        "us_per_customer_median": statistics.median(per),
        "us_per_customer_blocks": per,
        "rank_us_per_customer_median": statistics.median(r / n * 1e6 for r, n in zip(rank_s, sizes, strict=True)),
        "write_us_per_customer_median": statistics.median(w / n * 1e6 for w, n in zip(write_s, sizes, strict=True)),
        "exclusions_us_per_customer_median": statistics.median(e / n * 1e6 for e, n in zip(excl_s, sizes, strict=True)),
        "all_customers_extrapolated_s": float(np.mean(per)) * len(customers) / 1e6,
        "peak_rss_mib": _peak_mib(), "load_average_after": os.getloadavg(),
    }
    cache = getattr(model, "_items_cache", None)
    if cache is not None:  # exact path: customers scored / settled per norm-ordered prefix
        items = cache[-1]
        res["prefixes"] = {str(c): [items.reached[c], items.settled.get(c, 0)] for c in sorted(items.reached)}
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}), flush=True)
    if args.json:
        data = json.loads(args.json.read_text()) if args.json.exists() else {}
        data.setdefault("runs", {})[args.label] = res
        tmp_path = args.json.with_suffix(".tmp")
        tmp_path.write_text(json.dumps(data, indent=2))
        tmp_path.replace(args.json)


if __name__ == "__main__":
    main()
