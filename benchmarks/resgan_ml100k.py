"""ResGAN on MovieLens-100K, protocol ``cfgan-paper``: tuned on validation, tested once per seed.

Same protocol as ``cfgan_ml100k.py``: ResGAN is tuned once with Optuna over
``ResGAN.search_space`` (TPE, median pruning, early stopping picks the epoch) on the validation
part of seed ``--tune-seed``; the reconstruction-only variant (``adv_weight=0``) gets its own
search of the same size. Per seed the epoch count is chosen on that seed's validation part, the
model is refitted on ``train`` and tested once. Rows: ResGAN (tuned), ResGAN with the adversary
switched off (same parameters), the separately tuned reconstruction-only model, and EASE^R with
l2 tuned on each seed's validation part (ResGAN's starting point).

Usage:
    python benchmarks/resgan_ml100k.py --seeds 5 --tune-trials 20

Writes ``--out`` (default ``out/resgan-ml100k``): ``params.json``, ``results.json``, ``curves/``
and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cfgan_ml100k import KS, METRIC, fit_and_test, load_ml100k, report, tune_model

from retailgan.data.splits import Split, split
from retailgan.evaluation.stats import paired_comparison
from retailgan.models.base import TrainingOptions
from retailgan.models.gan.curves import save_curves
from retailgan.models.gan.resgan import ResGAN
from retailgan.tuning import tune, validate_once

REPO = Path(__file__).resolve().parents[1]
TUNE_FIXED = {"epochs": 40, "patience": 5}
RECON_LABEL = "resgan, reconstruction only (tuned)"
NO_ADV_LABEL = "resgan, no adversarial term"


def tune_resgan(s: Split, trials: int, seed: int, fixed: dict[str, Any]) -> dict[str, Any]:
    """Optuna (TPE) over ``ResGAN.search_space``; ResGAN's curves peak early, so pruning starts early."""
    return tune_model("resgan", s, trials, seed, {**TUNE_FIXED, **fixed}, warmup=3, startup=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tune-trials", type=int, default=20)
    ap.add_argument("--tune-seed", type=int, default=0)
    ap.add_argument("--ease-trials", type=int, default=20)
    ap.add_argument("--params", type=Path, default=None, help="params.json of an earlier run: skip tuning")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/movielens-100k/u.data")
    ap.add_argument("--out", type=Path, default=REPO / "out/resgan-ml100k")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    ds = load_ml100k(args.data)
    started = time.perf_counter()
    if args.params:
        tuned = json.loads(args.params.read_text())
    else:
        s0 = split(ds, "cfgan-paper", seed=args.tune_seed)
        tuned = {}
        for label, fixed in (("resgan", {}), (RECON_LABEL, {"adv_weight": 0.0})):
            t0 = time.perf_counter()
            tuned[label] = tune_resgan(s0, args.tune_trials, args.tune_seed, fixed)
            print(f"tuned {label}: validation {tuned[label]['validation']:.4f} in {time.perf_counter() - t0:.0f} s"
                  f"  {tuned[label]['params']}", flush=True)
        (args.out / "params.json").write_text(json.dumps(tuned, indent=1))
    best = tuned["resgan"]["params"]
    variants: dict[str, tuple[str, dict[str, Any] | None]] = {
        "resgan": ("resgan", best),
        NO_ADV_LABEL: ("resgan", {**best, "adv_weight": 0.0}),
        RECON_LABEL: ("resgan", tuned[RECON_LABEL]["params"]),
        "ease (l2 tuned per seed)": ("ease", None),
    }
    pairs = [("resgan", label) for label in variants if label != "resgan"]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    tests: dict[tuple[str, str], list[dict[str, Any]]] = {p: [] for p in pairs}
    for seed in range(args.seeds):
        s = split(ds, "cfgan-paper", seed=seed)
        per_user: dict[str, np.ndarray] = {}
        for label, (name, params) in variants.items():
            if params is None:
                params = tune(name, s, n_trials=args.ease_trials, seed=seed, metric=METRIC).params
            res, info = fit_and_test(name, params, s, seed)
            per_user[label] = res.per_user[METRIC]
            runs[label].append({"seed": seed, **info})
            print(f"seed {seed} {label:40s} test {METRIC} {info['test'][METRIC]:.4f}  val {info['validation']:.4f}"
                  f"  epochs {info['epochs']}  fit {info['fit_s']:.1f} s", flush=True)
        for a, b in pairs:
            pr = paired_comparison(per_user[a], per_user[b], n_boot=2000, seed=seed)
            tests[(a, b)].append({"seed": seed, **pr.as_dict()})
        if seed == 0:
            _, final = validate_once("resgan", best, s, seed=seed, metric=METRIC)
            model = ResGAN(**{**best, "epochs": max(final["epochs"] * 3, 10), "patience": 1000})
            model.fit(s.train_inner, TrainingOptions(seed=seed, validation=s.validation))
            save_curves(model.history, args.out / "curves", title="ResGAN, ML-100K seed 0 (train_inner / validation)")

    summary, comparisons = report(runs, tests)
    doc = {"dataset": "ml-100k", "protocol": "cfgan-paper", "seeds": args.seeds, "ks": KS,
           "seconds": time.perf_counter() - started,
           "tuned": {k: {kk: vv for kk, vv in v.items() if kk != "trials"} for k, v in tuned.items()},
           "summary": summary, "comparisons": comparisons, "runs": runs}
    (args.out / "results.json").write_text(json.dumps(doc, indent=1, default=float))
    print(f"\nwrote {args.out / 'results.json'} in {doc['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
