"""A score shift for products without sales, chosen on the validation part of a ``cold-items``
split (docs/benchmarks-cold.md, "featgan" and "A shift for every row").

In this protocol a new product has all of its pairs held out and a known one a tenth, so in a
mixed (hybrid) list the new products deserve a boost that the training examples do not teach. ``--part
validation`` fits featgan on the inner training part of seed ``--seeds``' split and reports the
three views on the validation part for every shift of ``--shifts`` (added to the cosine score of
the products without training pairs); ``--part test`` fits on the training part of each seed and
reports the views on the test part with the one ``--shifts`` value chosen on validation. Without
``epochs`` in ``--params``, ``--part validation`` also chooses the epoch count by early stopping
on the validation part (as ``cold_items.py --trials 0`` does) and reports it.
``--gather VALIDATION ROWS`` makes such a file for featgan from its validation run and the
``cold_items.py`` rows fitted with the chosen ``cold_shift``. ``--save-dir`` / ``--load-dir`` keep
the fitted models between runs (the same fit either way).

``--model`` gives the shift to another row (default featgan, whose ``cold_shift`` is this shift on
its cosine scores), with the settings that row was tuned with in ``--tuned-from`` (a
``cold_items.py`` result file); ``--units z`` adds the shift in units of each customer's score
standard deviation (after centring on its mean), for models whose scores have no fixed scale:

    python benchmarks/cold_calibration.py --store out/ml100k.duckdb --model clcrec \
        --tuned-from docs/results/cold-movielens-100k.json --units z --part validation --seeds 0 \
        --shifts 0,0.25,0.5,1,1.5,2,3 --json docs/results/cold-movielens-100k-shift-clcrec.json

    python benchmarks/cold_calibration.py --store out/ml100k.duckdb --part validation --seeds 0 \\
        --params '{"targets": "held-out", "collab_dim": 128, "epochs": 12}' --shifts 0,0.05,0.1,0.15,0.2,0.3 \\
        --json docs/results/cold-movielens-100k-featgan-shift.json
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
from retailgan.evaluation.cold import evaluate_views
from retailgan.fileio import write_text_atomic
from retailgan.models.base import TrainingOptions
from retailgan.models.cold.common import standardise_rows
from retailgan.models.registry import get_model_class
from retailgan.persistence import load_model


class Shifted:
    """A fitted model whose products without training pairs score ``shift`` higher (``units``
    "z": in standard deviations of each customer's scores, centred on their mean)."""

    def __init__(self, model: Any, shift: float, new: np.ndarray, units: str = "abs") -> None:
        self.model, self.shift, self.new, self.units = model, shift, new, units

    def score_users(self, users: np.ndarray) -> np.ndarray:
        s = np.array(self.model.score_users(users), dtype=np.float64)
        if self.units == "z":
            s = standardise_rows(s)
        s[:, self.new] += self.shift
        return s

    def fallback_scores(self) -> np.ndarray:
        return self.model.fallback_scores()


def gather(validation: Path, rows: Path, model: str) -> dict[str, Any]:
    """A shift file for ``--table`` from a validation run of this script and a ``cold_items.py``
    result file whose ``model`` row was fitted with the shift chosen there (featgan's
    ``cold_shift``): its test rows, per seed, under that shift."""
    val = json.loads(validation.read_text(encoding="utf-8"))["validation"]
    doc = json.loads(rows.read_text(encoding="utf-8"))
    if model not in doc.get("runs", {}):
        raise SystemExit(f"{rows}: no {model!r} rows (it has: {', '.join(sorted(doc.get('runs', {}))) or 'none'})")
    shift = str(float(doc["tuned"][model]["params"]["cold_shift"]))
    return {"note": f"validation from {validation.name}; test from the {model} rows of {rows.name} "
                    f"(fitted with cold_shift {shift})",
            "validation": val,
            "test": {seed: {"model": model, "shifts": {shift: {v: dict(r) for v, r in run["views"].items()}}}
                     for seed, run in doc["runs"][model].items()}}


def _hybrid(doc: dict[str, Any], part: str, shift: str) -> dict[str, float]:
    """seed -> hybrid NDCG@20 of ``part`` at ``shift`` (the seeds that have it)."""
    return {seed: r["shifts"][shift]["hybrid"]["ndcg@20"]
            for seed, r in doc.get(part, {}).items() if shift in r["shifts"]}


def table(files: list[Path]) -> str:
    """Markdown: per row, the shift chosen on validation (the best hybrid NDCG@20 there), its test
    hybrid NDCG@20 over seeds without and with it, and the first file's row minus each other row
    with both shifted (paired t-test over the seeds both have)."""
    from scipy import stats as sps

    rows = []
    for f in files:
        doc = json.loads(f.read_text(encoding="utf-8"))
        val = doc["validation"]["0"]
        chosen = max(val["shifts"], key=lambda x: val["shifts"][x]["hybrid"]["ndcg@20"])
        best = val["shifts"][chosen]["hybrid"]["ndcg@20"]
        rows.append((val.get("model", "featgan"), val.get("units", "abs"), chosen, best,
                     _hybrid(doc, "test", "0.0"), _hybrid(doc, "test", chosen)))
    lead = rows[0]
    out = ["| row | shift (units) | validation hybrid | test hybrid, no shift | test hybrid, shifted | seeds | "
           f"{lead[0]} (shifted) minus row |", "|:---|---:|---:|---:|---:|---:|:---|"]
    for model, units, chosen, v, plain, shifted in rows:
        seeds = sorted(set(shifted) & set(lead[5]), key=int)
        if model == lead[0] or not seeds:
            versus = ""
        else:
            a, b = np.array([lead[5][x] for x in seeds]), np.array([shifted[x] for x in seeds])
            p = sps.ttest_rel(a, b).pvalue if len(seeds) > 1 else float("nan")
            versus = f"{(a - b).mean():+.4f} (p {p:.2g}, ahead in {(a > b).sum()}/{len(seeds)})"

        def ms(d: dict[str, float]) -> str:
            x = np.array(list(d.values()))
            return f"{x.mean():.4f} ± {x.std(ddof=1):.4f}" if len(x) > 1 else (f"{x[0]:.4f}" if len(x) else "")

        out.append(f"| {model} | {chosen} ({units}) | {v:.4f} | {ms(plain)} | {ms(shifted)} | {len(shifted)} | "
                   f"{versus} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--table", type=Path, nargs="+", default=None,
                    help="print the shifted rows of these result files (the first is compared with the others)")
    ap.add_argument("--model", default="featgan")
    ap.add_argument("--tuned-from", type=Path, default=None,
                    help="a cold_items.py result file: the model's tuned settings (--params overrides them)")
    ap.add_argument("--units", choices=("abs", "z"), default="abs")
    ap.add_argument("--part", choices=("validation", "test"), default="validation")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--params", default="{}")
    ap.add_argument("--shifts", default="0")
    ap.add_argument("--save-dir", type=Path, default=None)
    ap.add_argument("--load-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--gather", type=Path, nargs=2, default=None, metavar=("VALIDATION", "ROWS"),
                    help="write --json from a validation file of this script and a cold_items.py result "
                         "file whose --model row has the chosen shift as its cold_shift")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if args.gather:
        if args.json is None:
            ap.error("--gather needs --json")
        _write(args.json, gather(*args.gather, args.model))
        return
    if args.store is None:
        ap.error("--store is required")
    ds = load_dataset(args.store)
    shifts = [float(x) for x in args.shifts.split(",")]
    for seed in (int(x) for x in args.seeds.split(",")):
        s = split(ds, "cold-items", seed=seed)
        name = f"{args.part}-seed{seed}"
        t = time.perf_counter()
        if args.load_dir is not None:
            model = load_model(args.load_dir / name)
        else:
            params = json.loads(args.params)
            if args.tuned_from is not None:
                tuned = json.loads(args.tuned_from.read_text(encoding="utf-8")).get("tuned", {})
                if args.model not in tuned:
                    raise SystemExit(f"{args.tuned_from}: no tuned settings for {args.model!r} "
                                     f"(it has: {', '.join(sorted(tuned)) or 'none'})")
                params = {**tuned[args.model]["params"], **params}
            # Without "epochs", the validation part also picks the epoch count by early stopping
            # (what cold_items.py's --trials 0 does), so one fit gives both epochs and shift.
            stop = s.validation if args.part == "validation" and "epochs" not in params else None
            model = get_model_class(args.model)(**params)
            model.fit(s.train_inner if args.part == "validation" else s.train,
                      TrainingOptions(seed=seed, validation=stop, callback=lambda e, logged: print(
                          f"epoch {e}", {k: round(v, 4) for k, v in logged.items()}, flush=True)))
            if args.save_dir is not None:
                model.save(args.save_dir / name)
        fit_s = time.perf_counter() - t
        rows = {}
        fitted_on = s.train_inner if args.part == "validation" else s.train
        new = np.diff(fitted_on.matrix().tocsc().indptr) == 0  # products without training pairs
        for shift in shifts:
            views = evaluate_views(Shifted(model, shift, new, args.units), s, ks=(20,), part=args.part)
            rows[str(shift)] = {v: {m: r.summary()[m] for m in ("recall@20", "ndcg@20")} for v, r in views.items()}
            print(args.part, seed, shift, {v: round(r["ndcg@20"], 4) for v, r in rows[str(shift)].items()}, flush=True)
        if args.json:
            doc = json.loads(args.json.read_text(encoding="utf-8")) if args.json.exists() else {}
            doc.setdefault(args.part, {})[str(seed)] = {
                "model": args.model, "units": args.units, "params": model.config.to_dict(), "fit_s": fit_s,
                "best_epoch": getattr(model, "best_epoch", None), "load_avg_1m": os.getloadavg()[0], "shifts": rows}
            _write(args.json, doc)


def _write(path: Path, doc: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
