"""One model on the validation part of a ``cold-items`` split: the settings comparison behind
docs/benchmarks-cold.md ("featgan").

Fits ``--model`` with ``--params`` on the inner training part of the seed's split (early stopping
on the validation part, as tuning does), prints every epoch, then evaluates the three views
(cold, warm, hybrid NDCG@20) on the validation part. The test part is never read. With
``--json``, the run is added to that file under ``--label``.

    python benchmarks/cold_validation.py --store out/ml100k.duckdb --model featgan \\
        --params '{"targets": "held-out", "collab_dim": 128}' --label held-out,128 \\
        --json docs/results/cold-movielens-100k-featgan-validation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from retailgan.data.dataset import load_dataset
from retailgan.data.splits import split
from retailgan.evaluation.cold import evaluate_views
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--model", default="featgan")
    ap.add_argument("--params", default="{}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    params = json.loads(args.params)
    s = split(load_dataset(args.store), "cold-items", seed=args.seed)
    model = get_model_class(args.model)(**params)
    start = time.perf_counter()

    def show(epoch: int, logged: dict[str, float]) -> None:
        print(epoch, {k: round(v, 4) for k, v in logged.items()}, f"{time.perf_counter() - start:.0f} s", flush=True)

    options = TrainingOptions(seed=args.seed, validation=s.validation, callback=show)
    model.fit(s.train_inner, options)
    fit_s = time.perf_counter() - start
    views = {v: r.summary()["ndcg@20"] for v, r in evaluate_views(model, s, ks=(20,), part="validation").items()}
    run = {"model": args.model, "params": params, "seed": args.seed, "best_epoch": getattr(model, "best_epoch", None),
           "fit_s": fit_s, "validation_ndcg@20": views,
           "history": [h.get("val_ndcg@20") for h in getattr(model, "history", [])]}
    print(json.dumps(run))
    if args.json:
        doc = json.loads(args.json.read_text(encoding="utf-8")) if args.json.exists() else {"runs": {}}
        doc["runs"][args.label or json.dumps(params, sort_keys=True)] = run
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
