"""Batch jobs on the ``local`` and ``ray`` engines, and the memory of processes sharing a mapped model.

**engines**: a generated retail log (``retail_log.py``, ``--size``) is ingested and an ``ials``
model (64 factors) trained on it (untimed); then ``recommend_all`` (every store customer, top-10,
one Parquet table) runs ``--repeats`` times on each of: ``local`` with 1 worker, ``local`` with 2
worker processes, ``ray`` with 2 actors on a local Ray instance (``num_cpus=2``) started once
before (its start-up is timed on its own), in rotating order. Ray's overhead is the ratio of the
medians, ray / local at 2 workers. Every run's table is checked byte for byte against the first.
One more run goes through the CLI with no instance running (``--engine ray`` starts and stops
its own), which is what a user without a cluster gets.

**mmap**: an ``ials`` model directory of ``--mmap-customers`` x ``--mmap-products`` (random
factors and 8 random purchases per customer, as in ``bench_batch.py``: only the loading is
measured). For each way of loading (``read``: safetensors into memory; ``mapped``:
``load_model(mmap=True)``, the service's and batch workers' way), ``--processes`` processes are
started one after another; each loads the model, scores one block of 2,000 customers and waits.
After each start, RSS, PSS and USS (private clean + dirty) of every live process are read from
``/proc/<pid>/smaps_rollup``. A process that only imports what loading imports gives the baseline.

The machine is shared: the load average is recorded with each timing.

Usage: python benchmarks/bench_engines.py --work DIR [--parts engines,mmap] [--size S] [--repeats 3]
       [--json docs/results/bench-engines.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import synthetic_ials
from retail_log import CATALOGUE_MAPPING, EVENTS_MAPPING, SIZES, generate

CLI = [sys.executable, "-m", "retailgan.cli"]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def prepare(work: Path, size: str, store: Path | None = None, model: Path | None = None,
            ) -> tuple[Path, Path, dict[str, Any]]:
    """The store and the trained ials model of the generated log (reused when present; ``store``
    and ``model`` name existing ones, e.g. ``bench_scale.py``'s)."""
    from retailgan.data.ingest import ingest

    log_dir = work / f"log-{size}"
    store, model = store or work / f"{size}.duckdb", model or work / f"ials-{size}"
    info: dict[str, Any] = {"store": str(store), "model": str(model)}
    if not store.exists():
        t = time.perf_counter()
        generate(log_dir, SIZES[size])
        ingest(store, log_dir / "events.parquet", "events", mapping=EVENTS_MAPPING,
               catalogue=log_dir / "products.csv.gz", catalogue_mapping=CATALOGUE_MAPPING)
        info["generate_ingest_s"] = time.perf_counter() - t
    if not model.exists():
        t = time.perf_counter()
        subprocess.run([*CLI, "train", "--store", str(store), "--model", "ials", "--out", str(model),
                        "--params", '{"factors": 64, "epochs": 8}'], check=True, stdout=subprocess.DEVNULL)
        info["train_s"] = time.perf_counter() - t
    return store, model, info


SETUPS = {"local-1": ("local", 1), "local-2": ("local", 2), "ray-2": ("ray", 2)}


def engines(work: Path, size: str, repeats: int, names: list[str] | None = None, cli: bool = True,
            store: Path | None = None, model: Path | None = None) -> dict[str, Any]:
    import ray

    from retailgan.batch import recommend_all

    store, model, info = prepare(work, size, store, model)
    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    ray_start_s = time.perf_counter() - t
    setups = [(name, *SETUPS[name]) for name in (names or list(SETUPS))]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in setups}
    reference: bytes | None = None
    customers = 0
    try:
        for r in range(repeats):
            for name, engine, workers in setups[r % len(setups) :] + setups[: r % len(setups)]:  # rotate: load drifts
                out = work / f"recs-{name}.parquet"
                load = _load()
                t = time.perf_counter()
                s = recommend_all(model, out, store=store, k=10, workers=workers, engine=engine)
                runs[name].append({"seconds": time.perf_counter() - t, "load_before": load})
                customers = s.customers
                data = out.read_bytes()
                reference = reference or data
                assert data == reference, f"{name}: a different table"
                print(f"{name} #{r}: {runs[name][-1]['seconds']:.1f} s (load {load})", flush=True)
    finally:
        ray.shutdown()
    med = {name: statistics.median(x["seconds"] for x in rs) for name, rs in runs.items()}
    result = {"size": size, "spec": SIZES[size].__dict__, "customers": customers, "k": 10, **info,
              "ray_start_s": ray_start_s, "runs": runs, "median_s": med,
              "us_per_customer": {k: 1e6 * v / customers for k, v in med.items()}, "tables_identical": True}
    if {"ray-2", "local-2"} <= med.keys():
        result["ray_overhead_ratio"] = med["ray-2"] / med["local-2"]
    if {"local-1", "local-2"} <= med.keys():
        result["local_2_speedup"] = med["local-1"] / med["local-2"]
    if cli:  # what a user without a cluster gets: the CLI starts a local instance and stops it
        out = work / "recs-cli-ray.parquet"
        result["cli_load_before"] = _load()
        t = time.perf_counter()
        subprocess.run([*CLI, "recommend", "--model-dir", str(model), "--all", "--store", str(store), "--k", "10",
                        "--out", str(out), "--engine", "ray", "--workers", "2"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result["cli_ray_with_own_instance_s"] = time.perf_counter() - t
        assert out.read_bytes() == reference
    return result


# -- memory of processes sharing one model -----------------------------------------------------------

CHILD = r"""
import sys
from retailgan.persistence import load_model
path, how = sys.argv[1:3]
if how == "none":  # the baseline: the same imports, no model
    from retailgan.models.registry import get_model_class
    get_model_class("ials")
else:
    model = load_model(path, mmap=how == "mapped")
    model.top_k([str(u) for u in model.users.ids[:2000]], 10)
print("ready", flush=True)
sys.stdin.read()
"""


def _rollup(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of process ``pid`` in MiB."""
    kb: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        kb[key] = int(value.split()[0])
    mib = 1024.0
    return {"rss_mib": kb["Rss"] / mib, "pss_mib": kb["Pss"] / mib,
            "uss_mib": (kb["Private_Clean"] + kb["Private_Dirty"]) / mib}


def _start(model: Path, how: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(model), how], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def mmap(work: Path, customers: int, products: int, processes: int) -> dict[str, Any]:
    model = work / f"synthetic-ials-{customers}x{products}"
    if not model.exists():
        synthetic_ials(model, customers, products)
    file_mib = sum(f.stat().st_size for f in model.iterdir()) / 2**20
    arrays_mib = (model / "arrays.safetensors").stat().st_size / 2**20
    meta = json.loads((model / "model.json").read_text(encoding="utf-8"))
    res: dict[str, Any] = {"model": str(model.name), "customers": len(meta["user_ids"]),
                           "products": len(meta["item_ids"]),  # products nobody bought are not in it
                           "model_dir_mib": file_mib, "arrays_mib": arrays_mib}
    base = _start(model, "none")
    res["baseline_import_only"] = _rollup(base.pid)
    base.communicate("")
    for how in ("read", "mapped"):
        procs: list[subprocess.Popen[str]] = []
        steps = []
        try:
            for _ in range(processes):
                procs.append(_start(model, how))
                steps.append([_rollup(p.pid) for p in procs])
        finally:
            for p in procs:
                p.communicate("")
        res[how] = steps
        print(how, json.dumps(steps[-1]), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--parts", default="engines,mmap")
    ap.add_argument("--size", choices=list(SIZES), default="S")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--setups", default=",".join(SETUPS), help="engine setups to time (local-1, local-2, ray-2)")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI run that starts its own Ray instance")
    ap.add_argument("--store", type=Path, help="(engines) an existing store of the log instead of WORK/SIZE.duckdb")
    ap.add_argument("--model", type=Path, help="(engines) an existing ials model of it instead of WORK/ials-SIZE")
    ap.add_argument("--mmap-customers", type=int, default=1_000_000)
    ap.add_argument("--mmap-products", type=int, default=100_000)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {}
    if args.json and args.json.exists():
        doc = json.loads(args.json.read_text())  # one part at a time keeps the other's figures
    doc["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs"
    command = "python benchmarks/bench_engines.py " + " ".join(sys.argv[1:])
    parts = args.parts.split(",")
    if "engines" in parts:
        doc["engines"] = {"command": command, **engines(args.work, args.size, args.repeats, args.setups.split(","),
                                                           not args.no_cli, args.store, args.model)}
    if "mmap" in parts:
        doc["mmap"] = {"command": command, **mmap(args.work, args.mmap_customers, args.mmap_products,
                                                   args.processes)}
    text = json.dumps(doc, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
