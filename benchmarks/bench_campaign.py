"""Wall time and peak memory of ``retailgan campaign build`` for all Online Retail customers (EASE).

Prepares (untimed) a store from the bundled Online Retail file and an EASE model (l2 = 490), then
runs ``retailgan campaign build --segment all --k K`` ``--repeats`` times as a separate process,
each into a fresh output directory, and reports the median wall time and the peak RSS of the build
process (from ``wait4``). Also reports customers per second, and the summary of the last run.

Usage: python benchmarks/bench_campaign.py [--repeats 3] [--k 10] [--chunk-size 1000]
       [--work DIR] [--json out.json]
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


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of that process in MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=None, help="Keep the store, model and output here.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    store, model = work / "retail.duckdb", work / "ease"
    if not store.exists():
        subprocess.run([*CLI, "ingest", str(DATA), "--store", str(store)], check=True, stdout=subprocess.DEVNULL)
    if not model.exists():
        subprocess.run([*CLI, "train", "--store", str(store), "--model", "ease", "--params", '{"l2": 490}',
                        "--out", str(model)], check=True, stdout=subprocess.DEVNULL)
    walls, rss = [], []
    out = work / "campaign"
    for _ in range(args.repeats):
        shutil.rmtree(out, ignore_errors=True)
        w, r = _timed([*CLI, "campaign", "build", "--store", str(store), "--model-dir", str(model),
                       "--segment", "all", "--k", str(args.k), "--chunk-size", str(args.chunk_size),
                       "--out", str(out)])
        walls.append(w)
        rss.append(r)
        print(f"build: {w:.2f} s, peak RSS {r:.0f} MiB", flush=True)
    summary = json.loads((out / "summary.json").read_text())
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "k": args.k, "chunk_size": args.chunk_size, "repeats": args.repeats,
        "median_wall_s": round(statistics.median(walls), 2), "walls_s": [round(w, 2) for w in walls],
        "max_peak_rss_mib": round(max(rss), 1),
        "customers": summary["customers"], "rows": summary["rows"],
        "customers_per_s": round(summary["customers"] / statistics.median(walls), 1),
        "catalogue_coverage": summary["catalogue_coverage"], "diversity": summary["diversity"],
        "expected_revenue": summary["expected_revenue"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
