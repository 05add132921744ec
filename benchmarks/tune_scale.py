"""Validation NDCG@20 of one model over a small parameter grid on the generated log (bench_scale.py).

Same store and temporal split as ``bench_scale.py``; each configuration is fitted on the inner
training part and scored on the validation part (never on test), on a seeded sample of
validation customers. One process: the split is loaded once; ``peak_rss_mib`` is the process
peak so far.

Usage: python benchmarks/tune_scale.py --size S --workdir DIR --model sansa \
           --grid '{"l2": [200, 500, 1000], "neighbors": [50]}' [--val-users 20000] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import K, _split, _write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="S")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--grid", required=True, help="JSON: parameter -> list of values (all combinations)")
    ap.add_argument("--val-users", type=int, default=20000, help="validation customers sampled (0 = all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from retailgan.evaluation.protocols import evaluate
    from retailgan.models.base import TrainingOptions, validation_sample
    from retailgan.models.registry import get_model_class

    grid: dict[str, list[Any]] = json.loads(args.grid)
    s, load_s = _split(args.workdir / f"store-{args.size}.duckdb")
    train, val = s.train_inner.matrix(), s.validation.matrix()
    users = validation_sample(train, val, args.val_users, seed=0)
    out: dict[str, Any] = {"size": args.size, "model": args.model, "grid": grid, "load_split_s": load_s,
                           "command": " ".join([Path(sys.executable).name, *sys.argv]), "runs": []}
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        model = get_model_class(args.model)(**params)
        model.fit(s.train_inner, TrainingOptions(seed=0))
        t0 = time.perf_counter()
        res = evaluate(model, train, val, ks=(K,), users=users, batch_size=max(1, (1 << 24) // train.shape[1]))
        run = {"params": params, "fit_s": model.fit_seconds, f"val_ndcg@{K}": res.summary()[f"ndcg@{K}"],
               "val_users": res.n_users, "eval_s": time.perf_counter() - t0,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "load_average": os.getloadavg(), **getattr(model, "fit_info", {})}
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
        if args.json:
            _write(args.json, out)


if __name__ == "__main__":
    main()
