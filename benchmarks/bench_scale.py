"""Scale benchmark on the generated retail log (benchmarks/retail_log.py) at a named size.

Steps, each measured in its own child process (peak RSS is that step's alone):

1. generate the log (skipped when the files exist; not timed against any target);
2. ``ingest`` it into a fresh store (``events`` format with the product catalogue);
3. per model: load the store, temporal split (last 20 % of time is test, the 20 % before it
   validation), fit on the inner training part with early stopping on validation (sampled:
   ``TrainingOptions.validation_users``), NDCG@20 on test (excluding training purchases), and
   optionally top-10 for every customer (``--batch``): in the same process through
   ``Recommender.top_k`` in blocks of 2,000 customers (the call the batch job makes per block;
   ``--batch-users N`` times a seeded sample of N customers instead and reports time per
   customer), then the model is saved and the real job, ``retailgan.batch.recommend_all``
   (``retailgan recommend --all --k 10``), writes every customer's list in its own process
   (time and peak RSS; with ``--batch-users`` only if ``--batch-job`` is given);
4. the peer: implicit's ALS called directly on the same inner training matrix with the same
   hyperparameters and as many sweeps as retailgan's ``ials`` ran, and its own batch top-10
   (``recommend`` on the same customers, seen purchases filtered).

A model that refuses to start (EASE's memory check) is recorded with its one-line message.

Usage: python benchmarks/bench_scale.py --size S --workdir DIR [--models pop,ials,ease,sansa,implicit]
       [--batch ials,implicit] [--batch-users 0] [--batch-job] [--eval-users 20000] [--skip-ingest]
       [--repeats 3] [--save-models featgan] [--params JSON] [--json docs/results/scale-S.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retail_log import CATALOGUE_MAPPING, EVENTS_MAPPING, SIZES, generate

PARAMS: dict[str, dict[str, Any]] = {
    "pop": {},
    "ials": {"factors": 64, "regularization": 10.0, "alpha": 5.0, "epochs": 15, "patience": 3},
    "ease": {"l2": 500.0},
    "sansa": {"l2": 500.0, "neighbors": 25},
    # featgan: fewer sampled negatives than its default 8,192, and epochs of at most 100,000 of the
    # next-purchase examples (S has 1.6M, M 16M), at most 4: a fit bounded at any size.
    "featgan": {"max_negatives": 2048, "epoch_examples": 100_000, "epochs": 4, "patience": 1},
    "cfgan": {},  # the defaults (the authors' ML-100K settings): refused or estimated before training
    "itemknn": {"neighbors": 100, "shrink": 10.0},  # the defaults
    "bpr": {"factors": 64, "lr": 0.01, "reg": 1e-4, "batch_size": 8192, "epochs": 40, "patience": 5},  # the defaults
    "resgan": {},  # the defaults: refused before allocating where its estimate exceeds the memory
}
ONE_THREAD = {"featgan": 1, "cfgan": 1}
"""Models whose small per-step tensors train on one torch thread (their default): two OpenMP
threads on a shared machine wait on each other at every operation."""
SIZE_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    # At M on the shared 2-core machine: a featgan fit that measures memory, start-up and one
    # epoch's cost per example (2 epochs of 25,000 examples), not a tuned model. Saved with its
    # faiss HNSW index for the service at M (the index is built at load; fit and NDCG score densely).
    "M": {"featgan": {"epoch_examples": 25_000, "epochs": 2, "index": "hnsw"},
          # Dense Adam updates all (customers + products) x factors parameters at every step.
          "bpr": {"sparse": True}},
}
"""Per-size changes to PARAMS."""
K = 20
BATCH_K = 10
BATCH_BLOCK = 2000
"""Customers per top-k call, as retailgan.batch.DEFAULT_BLOCK_SIZE."""
BATCH_USERS = 0
"""--batch-users: 0 = every customer (and the real job), else a seeded sample of this many."""
FULL_CHECK_MAX_USERS = 100_000
"""Above this many validation customers the unsampled check (the old cost) is not timed."""


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _split(store: Path) -> Any:
    from retailgan.data.dataset import load_dataset
    from retailgan.data.splits import split

    t0 = time.perf_counter()
    ds = load_dataset(store)
    s = split(ds, "temporal", seed=0, test_fraction=0.2)
    return s, time.perf_counter() - t0


SIZE = "S"
SAVE_MODELS: set[str] = set()
"""--save-models: models saved after their step (as the batch step saves them)."""
EVAL_USERS = 0
"""Test customers NDCG is measured on (--eval-users; 0 = all), a seeded sample at large sizes."""


def _ndcg(model: Any, s: Any, scores_fn: Any = None) -> tuple[float, int]:
    from retailgan.evaluation.protocols import evaluate
    from retailgan.models.base import validation_sample

    train, test = s.train.matrix(), s.test.matrix()
    users = validation_sample(train, test, EVAL_USERS, seed=0)
    res = evaluate(None if scores_fn else model, train, test, ks=(K,), users=users,
                   scores_fn=scores_fn, batch_size=max(1, (1 << 24) // s.train.n_items))
    return res.summary()[f"ndcg@{K}"], res.n_users


def child_model(name: str, store: Path, batch: bool, peer_sweeps: int) -> dict[str, Any]:
    """Fit one model (or the implicit peer) and measure it; returns a JSON-able dict."""
    s, load_s = _split(store)
    out: dict[str, Any] = {"model": name, "load_split_s": load_s, "rss_after_load_mib": _rss_mib(),
                           "n_users": s.train.n_users, "n_items": s.train.n_items,
                           "train_pairs": len(s.train_inner), "test_pairs": len(s.test)}
    if name == "implicit":
        return out | _implicit(s, peer_sweeps, batch)
    from retailgan.errors import RetailganError
    from retailgan.models.base import IterativeRecommender, TrainingOptions
    from retailgan.models.registry import get_model_class

    model = get_model_class(name)(**{**PARAMS[name], **SIZE_PARAMS.get(SIZE, {}).get(name, {})})
    checks: list[float] = []
    t_last = [time.perf_counter()]

    def callback(epoch: int, logged: dict[str, float]) -> None:
        now = time.perf_counter()
        checks.append(now - t_last[0])
        t_last[0] = now

    opts = TrainingOptions(seed=0, validation=s.validation, callback=callback,
                           num_threads=ONE_THREAD.get(name) or os.cpu_count())
    cpu0 = _cpu_s()
    try:
        model.fit(s.train_inner, opts)
    except RetailganError as exc:
        return out | {"refused": str(exc), "peak_rss_mib": _peak_rss_mib()}
    out["fit_s"] = model.fit_seconds
    out["fit_cpu_s"] = _cpu_s() - cpu0  # on a shared machine: the fit's own work, load aside
    out["fit_peak_rss_mib"] = _peak_rss_mib()
    if isinstance(model, IterativeRecommender):
        out["epochs_run"] = len(model.history)
        out["best_epoch"] = model.best_epoch
        out["epoch_s"] = checks
        out["val"] = [h.get(f"val_ndcg@{K}") for h in model.history]
        out |= _validation_cost(model, s, opts)
    if name in SAVE_MODELS and not batch:  # saved before the evaluation: others may use it sooner
        model.save(store.parent / f"model-{name}-{store.stem}")
    t0 = time.perf_counter()
    out[f"ndcg@{K}"], out["test_users"] = _ndcg(model, s)
    out["eval_s"] = time.perf_counter() - t0
    if batch:
        users = s.train.users.ids[_batch_rows(s.train.n_users)].tolist()
        t0 = time.perf_counter()
        for start in range(0, len(users), BATCH_BLOCK):
            model.top_k(users[start : start + BATCH_BLOCK], k=BATCH_K)
        out |= _batch_figures(time.perf_counter() - t0, len(users), s.train.n_users)
        items = getattr(model, "_items_cache", None)
        if items is not None:  # factor models: customers scored / settled per item prefix
            out["batch_prefixes"] = {str(c): [items[-1].reached[c], items[-1].settled.get(c, 0)]
                                     for c in sorted(items[-1].reached)}
    out["peak_rss_mib"] = _peak_rss_mib()
    if batch:  # for the batch job's own process
        model.save(store.parent / f"model-{name}-{store.stem}")
    return out


def _batch_rows(n_users: int) -> Any:
    """Customer rows the batch top-10 is timed on: all, or a seeded sample (--batch-users)."""
    import numpy as np

    if not BATCH_USERS or n_users <= BATCH_USERS:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(0).choice(n_users, BATCH_USERS, replace=False))


def _batch_figures(seconds: float, customers: int, all_customers: int) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_top10_s": seconds, "batch_customers": customers,
                           "batch_us_per_customer": seconds / max(customers, 1) * 1e6}
    if customers < all_customers:
        out["batch_top10_all_extrapolated_s"] = seconds / customers * all_customers
    return out


def child_batch_job(name: str, store: Path) -> dict[str, Any]:
    """The real batch job on the model saved by its model step: every customer's top-10 into
    one Parquet file (``retailgan recommend --all``), timed with its own peak RSS."""
    from retailgan.batch import recommend_all

    model_dir = store.parent / f"model-{name}-{store.stem}"
    out_file = store.parent / f"recs-{name}-{store.stem}.parquet"
    t0 = time.perf_counter()
    summary = recommend_all(model_dir, out_file, k=BATCH_K)
    wall = time.perf_counter() - t0
    out_file.unlink(missing_ok=True)
    return {"batch_job_s": wall, "batch_job_customers": summary.customers,
            "batch_job_us_per_customer": wall / max(summary.customers, 1) * 1e6,
            "batch_job_peak_rss_mib": _peak_rss_mib()}


def _validation_cost(model: Any, s: Any, opts: Any) -> dict[str, Any]:
    """Seconds of one early-stopping check on the sample the trainer uses, and on every
    validation customer (what each check cost before sampling)."""
    from retailgan.models.base import validation_sample

    sample = validation_sample(model.seen, s.validation.matrix(), opts.validation_users, opts.seed)
    t0 = time.perf_counter()
    model.validation_score(s.validation, f"ndcg@{K}", users=sample)
    t1 = time.perf_counter()
    out: dict[str, Any] = {"val_check_sampled_s": t1 - t0,
                           "val_users_sampled": opts.validation_users if sample is not None else "all"}
    if s.validation.matrix().getnnz(axis=1).astype(bool).sum() <= FULL_CHECK_MAX_USERS:
        model.validation_score(s.validation, f"ndcg@{K}")
        out["val_check_all_s"] = time.perf_counter() - t1
    return out


def _implicit(s: Any, sweeps: int, batch: bool) -> dict[str, Any]:
    import numpy as np
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    p = PARAMS["ials"]
    X = s.train_inner.matrix().astype(np.float32)
    als = AlternatingLeastSquares(factors=p["factors"], regularization=p["regularization"], alpha=p["alpha"],
                                  iterations=sweeps, random_state=0)
    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):
        als.fit(X, show_progress=False)
    out: dict[str, Any] = {"sweeps": sweeps, "fit_s": time.perf_counter() - t0, "fit_peak_rss_mib": _peak_rss_mib()}
    U, V = als.user_factors, als.item_factors
    out[f"ndcg@{K}"], out["test_users"] = _ndcg(None, s, scores_fn=lambda u: U[u] @ V.T)
    if batch:
        Xa = s.train.matrix().tocsr()
        users = _batch_rows(Xa.shape[0])
        t0 = time.perf_counter()
        with threadpool_limits(1, "blas"):
            for start in range(0, len(users), BATCH_BLOCK):
                u = users[start : start + BATCH_BLOCK]
                als.recommend(u, Xa[u], N=BATCH_K, filter_already_liked_items=True)
        out |= _batch_figures(time.perf_counter() - t0, len(users), Xa.shape[0])
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def child_ingest(store: Path, log_dir: Path) -> dict[str, Any]:
    from retailgan.data.ingest import ingest

    t0, cpu0 = time.perf_counter(), _cpu_s()
    report = ingest(store, log_dir / "events.parquet", "events", mapping=EVENTS_MAPPING,
                    catalogue=log_dir / "products.csv.gz", catalogue_mapping=CATALOGUE_MAPPING)
    wall = time.perf_counter() - t0
    rep = report.to_dict()
    # CPU of all DuckDB threads: on a shared machine the load-independent figure.
    return {"ingest_s": wall, "ingest_cpu_s": _cpu_s() - cpu0, "peak_rss_mib": _peak_rss_mib(),
            "rows_in": rep.get("rows_in"), "rows_per_s": (rep.get("rows_in") or 0) / wall,
            "load_average": os.getloadavg()}


def _run_child(*argv: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_child", *argv]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": f"exit {res.returncode}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=list(SIZES), default="S")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--models", default="pop,ials,implicit,sansa,ease")
    ap.add_argument("--batch", default="", help="models whose top-10 for every customer is timed")
    ap.add_argument("--skip-ingest", action="store_true", help="reuse the store in --workdir")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--eval-users", type=int, default=0, help="test customers sampled for NDCG (0 = all)")
    ap.add_argument("--batch-users", type=int, default=0,
                    help="customers sampled for the batch top-10 (0 = all, and the real batch job)")
    ap.add_argument("--memory-limit", default="4GB", help="DuckDB memory_limit for generation")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of the model steps (medians reported)")
    ap.add_argument("--batch-job", action="store_true",
                    help="run the real batch job on every customer even with --batch-users")
    ap.add_argument("--save-models", default="", help="models saved to WORKDIR/model-NAME-STORE after fitting")
    ap.add_argument("--params", default="", help='JSON changes to PARAMS, e.g. \'{"bpr": {"sparse": true}}\'')
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--sweeps", type=int, default=15, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global EVAL_USERS, BATCH_USERS, SAVE_MODELS, SIZE
    EVAL_USERS, BATCH_USERS, SIZE = args.eval_users, args.batch_users, args.size
    SAVE_MODELS = {m for m in args.save_models.split(",") if m}
    for name, changes in (json.loads(args.params) if args.params else {}).items():
        PARAMS[name] = {**PARAMS.get(name, {}), **changes}
    log_dir, store = args.workdir / f"log-{args.size}", args.workdir / f"store-{args.size}.duckdb"
    batch = {m for m in args.batch.split(",") if m}
    if args._child:
        if args.step == "ingest":
            print(json.dumps(child_ingest(store, log_dir)))
        elif args.step.startswith("job:"):
            print(json.dumps(child_batch_job(args.step[4:], store)))
        else:
            print(json.dumps(child_model(args.step, store, args.step in batch, args.sweeps)))
        return

    results: dict[str, Any] = {
        "size": args.size, "spec": vars(SIZES[args.size]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, "
                   f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM",
        "load_average_at_start": os.getloadavg(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "params": PARAMS, "size_params": SIZE_PARAMS.get(args.size, {}),
        "eval_users": args.eval_users or "all", "models": {},
    }
    if args.json and args.json.exists() and args.skip_ingest:  # add to an earlier run's figures
        earlier = json.loads(args.json.read_text())
        results = earlier | {"models": earlier.get("models", {}), "rerun_command": results["command"]}
    if not (log_dir / "events.parquet").exists():
        results["generate_s"] = generate(log_dir, SIZES[args.size], memory_limit=args.memory_limit)
        print(f"generated {args.size} in {sum(results['generate_s'].values()):.1f} s", flush=True)
    if not args.skip_ingest:
        store.unlink(missing_ok=True)
        results["ingest"] = _run_child("--size", args.size, "--workdir", str(args.workdir), "--step", "ingest")
        print(f"ingest: {results['ingest']}", flush=True)
    sweeps = 15
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.repeats):  # interleaved: every model once per round, under the same load
        for name in [m for m in args.models.split(",") if m]:
            r = _run_child("--size", args.size, "--workdir", str(args.workdir), "--step", name,
                           "--batch", ",".join(batch), "--sweeps", str(sweeps), "--eval-users", str(args.eval_users),
                           "--batch-users", str(args.batch_users), "--save-models", args.save_models,
                           "--params", args.params)
            if name in batch and name != "implicit" and (args.batch_job or not args.batch_users) and "fit_s" in r:
                r |= _run_child("--size", args.size, "--workdir", str(args.workdir), "--step", f"job:{name}")
            if name == "ials" and "epochs_run" in r and rep == 0:
                sweeps = r["epochs_run"]  # the peer runs as many ALS sweeps as retailgan's ials did
            r["load_average"] = os.getloadavg()
            runs.setdefault(name, []).append(r)
            results["models"][name] = _median_of(runs[name])
            print(f"{name}: " + json.dumps({k: v for k, v in r.items() if k not in ("epoch_s", "val")}), flush=True)
            if args.json:  # keep what is measured so far
                _write(args.json, results)
    results["load_average_at_end"] = os.getloadavg()
    if args.json:
        _write(args.json, results)


MEDIAN_KEYS = ("fit_s", "fit_cpu_s", "batch_top10_s", "batch_us_per_customer", "batch_job_s",
               "batch_job_us_per_customer",
               "fit_peak_rss_mib", "peak_rss_mib", "batch_job_peak_rss_mib", "val_check_sampled_s")


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run's figures with the timing and memory keys replaced by their medians over
    the runs (all runs kept under ``runs``)."""
    import statistics

    out = dict(runs[0])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if values:
            out[key] = statistics.median(values)
    if len(runs) > 1:
        out["runs"] = runs
    return out


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    main()
