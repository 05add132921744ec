"""All-customer top-10 (``retailgan recommend --all``): the batch path against the dense ``recommend``.

Two parts, each run as separate processes (one per measurement, so peak RSS is that run's):

**retail**: a store from the bundled Online Retail file and ``ials``, ``ease`` and ``featgan``
models trained on it (untimed; featgan with a shortened schedule, since only its scoring is
measured). Each model's batch job (:func:`retailgan.batch.recommend_all`, every store customer,
``--k 10``, one worker) runs with two ranking paths: ``top_k`` (the batch path) and ``dense``
(the same job with :meth:`Recommender.recommend` in its place: a float64 (block x items) matrix
per block). featgan also runs with its faiss HNSW index (``index=hnsw``), whose recall@10
against the exact lists is reported (the recall gate of an approximate index).

**synthetic**: an ``ials`` model of ``--customers`` x ``--products`` with random factors (64,
no fitting: only the scoring path is measured) and 8 random purchases per customer, saved as a
model directory; the same two paths, customers taken from the model.

Timings: wall time of the whole job in its process (loading the model, scoring, writing Parquet),
median of ``--repeats``; peak RSS from ``wait4``. The load average is recorded: the machine is
shared, so timings depend on it.

Usage: python benchmarks/bench_batch.py [--parts retail,synthetic] [--repeats 3]
       [--customers 200000] [--products 20000] [--work DIR] [--json docs/results/bench-batch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "online-retail" / "online_retail.csv.gz"
CLI = [sys.executable, "-m", "retailgan.cli"]
RETAIL_MODELS = {
    "ials": '{"factors": 64, "epochs": 10}',
    "ease": '{"l2": 490}',
    "featgan": '{"epochs": 5}',
}

# One measured job, run in a fresh process: argv = model_dir out path store|- index|- (json to stdout).
JOB = r"""
import json, sys, time
from retailgan.batch import recommend_all
from retailgan.serving import engine
model_dir, out, path, store, index = sys.argv[1:6]
load = engine.ModelBundle.load
def patched(p):
    b = load(p)
    cls = type(b.model)
    if path == "dense":
        cls.top_k = cls.recommend  # the old path: a dense float64 matrix per block
    if index != "-":
        import dataclasses
        b.model.config = dataclasses.replace(b.model.config, index=index)
        b.model._invalidate()
    return b
