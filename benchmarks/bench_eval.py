"""Benchmark: full-ranking evaluation of all users vs the bare scoring product.

A random implicit-feedback problem (``--users`` x ``--items``, ``--density``
training interactions per cell, a disjoint test set) and a dense item-item
model ``scores = X[u] @ B`` (EASE-like; ``X`` sparse CSR float32, ``B`` dense
float32). Reported, side by side in one run (median of ``--repeats``):

* ``score_all``: the scoring product for all users at once, ``X @ B``;
* ``score_batched``: the same product done batch by batch as evaluate() does;
* ``evaluate``: :func:`retailgan.evaluation.evaluate` on all users with a test
  item (scoring + exclusion + top-K + all metrics), default settings (the next
  batch is scored in a background thread while the current one is ranked);
* ``evaluate_noprefetch``: the same with ``prefetch=False`` (strictly serial);

and the ratio ``evaluate / score_all`` (target <= 2).

Run: ``.venv/bin/python benchmarks/bench_eval.py [--users 6000 --items 4000]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from retailgan.evaluation import evaluate


class ItemItemModel:
    """``score_users(u) = X[u] @ B`` with sparse ``X`` and dense ``B``."""

    def __init__(self, x: sp.csr_matrix, b: np.ndarray) -> None:
        self.x = x
        self.b = b

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.x[user_idx] @ self.b, dtype=np.float32)


def make_problem(
    n_users: int, n_items: int, density: float, test_per_user: int, seed: int
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    # skewed item popularity, like retail data
    pop = rng.zipf(1.3, size=n_items).astype(np.float64)
    p = pop / pop.sum()
    nnz_per_user = max(1, round(density * n_items))
    total = nnz_per_user + test_per_user
    rows = np.repeat(np.arange(n_users), total)
    cols = np.concatenate([rng.choice(n_items, size=total, replace=False, p=p) for _ in range(n_users)])
    is_test = np.tile(np.arange(total) >= nnz_per_user, n_users)
    shape = (n_users, n_items)
    ones = np.ones(rows.size, dtype=np.float32)
    train = sp.csr_matrix((ones[~is_test], (rows[~is_test], cols[~is_test])), shape=shape)
    test = sp.csr_matrix((ones[is_test], (rows[is_test], cols[is_test])), shape=shape)
    b = rng.standard_normal((n_items, n_items)).astype(np.float32)
    return train, test, b


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=6000)
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--density", type=float, default=0.005, help="train interactions per cell")
    ap.add_argument("--test-per-user", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    train, test, b = make_problem(args.users, args.items, args.density, args.test_per_user, args.seed)
    model = ItemItemModel(train, b)
    users = np.arange(args.users, dtype=np.int64)

    def score_all() -> object:
        return train @ b

    def score_batched() -> object:
        for s in range(0, args.users, args.batch_size):
            model.score_users(users[s : s + args.batch_size])
        return None

    def run_eval() -> object:
        return evaluate(model, train, test, ks=args.ks, batch_size=args.batch_size)

    def run_eval_serial() -> object:
        return evaluate(model, train, test, ks=args.ks, batch_size=args.batch_size, prefetch=False)

    t_score, ts = median_time(score_all, args.repeats)
    t_batched, tb = median_time(score_batched, args.repeats)
    t_eval, te = median_time(run_eval, args.repeats)
    t_serial, tsr = median_time(run_eval_serial, args.repeats)
    res = run_eval()

    print(f"python {platform.python_version()}, numpy {np.__version__}, cpus {os.cpu_count()}")
    print(
        f"problem: {args.users} users x {args.items} items, train nnz {train.nnz}, "
        f"test nnz {test.nnz}, ks {args.ks}, batch {args.batch_size}, repeats {args.repeats}"
    )
    print(f"{'step':<22}{'median_s':>10}   all runs (s)")
    for name, t, runs in (
        ("score_all", t_score, ts),
        ("score_batched", t_batched, tb),
        ("evaluate", t_eval, te),
        ("evaluate_noprefetch", t_serial, tsr),
    ):
        print(f"{name:<22}{t:>10.3f}   {' '.join(f'{x:.3f}' for x in runs)}")
    print(f"ratio evaluate / score_all     = {t_eval / t_score:.2f}  (target <= 2)")
    print(f"ratio evaluate / score_batched = {t_eval / t_batched:.2f}")
    print(f"ratio evaluate_noprefetch / score_all = {t_serial / t_score:.2f}")
    print(
        f"evaluated users: {res.n_users}; ndcg@{max(args.ks)} (random B) = {res.summary()[f'ndcg@{max(args.ks)}']:.4f}"
    )


if __name__ == "__main__":
    main()
