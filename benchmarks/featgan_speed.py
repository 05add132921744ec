"""featgan fit time with numpy's BLAS threads limited to torch's (now) against left at their
default (before), side by side, on the inner training part of a ``cold-items`` split.

Each repeat fits both ways in alternating order (``epochs`` epochs of at most ``epoch_examples``
examples, early-stopping validation after each); "before" runs the training loop under the torch
thread limit only, as the fit did before numpy's BLAS pools were limited too. Reports, per way,
the median over repeats of the whole fit, of the time to the first epoch's end less one epoch
(the setup: feature space, examples, networks), and of the median epoch (training + validation),
and the largest difference between the two ways' product features and fitted weights (each way
is checked to repeat itself bit for bit). ``--profile N`` instead profiles one training epoch of
``N`` examples (after a first, warm-up epoch) with ``torch.profiler`` and reports each operator's
share of the epoch and the share of the held-out encoder inputs built in numpy.

    python benchmarks/featgan_speed.py --store out/ml100k.duckdb \\
        --params '{"targets": "held-out", "collab_dim": 128}' --json docs/results/featgan-speed-movielens-100k.json
    python benchmarks/featgan_speed.py --store out/ml100k.duckdb \\
        --params '{"targets": "held-out", "collab_dim": 128}' --profile 10240 \\
        --json docs/results/featgan-profile-movielens-100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from retailgan.data.dataset import load_dataset
from retailgan.data.splits import split
from retailgan.models.base import TrainingOptions, torch_threads
from retailgan.models.gan.featgan import FeatureGAN


def fit_once(s: Any, params: dict[str, Any], limited: bool) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """One fit; ``limited=False`` runs the loop under the torch thread limit only (the old fit)."""
    model = FeatureGAN(**params)
    ends: list[float] = []
    options = TrainingOptions(seed=0, validation=s.validation, progress=False,
                              callback=lambda epoch, logged: ends.append(time.perf_counter()))
    start = time.perf_counter()
    if limited:
        model.fit(s.train_inner, options)
    else:  # what IterativeRecommender._fit did before: torch's threads only
        model.users, model.items, model.item_info = s.train_inner.users, s.train_inner.items, s.train_inner.item_info
        model.seen = s.train_inner.matrix()
        model.popularity = s.train_inner.item_popularity().astype(np.float32)
        with torch_threads(1):
            model._train_loop(s.train_inner, options)
    total = time.perf_counter() - start
    epoch = float(np.median(np.diff(ends)))
    times = {"fit_s": total, "setup_s": ends[0] - start - epoch, "epoch_s": epoch, "load_avg_1m": os.getloadavg()[0]}
    return times, {k: np.asarray(v) for k, v in model._state().items()}


def profile_epoch(s: Any, params: dict[str, Any], examples: int) -> dict[str, Any]:
    """Operator shares of one featgan epoch of ``examples`` examples, under the fit's thread limits."""
    import cProfile
    import pstats

    from threadpoolctl import threadpool_limits
    from torch.profiler import ProfilerActivity, profile

    model = FeatureGAN(**{**params, "epoch_examples": examples})
    with torch_threads(1), threadpool_limits(1, user_api="blas"):
        model.users, model.items, model.item_info = s.train_inner.users, s.train_inner.items, s.train_inner.item_info
        model.seen = s.train_inner.matrix()
        model.popularity = s.train_inner.item_popularity().astype(np.float32)
        model.init_training(s.train_inner, TrainingOptions(seed=0))
        model.train_epoch(1)  # warm-up
        py = cProfile.Profile()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            py.enable()
            model.train_epoch(2)
            py.disable()
            wall = time.perf_counter() - start
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    stats = pstats.Stats(py).stats  # type: ignore[attr-defined]
    inputs = sum(v[3] for k, v in stats.items() if k[2] in ("held_out_input", "history_input"))
    return {"examples": examples, "epoch_s": wall, "ms_per_example": wall / examples * 1000,
            "torch_ops_s": total, "encoder_inputs_share": inputs / wall, "load_avg_1m": os.getloadavg()[0],
            "ops_share": {e.key: e.self_cpu_time_total / 1e6 / wall for e in ops[:12]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default="{}")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--epoch-examples", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", type=int, default=0, help="profile one epoch of this many examples instead")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    s = split(load_dataset(args.store), "cold-items", seed=args.seed)
    if args.profile:
        doc = profile_epoch(s, json.loads(args.params), args.profile)
        print(json.dumps(doc, indent=1))
    else:
        doc = compare(s, args)
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        tmp.replace(args.json)


def compare(s: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The side-by-side fits (module docstring)."""
    params = {**json.loads(args.params), "epochs": args.epochs, "patience": args.epochs,
              "epoch_examples": args.epoch_examples}
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    states: dict[str, dict[str, np.ndarray]] = {}
    for r in range(args.repeats):
        for way in (("before", "after") if r % 2 == 0 else ("after", "before")):
            times, state = fit_once(s, params, limited=way == "after")
            runs[way].append(times)
            print(way, {k: round(v, 2) for k, v in times.items()}, flush=True)
            if way in states:
                assert all(np.array_equal(states[way][k], state[k]) for k in state), f"{way}: fits differ"
            states[way] = state
    diff = {k: float(np.abs(states["before"][k].astype(np.float64) - states["after"][k]).max())
            for k in states["before"] if states["before"][k].dtype.kind == "f" and states["before"][k].size}
    same = {"X": diff["X"], "nets": max(v for k, v in diff.items() if k.startswith("nets."))}
    summary = {way: {k: float(np.median([t[k] for t in ts])) for k in ts[0]} for way, ts in runs.items()}
    doc = {"store": str(args.store), "seed": args.seed, "params": params, "repeats": args.repeats,
           "cpus": os.cpu_count(), "max_abs_diff": same, "median": summary, "runs": runs,
           "speedup_fit": summary["before"]["fit_s"] / summary["after"]["fit_s"]}
    print(json.dumps({k: doc[k] for k in ("max_abs_diff", "median", "speedup_fit")}, indent=1))
    return doc


if __name__ == "__main__":
    main()
