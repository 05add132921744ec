"""Wall time and peak memory of ``retailgan campaign build`` (EASE), two parts.

**retail**: all Online Retail customers, with product images. Prepares (untimed) a store from the
bundled Online Retail file, an EASE model (l2 = 490) and a copy of the store with images: the
catalogue has no categories, so generated images come from ``retailgan images fill`` with the
Fashion-MNIST model (``--image-model``, default ``out/imagegen-fmnist-c``) matched by title words
(``--title-word BAG=Bag`` etc.); plus synthetic placeholder "photos" (flat-colour PNGs, not real
photos) for the ``--photos`` most-bought products without one, via ``retailgan images attach``.
Then runs the build ``--repeats`` times per ``--workers`` value, each as a separate process into a
fresh output directory.

**synthetic**: one generated store whose customers fall into disjoint country groups of the
``--synthetic`` sizes (8 purchases each over 2,000 products, 20 % of them with a generated image
and 20 % with a placeholder photo); one build per group (``--segment country:G<size>``).
Throughput and peak memory per segment size show whether memory grows with the segment; the
figure for 1M customers is an extrapolation (1M / the largest segment's throughput; memory: the
largest measured peak), not a measurement.

Peak memory: ``peak RSS`` is the build's main process (``wait4``); ``tree peak`` is the largest
sum of RSS over the build process and its worker processes, sampled every 0.1 s (so it can miss
short peaks). The load average (``/proc/loadavg``) is recorded before each build: on a shared
machine the timings depend on it.

Usage: python benchmarks/bench_campaign.py [--parts retail,synthetic] [--repeats 3] [--workers 1,2]
       [--k 10] [--chunk-size 1000] [--synthetic 20000,50000,100000] [--work DIR] [--json out.json]
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "online-retail" / "online_retail.csv.gz"
CLI = [sys.executable, "-m", "retailgan.cli"]
TITLE_WORDS = ["BAG=Bag", "COAT=Coat", "DRESS=Dress"]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _tree_rss_kib(pid: int) -> int:
    """Sum of RSS (KiB) of ``pid`` and its descendants."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parent[int(d)] = int(fields[1])
            rss[int(d)] = int(fields[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return total


def _timed(cmd: list[str]) -> dict[str, float | str]:
    """Run ``cmd``; wall seconds, peak RSS of the process and sampled peak RSS of its process tree (MiB)."""
    load = _load()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    err = proc.stderr.read().decode() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{err[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "tree_peak_mib": round(peak[0] / 1024, 1), "load_before": load}


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _placeholder_photos(folder: Path, items: list[str]) -> None:
    """Flat-colour 96x96 PNGs named after the products (stand-ins for retailer photos)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for n, item in enumerate(items):
        im = Image.new("RGB", (96, 96), ((n * 53) % 200 + 40, (n * 97) % 200 + 40, (n * 29) % 200 + 40))
        ImageDraw.Draw(im).text((6, 40), f"photo {item}"[:14], fill=(255, 255, 255))
        im.save(folder / f"{item}.png")


def _build(store: Path, model: Path, out: Path, args: argparse.Namespace, workers: int, segment: str = "all"):
    shutil.rmtree(out, ignore_errors=True)
    r = _timed([*CLI, "campaign", "build", "--store", str(store), "--model-dir", str(model), "--segment", segment,
                "--k", str(args.k), "--chunk-size", str(args.chunk_size), "--workers", str(workers),
                "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    r["customers"] = summary["customers"]
    r["customers_per_s"] = round(summary["customers"] / float(r["wall_s"]), 1)
    return r, summary


def bench_retail(work: Path, args: argparse.Namespace) -> dict:
    store, model, images = work / "retail.duckdb", work / "ease", work / "retail-images.duckdb"
    if not store.exists():
        _run([*CLI, "ingest", str(DATA), "--store", str(store)])
    if not model.exists():
        _run([*CLI, "train", "--store", str(store), "--model", "ease", "--params", '{"l2": 490}', "--out", str(model)])
    notes = []
    if not images.exists():
        tmp = work / "retail-images.tmp.duckdb"
        shutil.copy(store, tmp)
        if (args.image_model / "model.json").exists():
            _run([*CLI, "images", "fill", "--store", str(tmp), "--model-dir", str(args.image_model),
                  *[x for w in TITLE_WORDS for x in ("--title-word", w)]])
        else:
            notes.append(f"no image model at {args.image_model}: no generated images")
        import duckdb

        con = duckdb.connect(str(tmp), read_only=True)
        has_images = "item_images" in {t[0] for t in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        skip = "AND item_id NOT IN (SELECT item_id FROM item_images) " if has_images else ""
        top = [r[0] for r in con.execute(
            "SELECT item_id FROM events WHERE event_type = 'purchase' AND item_id IN (SELECT item_id FROM items) "
            f"{skip}GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT ?", [args.photos]).fetchall()]
        con.close()
        _placeholder_photos(work / "photos", top)
        _run([*CLI, "images", "attach", "--store", str(tmp), "--dir", str(work / "photos")])
        os.replace(tmp, images)
    import duckdb

    con = duckdb.connect(str(images), read_only=True)
    counts = dict(con.execute("SELECT CASE WHEN generated THEN 'generated' ELSE 'photo' END, count(*) "
                              "FROM item_images GROUP BY 1").fetchall())
    n_items = con.execute("SELECT count(*) FROM items").fetchone()[0]
    con.close()
    runs = {}
    summary = {}
    for w in args.workers:
        rs = []
        for _ in range(args.repeats):
            r, summary = _build(images, model, work / f"campaign-w{w}", args, w)
            print(f"retail, workers {w}: {r}", flush=True)
            rs.append(r)
        runs[w] = {"median_wall_s": statistics.median(float(r["wall_s"]) for r in rs),
                   "max_peak_rss_mib": max(float(r["peak_rss_mib"]) for r in rs),
                   "max_tree_peak_mib": max(float(r["tree_peak_mib"]) for r in rs), "runs": rs}
    if len(args.workers) > 1:
        a, b = (work / f"campaign-w{w}" for w in args.workers[:2])
        same = all((a / p.relative_to(b)).read_bytes() == p.read_bytes() for p in b.rglob("*") if p.is_file())
        notes.append(f"outputs of workers {args.workers[0]} and {args.workers[1]} byte-identical: {same}")
    out = work / f"campaign-w{args.workers[-1]}"
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"catalogue": {"items": n_items, **counts}, "workers": runs, "summary": summary,
            "output_mib": round(size / 2**20, 1), "notes": notes}


def _synthetic_store(path: Path, sizes: list[int], work: Path, args: argparse.Namespace) -> None:
    import duckdb

    n = sum(sizes)
    events, items = work / "syn-events.parquet", work / "syn-items.csv"
    con = duckdb.connect()
    # 8 purchases per customer; customer c prefers a block of 100 products (c % 20), so EASE learns something.
    con.execute(f"""COPY (SELECT printf('U%07d', c) AS customer,
                     printf('S%04d', CASE WHEN k < 6 THEN (c % 20) * 100 + hash(c, k) % 100
                                          ELSE hash(c, k, 1) % 2000 END) AS sku,
                     TIMESTAMP '2024-01-01' + to_seconds((c * 7 + k * 86413) % 31536000) AS ts,
                     'purchase' AS action
                   FROM range({n}) t(c), range(8) s(k)) TO '{events}' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT printf('S%04d', i) AS sku,
                     CASE i % 10 WHEN 0 THEN 'Synthetic bag ' WHEN 1 THEN 'Synthetic coat ' ELSE 'Product ' END
                       || i AS name, NULL AS dept, round(1 + (i % 50) * 0.5, 2) AS price
                   FROM range(2000) t(i)) TO '{items}' (HEADER)""")
    con.close()
    tmp = path.with_suffix(".tmp.duckdb")
    tmp.unlink(missing_ok=True)
    _run([*CLI, "ingest", str(events), "--format", "events", "--store", str(tmp), "--user-col", "customer",
          "--item-col", "sku", "--time-col", "ts", "--event-col", "action", "--catalogue", str(items),
          "--catalogue-item-col", "sku", "--title-col", "name", "--catalogue-price-col", "price"])
    con = duckdb.connect(str(tmp))
    start = 0
    for s in sizes:
        con.execute("UPDATE users SET country = ? WHERE user_id >= printf('U%07d', ?) AND user_id < printf('U%07d', ?)",
                    [f"G{s}", start, start + s])
        start += s
    con.close()
    if (args.image_model / "model.json").exists():
        _run([*CLI, "images", "fill", "--store", str(tmp), "--model-dir", str(args.image_model),
              "--title-word", "bag=Bag", "--title-word", "coat=Coat"])
    _placeholder_photos(work / "syn-photos", [f"S{i:04d}" for i in range(2000) if i % 10 in (2, 3)])
    _run([*CLI, "images", "attach", "--store", str(tmp), "--dir", str(work / "syn-photos")])
    os.replace(tmp, path)


def bench_synthetic(work: Path, args: argparse.Namespace) -> dict:
    sizes = args.synthetic
    store, model = work / f"synthetic-{'-'.join(map(str, sizes))}.duckdb", work / "syn-ease"
    if not store.exists():
        shutil.rmtree(model, ignore_errors=True)
        _synthetic_store(store, sizes, work, args)
    if not model.exists():
        _run([*CLI, "train", "--store", str(store), "--model", "ease", "--params", '{"l2": 200}', "--out", str(model)])
    rows = []
    for s in sizes:
        # Each output stays in the work directory (deleting 100k customers' files takes minutes).
        r, summary = _build(store, model, work / f"syn-campaign-{s}", args, args.synthetic_workers, f"country:G{s}")
        r["generated_image_share"] = summary["generated_image_share"]
        print(f"synthetic {s}: {r}", flush=True)
        rows.append(r)
    last = rows[-1]
    return {"workers": args.synthetic_workers, "runs": rows, "extrapolated_1m": {
        "wall_s": round(1_000_000 / float(last["customers_per_s"]), 0),
        "peak_rss_mib": max(float(r["peak_rss_mib"]) for r in rows),
        "tree_peak_mib": max(float(r["tree_peak_mib"]) for r in rows),
        "basis": f"throughput of the {last['customers']}-customer segment; memory: the largest measured peak"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="retail,synthetic")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="retail part: --workers values, comma-separated")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--photos", type=int, default=300, help="retail part: placeholder photos to attach")
    ap.add_argument("--image-model", type=Path, default=ROOT / "out" / "imagegen-fmnist-c")
    ap.add_argument("--synthetic", default="20000,50000,100000", help="synthetic segment sizes")
    ap.add_argument("--synthetic-workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="Keep the stores, models and outputs here.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.workers = [int(x) for x in args.workers.split(",")]
    args.synthetic = [int(x) for x in args.synthetic.split(",")]
    parts = set(args.parts.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "k": args.k, "chunk_size": args.chunk_size, "repeats": args.repeats, "load_at_start": _load(),
    }
    if "retail" in parts:
        result["retail"] = bench_retail(work, args)
    if "synthetic" in parts:
        result["synthetic"] = bench_synthetic(work, args)
    result["load_at_end"] = _load()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
