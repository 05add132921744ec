"""Cold-start item benchmark: the ``cold-items`` protocol, every row on the same splits.

For each seed: one ``cold-items`` split (20 % of the products new, half validation, half test);
each model tuned on the validation part of the first seed's split (``--trials`` Optuna trials;
0: defaults with the epoch count chosen by early stopping on validation), the cold-start models
on the tuned ``bpr`` row as their backbone (its factors, step size, penalty and epochs), then fitted on the
training part of every seed's split with those settings and evaluated once in the cold-only,
warm-only and hybrid views (Recall@20, NDCG@20, full ranking). Per-customer NDCG@20 arrays give
paired tests of featgan against the best other row of each view (per seed: bootstrap CI, t-test,
Wilcoxon; over seeds: a paired t-test of the seed means). The JSON (and the per-customer
NDCG@20 arrays beside it, ``<json>.per-user.npz``) is rewritten atomically after every
(seed, model), so an interrupted run keeps the rows it finished; ``--resume`` continues it (the
(seed, model) pairs already in the JSON are not run again). ``--merge`` takes the tuned settings
and runs of other result files of the same dataset (the splits are checked to be the same), so
more seeds can be added to a row with the settings it was tuned with. ``--tuned`` gives a model
settings chosen on the same validation part by another script (featgan's epochs and
``cold_shift`` by ``benchmarks/cold_calibration.py``), run without a tuning run of its own.
``--save-dir DIR`` keeps every fitted row as ``DIR/<model>/test-seed<seed>``, so that
``cold_calibration.py --part test --load-dir DIR/<model>`` scores it with shifts without a refit.

    python benchmarks/cold_items.py --store out/ml100k.duckdb --name movielens-100k --seeds 0,1,2 \\
        --trials 0 --json docs/results/cold-movielens-100k.json
    python benchmarks/cold_items.py --store out/ml100k.duckdb --name movielens-100k --seeds 0,1,2,3,4 \\
        --trials 0 --json docs/results/cold-movielens-100k.json --resume          # two more seeds
    python benchmarks/cold_items.py --table docs/results/cold-movielens-100k.json   # markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from retailgan.data.dataset import load_dataset
from retailgan.data.splits import split
from retailgan.evaluation.cold import VIEWS, evaluate_views
from retailgan.evaluation.stats import paired_comparison
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.tuning import tune

MODELS = ("pop", "contentknn", "bpr", "dropoutnet", "heater", "clcrec", "gar", "featgan")
COLD = ("dropoutnet", "heater", "clcrec", "gar")


def backbone_params(bpr: dict[str, Any]) -> dict[str, Any]:
    """The tuned BPR-MF row's settings as the cold-start models' backbone: one backbone for all."""
    return {"factors": bpr["factors"], "bpr_lr": bpr["lr"], "bpr_reg": bpr["reg"], "bpr_epochs": bpr["epochs"]}
METRICS = ("recall@20", "ndcg@20")


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    tmp.replace(path)


def _recommend_ms(model: Any, n: int = 200) -> float:
    """Median over 3 repeats of ``recommend(k=20)`` time per customer, for ``n`` customers."""
    users = list(model.users.ids[:n])
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model.recommend(users, k=20)
        times.append((time.perf_counter() - t) / len(users) * 1000)
    return float(np.median(times))


def per_user_path(json_path: str | Path) -> Path:
    """The per-customer NDCG@20 arrays of a result file: ``<json>.per-user.npz``."""
    return Path(json_path).with_suffix(".per-user.npz")


def load_results(path: str | Path) -> tuple[dict[str, Any], dict[tuple[int, str, str], np.ndarray]]:
    """A result file and its per-customer arrays (empty where the file has none)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    archive = doc.setdefault("per_customer_tests", {})
    for v, t in doc.get("paired", {}).items():  # files from before the archive
        for seed, r in t.get("per_seed", {}).items():
            archive.setdefault(f"{v}/{t['best_other']}/{seed}", r)
    per_user: dict[tuple[int, str, str], np.ndarray] = {}
    side = per_user_path(path)
    if side.exists():
        with np.load(side) as z:
            for key in z.files:
                seed, name, view = key.split("/")
                per_user[(int(seed), name, view)] = z[key]
    return doc, per_user


