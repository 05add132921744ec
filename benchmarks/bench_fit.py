"""Fit time of the baselines on MovieLens-100K (cfgan-paper training part), median of repeats.

Usage: python benchmarks/bench_fit.py [--repeats 5] [--data ../shared/data/movielens-100k/u.data]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from retailgan.data.dataset import InteractionDataset
from retailgan.data.splits import split
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "pop": {},
    "itemknn": {"neighbors": 100, "shrink": 10.0},
    "ease": {"l2": 500.0},
    "ials": {"factors": 128, "regularization": 30.0, "alpha": 5.0, "epochs": 10},
    "bpr": {"factors": 64, "epochs": 20},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/movielens-100k/u.data")
    args = ap.parse_args()
    raw = np.loadtxt(args.data, dtype=np.int64)
    ds = InteractionDataset.from_arrays(raw[:, 0], raw[:, 1], timestamps=raw[:, 3], name="ml-100k")
    train = split(ds, "cfgan-paper", seed=0).train
    out = {"machine": f"{platform.processor() or platform.machine()}, {platform.system()}", "results": {}}
    for name, cfg in CONFIGS.items():
        times = []
        for r in range(args.repeats):
            model = get_model_class(name)(**cfg)
            t0 = time.perf_counter()
            model.fit(train, TrainingOptions(seed=r))
            times.append(time.perf_counter() - t0)
        out["results"][name] = {"config": cfg, "median_s": statistics.median(times), "runs_s": times}
        print(f"{name:8s} median {statistics.median(times):.3f} s over {args.repeats} fits  {cfg}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
