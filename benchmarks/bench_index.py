"""Recall and latency of the faiss indexes against exact search on a synthetic product catalogue.

The catalogue: ``--items`` unit vectors of dimension ``--dim`` drawn from a mixture of
``--clusters`` Gaussian clusters (products come in families; uniform random vectors, which no real
catalogue resembles, are the worst case of every ANN method). Queries are fresh draws from the same
mixture, i.e. generated product vectors. Ground truth: :class:`ExactIndex` (inner product).
Latency: one query per call (a single customer request), median over ``--queries`` calls, with
``--threads`` faiss/BLAS threads.

Usage: python benchmarks/bench_index.py [--items 1000000] [--dim 64] [--queries 500] [--threads 1]
       [--kinds ivf,hnsw] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from retailgan.index import ExactIndex, FaissIndex


def catalogue(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 200_000):
        m = min(200_000, n - s)
        c = rng.integers(0, clusters, m)
        v = centres[c] + 1.4 / np.sqrt(dim) * rng.standard_normal((m, dim)).astype(np.float32)
        out[s : s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def latency_ms(index, queries: np.ndarray, k: int) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None], k)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kinds", default="ivf,hnsw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    t = time.perf_counter()
    items = catalogue(args.items, args.dim, args.clusters, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    # Queries: catalogue products moved by fresh noise (generated vectors land near products).
    queries = items[rng.choice(args.items, args.queries, replace=False)].copy()
    queries += 0.05 * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"catalogue {items.shape} in {time.perf_counter() - t:.1f} s", flush=True)
    exact = ExactIndex(args.dim, items)
    _, truth = exact.search(queries, args.k)
    exact_ms = latency_ms(exact, queries[:100], args.k)
    rows = [{"index": "exact (numpy)", "build_s": 0.0, "recall": 1.0, "median_ms": exact_ms}]
    print(rows[-1], flush=True)
    for kind in args.kinds.split(","):
        t = time.perf_counter()
        if kind == "ivf":
            index = FaissIndex(args.dim, "ivf", nlist=4096, seed=args.seed, threads=args.threads)
            index.add(items)
            sweep = [("nprobe", v) for v in (16, 64, 128, 256)]
        else:
            index = FaissIndex(args.dim, "hnsw", hnsw_m=32, ef_construction=80, threads=args.threads)
            index.add(items)
            sweep = [("ef_search", v) for v in (64, 128, 256, 512)]
        build = time.perf_counter() - t
        print(f"{kind} built in {build:.1f} s", flush=True)
        for name, value in sweep:
            index.set_search_params(**{name: value})
            _, found = index.search(queries, args.k)
            row = {
                "index": f"{kind} {name}={value}",
                "build_s": round(build, 1),
                "recall": recall(found, truth),
                "median_ms": latency_ms(index, queries, args.k),
            }
            rows.append(row)
            print(row, flush=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "faiss": faiss.__version__,
        "args": vars(args),
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
