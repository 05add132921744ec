"""1 process against 2 data-parallel processes (torch.distributed, gloo).

Without ``--store``: the synthetic held-out split of tests/test_distributed.py, NDCG@10 of every
model the test trains data-parallel (CFGAN, ResGAN, featgan), and popularity for scale.

With ``--store``: a real log, temporal split (as ``retailgan compare --protocol temporal``), one
model (``--model``, default featgan, default parameters plus ``--params``) trained for a fixed
number of epochs (``--epochs``: no early stopping, so both runs do the same work) in 1 process
and in 2 processes, side by side for each seed (``--seeds``); test NDCG@10 / Recall@20 over all
customers with test purchases, and the fit's wall time (rank 0's, without process start-up) and
the whole launch's. One torch thread per process.

Usage: python benchmarks/ddp_quality.py [--models featgan] [--seed-spread 6]
       python benchmarks/ddp_quality.py --store out/retail.duckdb --model featgan --epochs 6 --seeds 0,1,2 \
           --json docs/results/ddp-featgan-online-retail.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retailgan import distributed
from retailgan.data.dataset import load_dataset
from retailgan.data.splits import split
from retailgan.evaluation import evaluate
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.persistence import load_model
from tests.test_distributed import CONFIGS, _job, ndcg, problem


def synthetic(models: list[str], seed_spread: int) -> None:
    train, test = problem()
    print(f"pop: NDCG@10 {ndcg(get_model_class('pop')().fit(train), train, test):.4f}")
    for name in models:
        params = CONFIGS[name]
        if seed_spread:  # how much one process moves between training seeds
            per_seed = [ndcg(get_model_class(name)(**params).fit(train, TrainingOptions(seed=s)), train, test)
                        for s in range(seed_spread)]
            print(f"{name}: NDCG@10 1 process, seeds 0-{seed_spread - 1}: {[round(v, 4) for v in per_seed]}")
        one = ndcg(get_model_class(name)(**params).fit(train, TrainingOptions(seed=0)), train, test)
        with tempfile.TemporaryDirectory() as tmp:
            distributed.launch(2, _job, tmp, name)
            two = ndcg(load_model(Path(tmp) / "model"), train, test)
        print(f"{name}: NDCG@10 1 process {one:.4f}, 2 processes {two:.4f}")


def _store_job(out: str, store: str, name: str, params: dict[str, Any], seed: int) -> None:
    """Every process: the temporal split of the store and the same fit; rank 0 saves the model."""
    train = split(load_dataset(store), "temporal", seed=0).train
    model = get_model_class(name)(**params).fit(train, TrainingOptions(seed=seed))
    if distributed.rank() == 0:
        model.save(Path(out) / "model")


def _quality(model: Any, train: Any, test: Any) -> dict[str, float]:
    s = evaluate(model, train.matrix(), test.matrix(), ks=(10, 20)).summary()
    return {"ndcg@10": round(float(s["ndcg@10"]), 4), "recall@20": round(float(s["recall@20"]), 4)}


def on_store(args: argparse.Namespace) -> None:
    s = split(load_dataset(args.store), "temporal", seed=0)
    params = {**json.loads(args.params), "epochs": args.epochs}
    rows = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        t = time.perf_counter()
        one = get_model_class(args.model)(**params).fit(s.train, TrainingOptions(seed=seed))
        wall_one = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            distributed.launch(2, _store_job, tmp, str(args.store), args.model, params, seed)
            wall_two = time.perf_counter() - t
            two = load_model(Path(tmp) / "model")
        row: dict[str, Any] = {"seed": seed}
        for side, model, wall in (("1 process", one, wall_one), ("2 processes", two, wall_two)):
            times = {"fit_s": round(model.fit_seconds, 1), "wall_s": round(wall, 1)}
            row[side] = {**_quality(model, s.train, s.test), **times}
        row["fit time ratio (1 / 2)"] = round(one.fit_seconds / two.fit_seconds, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    median = {
        key: round(statistics.median(r[key] for r in rows), 2) for key in ("fit time ratio (1 / 2)",)
    }
    for side in ("1 process", "2 processes"):
        for m in ("ndcg@10", "recall@20", "fit_s", "wall_s"):
            median[f"{side} {m}"] = round(statistics.median(r[side][m] for r in rows), 4)
    print(json.dumps({"median": median}), flush=True)
    if args.json:
        out = {
            "command": "python benchmarks/ddp_quality.py " + " ".join(sys.argv[1:]),
            "model": args.model, "params": params, "store": str(args.store), "protocol": "temporal",
            "rows": rows, "median": median,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        }
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="a store made by `retailgan ingest` (default: the synthetic problem)")
    ap.add_argument("--model", default="featgan")
    ap.add_argument("--models", default=",".join(CONFIGS), help="synthetic problem: the models to train")
    ap.add_argument("--seed-spread", type=int, default=0, help="synthetic problem: also 1 process on this many seeds")
    ap.add_argument("--params", default="{}", help="model parameters as JSON")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.store is None:
        synthetic(args.models.split(","), args.seed_spread)
    else:
        on_store(args)


if __name__ == "__main__":
    main()
