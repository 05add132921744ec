"""Fit time of CFGAN (tuned ML-100K settings) beside iALS, on ML-100K and an ML-1M-sized problem.

Both models are fitted in the same run, alternating, and the median of ``--repeats`` fits is
reported. ML-100K: the ``cfgan-paper`` training part of seed 0 (80 % of the ratings). ML-1M-sized:
a synthetic log of 6040 users x 3706 items and about 1M distinct pairs (Zipf item popularity,
20 taste clusters), generated in memory. No validation during the timed fits (fixed epochs).

CFGAN's epoch count on the larger problem keeps the number of generator updates of the tuned
ML-100K run (an epoch has one update per mini-batch of rows, and the larger problem has more
rows); seconds per epoch are printed as well, so any other epoch count can be read off.

Usage: python benchmarks/bench_cfgan.py [--repeats 3] [--threads 1] [--skip-large]
       [--data ../shared/data/movielens-100k/u.data] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from retailgan.data.dataset import InteractionDataset
from retailgan.data.splits import split
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class

REPO = Path(__file__).resolve().parents[1]
# Chosen on the validation part of ML-100K seed 0 (benchmarks/cfgan_ml100k.py, out/cfgan-ml100k/
# params.json; docs/benchmarks-cfgan.md), including the epoch count early stopping picked there.
CFGAN_TUNED: dict = {
    "mode": "item",
    "g_hidden": 200,
    "d_hidden": 250,
    "zr_ratio": 0.4177,
    "pm_ratio": 0.3229,
    "zr_alpha": 0.07778,
    "lr_g": 5.829e-4,
    "lr_d": 7.966e-4,
    "l2_g": 1.136e-3,
    "batch_size": 32,
    "g_steps": 1,
    "d_steps": 1,
    "epochs": 111,
}
IALS = {"factors": 128, "regularization": 30.0, "alpha": 5.0, "epochs": 10}


def synthetic_ml1m(
    seed: int = 0, n_users: int = 6040, n_items: int = 3706, n_draws: int = 1_425_000
) -> InteractionDataset:
    """About 1M distinct (user, item) pairs with skewed activity and popularity, in clusters."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, n_users)
    users = rng.choice(n_users, size=n_draws, p=activity / activity.sum())
    zipf = 1.0 / np.arange(1, n_items + 1) ** 0.9
    zipf /= zipf.sum()
    n_clusters = 20
    # Each cluster ranks the items in its own order; half of a user's draws follow the cluster.
    cluster_order = np.stack([rng.permutation(n_items) for _ in range(n_clusters)])
    ranks = rng.choice(n_items, size=n_draws, p=zipf)
    own = rng.random(n_draws) < 0.5
    items = np.where(own, cluster_order[users % n_clusters, ranks], rng.permutation(n_items)[ranks])
    return InteractionDataset.from_arrays(users, items, name="synthetic-ml1m")


def time_fit(name: str, params: dict, data: InteractionDataset, seed: int, threads: int) -> float:
    model = get_model_class(name)(**params)
    t0 = time.perf_counter()
    model.fit(data, TrainingOptions(seed=seed, num_threads=threads))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for CFGAN (iALS: implicit's own)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/movielens-100k/u.data")
    ap.add_argument("--skip-large", action="store_true", help="only ML-100K")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    problems: dict[str, InteractionDataset] = {}
    raw = np.loadtxt(args.data, dtype=np.int64)
    ml = InteractionDataset.from_arrays(raw[:, 0], raw[:, 1], timestamps=raw[:, 3], name="ml-100k")
    problems["ml-100k (train, 80 %)"] = split(ml, "cfgan-paper", seed=0).train
    if not args.skip_large:
        problems["synthetic ml-1m size"] = synthetic_ml1m()

    results = []
    rows_100k = None
    for label, data in problems.items():
        rows = data.n_items if CFGAN_TUNED["mode"] == "item" else data.n_users
        rows_100k = rows_100k or rows
        cfgan = {**CFGAN_TUNED, "epochs": max(1, round(CFGAN_TUNED["epochs"] * rows_100k / rows))}
        models = {"cfgan": cfgan, "ials": IALS}
        times: dict[str, list[float]] = {m: [] for m in models}
        for r in range(args.repeats):
            for name, params in models.items():  # alternate, so load changes hit both alike
                times[name].append(time_fit(name, params, data, r, args.threads))
                print(f"  {label:24s} {name:6s} run {r + 1}: {times[name][-1]:.2f} s", flush=True)
        for name in models:
            results.append(
                {
                    "problem": label,
                    "users": data.n_users,
                    "items": data.n_items,
                    "pairs": len(data),
                    "model": name,
                    "epochs": models[name]["epochs"],
                    "median_s": statistics.median(times[name]),
                    "s_per_epoch": statistics.median(times[name]) / models[name]["epochs"],
                    "runs_s": times[name],
                }
            )

    print()
    print("| problem | users x items | pairs | model | epochs | median fit (s) | s / epoch | runs (s) |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | --- |")
    for r in results:
        runs = ", ".join(f"{t:.1f}" for t in r["runs_s"])
        print(
            f"| {r['problem']} | {r['users']} x {r['items']} | {r['pairs']} | {r['model']} | {r['epochs']} "
            f"| {r['median_s']:.1f} | {r['s_per_epoch']:.2f} | {runs} |"
        )
    doc = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "load_avg_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "threads": args.threads,
        "configs": {"cfgan": CFGAN_TUNED, "ials": IALS},
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