def _write_per_user(path: Path, per_user: dict[tuple[int, str, str], np.ndarray]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **{f"{s}/{n}/{v}": a.astype(np.float32) for (s, n, v), a in per_user.items()})
    tmp.replace(path)


def merge_into(
    doc: dict[str, Any], per_user: dict[tuple[int, str, str], np.ndarray],
    other: dict[str, Any], other_per_user: dict[tuple[int, str, str], np.ndarray], source: str,
) -> None:
    """Add ``other``'s tuned settings and (seed, model) runs that ``doc`` lacks; same dataset and
    splits required (a seed both files split must have the same split description)."""
    if other.get("dataset") != doc["dataset"] or other.get("protocol") != doc["protocol"]:
        raise SystemExit(f"{source}: dataset/protocol {other.get('dataset')}/{other.get('protocol')}, "
                         f"expected {doc['dataset']}/{doc['protocol']}")
    for seed, desc in other.get("splits", {}).items():
        mine = doc.setdefault("splits", {}).setdefault(seed, desc)
        if mine != desc:
            raise SystemExit(f"{source}: the split of seed {seed} differs from this run's")
    for key, r in other.get("per_customer_tests", {}).items():
        doc.setdefault("per_customer_tests", {}).setdefault(key, r)
    for cmd in other.get("commands", [other["command"]] if other.get("command") else []):
        if cmd not in doc.setdefault("commands", []):
            doc["commands"].append(cmd)  # the runs' provenance
    for name, tuned in other.get("tuned", {}).items():
        doc["tuned"].setdefault(name, tuned)
    for name, runs in other.get("runs", {}).items():
        for seed, entry in runs.items():
            if seed not in doc["runs"].get(name, {}):
                doc["runs"].setdefault(name, {})[seed] = entry
                for v in VIEWS:
                    if (int(seed), name, v) in other_per_user:
                        per_user[(int(seed), name, v)] = other_per_user[(int(seed), name, v)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset(args.store)
    seeds = [int(s) for s in args.seeds.split(",")]
    models = [m for m in args.models.split(",") if m]
    fixed = json.loads(args.params) if args.params else {}
    doc: dict[str, Any] = {
        "dataset": args.name, "protocol": "cold-items", "seeds": seeds, "trials": args.trials,
        "pairs": len(ds), "users": ds.n_users, "items": ds.n_items, "tuned": {}, "runs": {},
        "command": args.command,
    }
    per_user: dict[tuple[int, str, str], np.ndarray] = {}
    if args.resume and args.json and Path(args.json).exists():
        merge_into(doc, per_user, *load_results(args.json), args.json)
    for path in args.merge or []:
        merge_into(doc, per_user, *load_results(path), str(path))
    doc["commands"] = [*doc.get("commands", []), args.command]  # after those of resumed / merged files
    for name, params in (json.loads(args.tuned) if args.tuned else {}).items():
        # Settings chosen on the first seed's validation part by another script (the epochs and
        # featgan's cold_shift by benchmarks/cold_calibration.py): no tuning run here.
        doc["tuned"].setdefault(name, {"params": params, "validation_ndcg@20": None, "tune_s": None,
                                       "seed": seeds[0], "source": "--tuned"})

    def save() -> None:
        doc["seeds"] = sorted({int(x) for runs in doc["runs"].values() for x in runs})
        doc["summary"] = summarise(doc)
        doc["paired"] = paired_tests(doc, per_user)
        if args.json:
            _write(Path(args.json), doc)
            _write_per_user(per_user_path(args.json), per_user)

    for seed in seeds:
        s = split(ds, "cold-items", seed=seed)
        if doc.setdefault("splits", {}).setdefault(str(seed), s.describe()) != s.describe():
            raise SystemExit(f"seed {seed}: the stored split differs from this store's (another store?)")
        for name in models:
            if str(seed) in doc["runs"].get(name, {}):
                continue  # resumed or merged
            if name not in doc["tuned"]:
                fix = dict(fixed.get(name, {}))
                if name in COLD and "bpr" in doc["tuned"]:
                    fix = {**backbone_params(doc["tuned"]["bpr"]["params"]), **fix}
                res = tune(name, split(ds, "cold-items", seed=seeds[0]), n_trials=args.trials, seed=seeds[0],
                           metric="ndcg@20", fixed=fix)
                doc["tuned"][name] = {"params": res.params, "validation_ndcg@20": res.value, "tune_s": res.seconds,
                                      "seed": seeds[0]}
                print(f"{args.name} {name}: tuned {res.params} val {res.value:.4f} ({res.seconds:.0f} s)", flush=True)
            model = get_model_class(name)(**doc["tuned"][name]["params"])
            model.fit(s.train, TrainingOptions(seed=seed))
            if args.save_dir is not None:  # cold_calibration.py --load-dir DIR/<model> scores it again
                model.save(Path(args.save_dir) / name / f"test-seed{seed}")
            t = time.perf_counter()
            views = evaluate_views(model, s, ks=(20,))
            entry = {
                "fit_s": model.fit_seconds, "eval_s": time.perf_counter() - t, "recommend_ms": _recommend_ms(model),
                "load_avg_1m": os.getloadavg()[0],  # the machine's load when the row finished: times are inflated by it
                "views": {v: {**{m: r.summary()[m] for m in METRICS}, "n_users": r.n_users} for v, r in views.items()},
            }
            for v, r in views.items():
                per_user[(seed, name, v)] = r.per_user["ndcg@20"]
            doc["runs"].setdefault(name, {})[str(seed)] = entry
            print(f"{args.name} seed {seed} {name}: " + ", ".join(
                f"{v} {entry['views'][v]['ndcg@20']:.4f}" for v in VIEWS) + f" (fit {model.fit_seconds:.0f} s)",
                flush=True)
            save()
    save()  # also when every row was resumed or merged
    return doc


def summarise(doc: dict[str, Any]) -> dict[str, Any]:
    """model -> view -> metric -> [mean, sd over seeds, seeds], plus mean times."""
    out: dict[str, Any] = {}
    order = [m for m in MODELS if m in doc["runs"]] + [m for m in doc["runs"] if m not in MODELS]
    for name in order:
        runs = doc["runs"][name]
        row: dict[str, Any] = {"seeds": len(runs)}
        for v in VIEWS:
            for m in METRICS:
                xs = np.array([r["views"][v][m] for r in runs.values()])
                row[f"{v} {m}"] = [float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0]
        for key in ("fit_s", "eval_s", "recommend_ms"):
            row[key] = float(np.mean([r[key] for r in runs.values()]))
        row["tune_s"] = doc["tuned"].get(name, {}).get("tune_s")
        out[name] = row
    return out


def paired_tests(doc: dict[str, Any], per_user: dict[tuple[int, str, str], np.ndarray]) -> dict[str, Any]:
    """featgan against the best other model of each view (by mean NDCG@20 over the seeds both ran).
    Per-customer tests once computed are kept in ``doc["per_customer_tests"]`` (``view/model/seed``),
    so files written before the arrays were stored keep theirs."""
    if "featgan" not in doc["runs"]:
        return {}
    out = {}
    for v in VIEWS:
        others = {n: r for n, r in doc["summary"].items() if n != "featgan"}
        if not others:
            continue
        best = max(others, key=lambda n: others[n][f"{v} ndcg@20"][0])
        seeds = sorted(set(doc["runs"]["featgan"]) & set(doc["runs"][best]), key=int)
        archive = doc.setdefault("per_customer_tests", {})
        per_seed = {}
        for s in seeds:
            key = f"{v}/{best}/{s}"
            if key not in archive and (int(s), "featgan", v) in per_user and (int(s), best, v) in per_user:
                archive[key] = paired_comparison(per_user[(int(s), "featgan", v)], per_user[(int(s), best, v)],
                                                 n_boot=2000, seed=int(s)).as_dict()
            if key in archive:
                per_seed[s] = archive[key]
        a = [doc["runs"]["featgan"][s]["views"][v]["ndcg@20"] for s in seeds]
        b = [doc["runs"][best][s]["views"][v]["ndcg@20"] for s in seeds]
        over = float(sps.ttest_rel(a, b).pvalue) if len(seeds) > 1 and np.any(np.subtract(a, b)) else None
        out[v] = {"best_other": best, "seeds": seeds, "mean_diff": float(np.mean(np.subtract(a, b))),
                  "p_ttest_over_seeds": over, "per_seed": per_seed}
    return out


def versus_table(doc: dict[str, Any]) -> list[str]:
    """featgan minus every other row, NDCG@20 per view: the mean difference over the seeds both
    ran, the paired t-test over those seeds' means, and in how many of them featgan is ahead."""
    if "featgan" not in doc["runs"]:
        return []
    others = [n for n in doc["summary"] if n != "featgan"]
    lines = ["| view | " + " | ".join(others) + " |", "|:---|" + "---:|" * len(others)]
    for v in VIEWS:
        cells = []
        for o in others:
            seeds = sorted(set(doc["runs"]["featgan"]) & set(doc["runs"][o]), key=int)
            d = np.array([doc["runs"]["featgan"][s]["views"][v]["ndcg@20"] - doc["runs"][o][s]["views"][v]["ndcg@20"]
                          for s in seeds])
            p = f"p {sps.ttest_1samp(d, 0.0).pvalue:.2g}, " if len(d) > 1 and np.any(d) else ""
            cells.append(f"{d.mean():+.4f} ({p}{int((d > 0).sum())}/{len(d)})" if len(d) else "")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def table(*files: str | Path) -> str:
    """The markdown table of docs/benchmarks-cold.md for one dataset from result files of it: the
    runs of all files together (a (seed, model) run already read is kept from the earlier file),
    featgan's paired tests over them (per-customer tests where the files carry their arrays)."""
    doc, per_user = load_results(files[0])
    doc = {**doc, "tuned": dict(doc["tuned"]), "runs": {n: dict(r) for n, r in doc["runs"].items()}}
    for path in files[1:]:
        merge_into(doc, per_user, *load_results(path), str(path))
    doc["summary"] = summarise(doc)
    doc["paired"] = paired_tests(doc, per_user)
    cols = " | ".join(f"{v} R@20 | {v} N@20" for v in VIEWS)
    head = f"| model | {cols} | seeds | fit s | tune s | ms/customer |"
    lines = [head, "|:---|" + "---:|" * (2 * len(VIEWS) + 4)]
    for name, row in doc["summary"].items():
        sd = (lambda x: f" ± {x:.4f}") if row["seeds"] > 1 else (lambda x: "")  # one seed: no sd
        cells = [f"{row[f'{v} {m}'][0]:.4f}{sd(row[f'{v} {m}'][1])}" for v in VIEWS for m in METRICS]
        tune_s = "" if row.get("tune_s") is None else f"{row['tune_s']:.0f}"
        times = f" | {row['seeds']} | {row['fit_s']:.1f} | {tune_s} | {row['recommend_ms']:.2f} |"
        lines.append(f"| {name} | " + " | ".join(cells) + times)
    lines += ["", *versus_table(doc)]
    for v, t in doc.get("paired", {}).items():
        p = t["p_ttest_over_seeds"]
        ps = ", ".join(f"{d['p_ttest']:.2g}" for d in t["per_seed"].values()) or "n/a (arrays not stored)"
        lines.append("")
        lines.append(f"- {v}: featgan - {t['best_other']} = {t['mean_diff']:+.4f} NDCG@20 over seeds {t['seeds']}"
                     f" (paired t over seeds p = {'n/a' if p is None else f'{p:.2g}'}; per-customer p per seed: {ps})")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path)
    ap.add_argument("--name", default="dataset")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--trials", type=int, default=0)
    ap.add_argument("--params", default=None, help='fixed parameters per model, JSON: {"bpr": {"epochs": 20}}')
    ap.add_argument("--tuned", default=None,
                    help='settings per model chosen on validation elsewhere, used without tuning: {"featgan": {...}}')
    ap.add_argument("--json", default=None)
    ap.add_argument("--resume", action="store_true",
                    help="continue the --json file: keep its tuned settings and runs, run what it lacks")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="result files of the same dataset whose tuned settings and runs are taken over")
    ap.add_argument("--save-dir", type=Path, default=None,
                    help="keep each fitted row as DIR/<model>/test-seed<seed> (for cold_calibration.py --load-dir)")
    ap.add_argument("--table", type=Path, nargs="+", default=None,
                    help="print the markdown table of result files (one dataset) and exit")
    args = ap.parse_args()
    if args.table:
        print(table(*args.table), end="")
        return
    import sys

    args.command = "python " + " ".join(sys.argv)
    run(args)


if __name__ == "__main__":
    main()