engine.ModelBundle.load = classmethod(lambda cls, p: patched(p))
t = time.perf_counter()
s = recommend_all(model_dir, out, store=None if store == "-" else store, k=10)
print(json.dumps({"seconds": time.perf_counter() - t, "customers": s.customers, "rows": s.rows}))
"""


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _measure(model_dir: Path, out: Path, path: str, store: Path | None, index: str | None) -> dict:
    """One job in its own process: its wall time (s) and peak RSS (MiB)."""
    load = _load()
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(model_dir), str(out), path,
                             str(store) if store else "-", index or "-"], stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"job failed ({path}, {model_dir}): exit {proc.returncode}")
    res = json.loads(stdout.strip().splitlines()[-1])
    return {**res, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "load_before": load}


def _lists(path: Path) -> dict[str, list[str]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["customer_id", "product_id"]).to_pydict()
    out: dict[str, list[str]] = {}
    for c, p in zip(t["customer_id"], t["product_id"], strict=True):
        out.setdefault(c, []).append(p)
    return out


def _compare(model_dir: Path, work: Path, store: Path | None, repeats: int,
             paths: list[tuple[str, str | None]]) -> dict:
    """Medians of ``repeats`` runs per path; checks that top_k and dense wrote the same lists."""
    result: dict = {}
    outs: dict[str, Path] = {}
    for rep in range(repeats):
        for path, index in paths:  # interleaved, so load drifts hit both paths alike
            name = path if index is None else f"{path}-{index}"
            outs[name] = work / f"{model_dir.name}-{name}.parquet"
            m = _measure(model_dir, outs[name], path, store, index)
            result.setdefault(name, {"runs": []})["runs"].append(m)
            print(f"  {model_dir.name} {name} run {rep + 1}: {m['seconds']:.2f} s, {m['peak_rss_mib']} MiB "
                  f"(load {m['load_before']})", flush=True)
    for r in result.values():
        r["median_s"] = round(statistics.median(x["seconds"] for x in r["runs"]), 3)
        r["median_peak_rss_mib"] = statistics.median(x["peak_rss_mib"] for x in r["runs"])
        r["customers"] = r["runs"][0]["customers"]
        r["us_per_customer"] = round(1e6 * r["median_s"] / max(r["customers"], 1), 2)
    exact = _lists(outs["top_k"])
    result["top_k_equals_dense"] = exact == _lists(outs["dense"])
    for name, out in outs.items():
        if name.startswith("top_k-"):  # an approximate index: recall@10 against the exact lists
            approx = _lists(out)
            hits = sum(len(set(approx.get(c, [])) & set(v)) for c, v in exact.items())
            result[name]["recall_at_10"] = round(hits / max(sum(len(v) for v in exact.values()), 1), 4)
    return result


def retail(work: Path, repeats: int) -> dict:
    store = work / "retail.duckdb"
    if not store.exists():
        _run([*CLI, "ingest", str(DATA), "--store", str(store)])
    out: dict = {}
    for name, params in RETAIL_MODELS.items():
        model = work / f"retail-{name}"
        if not model.exists():
            t = time.perf_counter()
            _run([*CLI, "train", "--store", str(store), "--model", name, "--params", params, "--out", str(model)])
            print(f"trained {name} in {time.perf_counter() - t:.1f} s", flush=True)
        paths: list[tuple[str, str | None]] = [("top_k", None), ("dense", None)]
        if name == "featgan":
            paths.append(("top_k", "hnsw"))
        out[name] = {"params": json.loads(params), **_compare(model, work, store, repeats, paths)}
    return out


def synthetic_ials(path: Path, customers: int, products: int, factors: int = 64, per_customer: int = 8) -> None:
    """An ``ials`` model directory with random factors (no fitting) and random purchases."""
    import numpy as np

    from retailgan.data.dataset import InteractionDataset
    from retailgan.models.baselines import IALS

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(customers), per_customer)
    # Power-law popularity: a few products sell much more than the rest.
    items = np.minimum(rng.zipf(1.3, len(users)) - 1, products - 1)
    ds = InteractionDataset.from_arrays([f"C{u:07d}" for u in users], [f"P{i:06d}" for i in items])
    model = IALS(factors=factors)
    model.users, model.items, model.item_info = ds.users, ds.items, ds.item_info
    model.seen = ds.matrix()
    model.popularity = ds.item_popularity().astype(np.float32)
    model.user_factors = rng.standard_normal((len(ds.users), factors), dtype=np.float32) * 0.1
    model.item_factors = rng.standard_normal((len(ds.items), factors), dtype=np.float32) * 0.1
    model.save(path)


def synthetic(work: Path, repeats: int, customers: int, products: int) -> dict:
    model = work / f"synthetic-ials-{customers}x{products}"
    if not model.exists():
        synthetic_ials(model, customers, products)
    res = _compare(model, work, None, repeats, [("top_k", None), ("dense", None)])
    meta = json.loads((model / "model.json").read_text(encoding="utf-8"))
    # Products nobody bought are not in the model: report the catalogue it scores.
    return {"customers": customers, "products_requested": products, "products": len(meta["item_ids"]),
            "pairs": customers * 8, "factors": 64, "ials": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="retail,synthetic")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--products", type=int, default=20_000)
    ap.add_argument("--work", type=Path, default=None, help="Keep stores and models here (reused between runs).")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    doc: dict = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "repeats": args.repeats,
    }
    parts = args.parts.split(",")
    try:
        if "retail" in parts:
            doc["retail"] = retail(work, args.repeats)
        if "synthetic" in parts:
            doc["synthetic"] = synthetic(work, args.repeats, args.customers, args.products)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
