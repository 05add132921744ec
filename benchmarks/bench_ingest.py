"""Ingest throughput: (a) UCI Online Retail into fresh stores, (b) a synthetic event log.

(a) times ``ingest(..., "online-retail")`` of the bundled 541,909-line file, median of
``--repeats`` runs, each into a fresh store. (b) writes a ``--rows``-row Parquet event log with
DuckDB ``range()`` (streamed, memory-bounded; not timed), ingests it with the ``events`` format
into a fresh store, then ingests it again with ``force`` (every event already present: the
anti-join path, nothing inserted).

Every measured ingest runs in its own child process, so the reported peak RSS
(``resource.getrusage``) is that ingest's alone and not the generator's.

Usage: python benchmarks/bench_ingest.py [--rows 20000000] [--repeats 3] [--workdir DIR]
       [--memory-limit 4GB] [--skip-retail] [--skip-synthetic] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RETAIL = REPO / "data" / "online-retail" / "online_retail.csv.gz"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retail_log import EVENTS_MAPPING  # noqa: E402  (the same event columns as the generated retail log)


def generate(path: Path, rows: int, memory_limit: str) -> float:
    """Write a synthetic log of ``rows`` events (500k users, 50k items, 60% views, 20% carts,
    20% purchases) to Parquet; returns seconds taken."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"""
        COPY (
            SELECT 'c' || (hash(i) % 500000) AS customer,
                   'p' || (hash(i * 7 + 1) % 50000) AS sku,
                   TIMESTAMP '2024-01-01' + to_seconds(i // 4) AS event_time,
                   (['view', 'view', 'view', 'cart', 'purchase'])[1 + (i % 5)::INTEGER] AS action,
                   CASE WHEN i % 5 >= 3 THEN 1 + (i % 3) END::DOUBLE AS qty,
                   round(1 + (hash(i * 7 + 1) % 50000) / 1000.0, 2) AS unit_price
            FROM range({rows}) t(i)
        ) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)
    """)
    con.close()
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    """Run one ingest in this (fresh) process and print a JSON line with time and peak RSS."""
    import logging

    from retailgan.data.ingest import ingest

    logging.basicConfig(level=logging.INFO, format="    %(message)s")  # per-step times, stderr
    mapping = EVENTS_MAPPING if args.fmt == "events" else None
    opts = {"force": True} if args.force else None
    t0 = time.perf_counter()
    report = ingest(args.store, args.source, args.fmt, mapping=mapping, options=opts)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    peak = ru.ru_maxrss / 1024  # KiB -> MiB on Linux
    # CPU seconds (all threads, whole process): on a shared machine less noisy than wall time.
    cpu = ru.ru_utime + ru.ru_stime
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak, "report": report.to_dict()}))


STEPS = False  # --steps: echo each child's per-step timings


def run_child(store: Path, source: Path, fmt: str, memory_limit: str, force: bool = False) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--_child",
        "--store",
        str(store),
        "--source",
        str(source),
        "--fmt",
        fmt,
        "--memory-limit",
        memory_limit,
    ]
    if force:
        cmd.append("--force")
    # Store.open reads its memory_limit from this variable (default 4GB).
    env = {**os.environ, "RETAILGAN_DUCKDB_MEMORY_LIMIT": memory_limit}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    if STEPS:
        print(out.stderr.rstrip(), flush=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000, help="synthetic log size")
    ap.add_argument("--repeats", type=int, default=3, help="Online Retail runs (median)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--memory-limit", default="4GB", help="DuckDB memory_limit")
    ap.add_argument("--retail", type=Path, default=RETAIL)
    ap.add_argument("--skip-retail", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument("--steps", action="store_true", help="print each ingest's per-step timings")
    # internal: one measured ingest in a child process
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--fmt", help=argparse.SUPPRESS)
    ap.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child(args)
        return
    global STEPS
    STEPS = args.steps

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "memory_limit": args.memory_limit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    try:
        if not args.skip_retail:
            runs = []
            for r in range(args.repeats):
                store = work / f"retail_{r}.duckdb"
                store.unlink(missing_ok=True)
                runs.append(run_child(store, args.retail, "online-retail", args.memory_limit))
                store.unlink(missing_ok=True)
            rep = runs[0]["report"]
            walls = [x["wall_s"] for x in runs]
            results["online_retail"] = {
                "rows_in": rep["rows_in"],
                "rows_kept": rep["rows_kept"],
                "rejected": rep["rejected"],
                "median_s": statistics.median(walls),
                "runs_s": walls,
                "rows_per_s": rep["rows_in"] / statistics.median(walls),
                "peak_rss_mib": max(x["peak_rss_mib"] for x in runs),
            }
            print(
                f"online-retail: {rep['rows_in']:,} rows, median {statistics.median(walls):.2f} s "
                f"over {args.repeats} ({', '.join(f'{w:.2f}' for w in walls)}), "
                f"peak RSS {results['online_retail']['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        if not args.skip_synthetic:
            log = work / f"events_{args.rows}.parquet"
            gen_s = generate(log, args.rows, args.memory_limit)
            store = work / "synthetic.duckdb"
            store.unlink(missing_ok=True)
            first = run_child(store, log, "events", args.memory_limit)
            again = run_child(store, log, "events", args.memory_limit, force=True)
            size = store.stat().st_size
            store.unlink(missing_ok=True)
            results["synthetic"] = {
                "rows": args.rows,
                "parquet_mib": log.stat().st_size / 2**20,
                "generate_s": gen_s,
                "ingest_s": first["wall_s"],
                "ingest_cpu_s": first["cpu_s"],
                "rows_per_s": args.rows / first["wall_s"],
                "peak_rss_mib": first["peak_rss_mib"],
                "new_events": first["report"]["new_events"],
                "reingest_s": again["wall_s"],
                "reingest_cpu_s": again["cpu_s"],
                "reingest_rows_per_s": args.rows / again["wall_s"],
                "reingest_peak_rss_mib": again["peak_rss_mib"],
                "reingest_new_events": again["report"]["new_events"],
                "store_mib": size / 2**20,
            }
            s = results["synthetic"]
            print(
                f"synthetic events: {args.rows:,} rows ({s['parquet_mib']:.0f} MiB Parquet, "
                f"generated in {gen_s:.1f} s)\n"
                f"  ingest into empty store: {s['ingest_s']:.1f} s = {s['rows_per_s']:,.0f} rows/s, "
                f"CPU {s['ingest_cpu_s']:.1f} s, peak RSS {s['peak_rss_mib']:.0f} MiB, "
                f"{s['new_events']:,} new events\n"
                f"  re-ingest (force, all present): {s['reingest_s']:.1f} s = "
                f"{s['reingest_rows_per_s']:,.0f} rows/s, CPU {s['reingest_cpu_s']:.1f} s, "
                f"peak RSS {s['reingest_peak_rss_mib']:.0f} MiB, "
                f"{s['reingest_new_events']:,} new\n"
                f"  store file: {s['store_mib']:.0f} MiB",
                flush=True,
            )
        results["load_average_at_end"] = os.getloadavg()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
