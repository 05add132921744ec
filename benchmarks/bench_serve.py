"""Load benchmark of `retailgan serve`: a fixed offered rate from a second process on loopback.

    .venv/bin/python benchmarks/bench_serve.py --rate 200 --duration 60 --out docs/results/serve-bench.json

Prepares (once, under --work) a store from the bundled Online Retail log and an EASE model
(`retailgan ingest`, `retailgan train --model ease --params '{"l2": L2}'`), starts the server in
its own process, then runs the load client in another process, twice: a steady run, and a run
with a model reload (`POST /admin/models/reload`) at half time.

The client is open-loop: request i is due at t0 + i / rate whatever happened before, so a slow
server cannot slow the offered load down. Latency is measured from the time a request was due
(not from when it was sent), so queueing behind a stall counts. Request mix: 85 % recommendations
for a customer drawn uniformly from the store's customers (k = 10), 10 % for an ad-hoc session of
3 products drawn uniformly from the store's products, 5 % an event for such a customer (written to
the store before the 2xx).

Throughput at a latency target, with 1 and 2 worker processes (events in PostgreSQL, which
``--workers 2`` needs; a database is made for the run and dropped after it):

    .venv/bin/python benchmarks/bench_serve.py capacity --workers 1,2 --rates 200,300,400,500,600 \
        --duration 15 --pg-admin postgresql://root@127.0.0.1:5432/postgres --out docs/results/serve-workers.json

runs every worker count at each rate in turn (interleaved, so they share the machine's load alike)
and reports the highest offered rate each sustained with p99 <= --p99-ms and no errors.

An existing model directory and store instead of the bundled log's EASE model (e.g. the scale
benchmark's size M, ``benchmarks/bench_scale.py``); the store is copied, the runs' events go to
the copy; start-up time (process start to ``/readyz``) and the server's memory are reported:

    .venv/bin/python benchmarks/bench_serve.py --model-dir out/scale/ials-model \
        --store out/scale/store-M.duckdb --work out/bench-serve-M --out docs/results/serve-M.json

The cost of one recommendation request on such a model, without HTTP: the handler called in
process (CPU and wall time per request) for known customers, sessions and unknown customers, and
a known customer's list through the model's top-k path against a dense row of scores:

    .venv/bin/python benchmarks/bench_serve.py handler --model-dir out/scale/ials-model \
        --store out/scale/store-M.duckdb --work out/bench-serve-M --out docs/results/serve-M-handler.json

A model reload in process, as the service runs it (``ServiceState.reload``: the load in a worker
thread) while the event loop times a 1 ms sleep over and over: the reload's wall and CPU time and
how late the loop's timers ran meanwhile (the loop is late when the reload holds the interpreter
lock), median of --repeats reloads:

    .venv/bin/python benchmarks/bench_serve.py reload --model-dir out/scale/ials-model \
        --store out/scale/store-M.duckdb --work out/bench-serve-M --out docs/results/serve-M-reload.json

A customer's history (``GET /v1/customers/{id}/history``, the store query) on several stores of
the same events, e.g. one ingested before events were stored in customer order and one after:
CPU and wall time per call on the same customers, and whether every store gives the same lists:

    .venv/bin/python benchmarks/bench_serve.py history \
        --stores out/scale/store-M.duckdb,out/scale/store-M-sorted.duckdb --out docs/results/serve-M-history.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "data" / "online-retail" / "online_retail.csv.gz"
KEY = "bench-key-0123456789abcdef"


def _retailgan(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "retailgan.cli", *args], check=True)


def prepare(work: Path, l2: float) -> tuple[Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    store, model = work / "retail.duckdb", work / "ease"
    if not store.exists():
        _retailgan("ingest", str(BUNDLED), "--store", str(store))
    if not (model / "model.json").exists():
        _retailgan("train", "--store", str(store), "--model", "ease", "--params", json.dumps({"l2": l2}),
                   "--out", str(model))
    return store, model


def sample_ids(store: Path, out: Path, seed: int) -> Path:
    """Uniform samples of the store's customers and products (read before the server locks the store)."""
    from retailgan.data.store import Store

    with Store.open(store, create=False, read_only=True) as st:
        customers = [str(r[0]) for r in st.con.execute("SELECT DISTINCT user_id FROM events ORDER BY 1").fetchall()]
        products = [str(r[0]) for r in st.con.execute("SELECT DISTINCT item_id FROM events ORDER BY 1").fetchall()]
    rng = random.Random(seed)
    out.write_text(json.dumps({"customers": rng.sample(customers, min(2000, len(customers))),
                               "products": rng.sample(products, min(2000, len(products)))}))
    return out


def proc_memory_mib(pid: int) -> dict[str, float]:
    """RSS, peak RSS (VmHWM), PSS and USS of a process in MiB (Linux /proc): a mapped model's pages
    count in full in RSS, shared in PSS, and not at all in USS."""
    kb: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            kb[line.split(":")[0]] = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        kb[key] = int(value.split()[0])
    return {"rss_mib": round(kb["VmRSS"] / 1024, 1), "peak_rss_mib": round(kb["VmHWM"] / 1024, 1),
            "pss_mib": round(kb["Pss"] / 1024, 1),
            "uss_mib": round((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, 1)}


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(port: int) -> None:
    """Wait until the server answers /healthz quickly (the previous run's backlog has drained)."""
    import httpx

    # One client for every probe: a new one per probe (its TLS context, its pool) took over 50 ms
    # by itself on the loaded machine, and the wait never ended.
    with httpx.Client(timeout=5) as client:
        for _ in range(600):
            t = time.perf_counter()
            try:
                client.get(f"http://127.0.0.1:{port}/healthz")
                if time.perf_counter() - t < 0.05:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_cpu_s(pgid: int) -> dict[int, float]:
    """CPU seconds of each live process in a process group (a server and its workers), by pid."""
    total: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total[int(d.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def start_server(store: Path, model: Path, port: int, *extra: str, ready_s: float = 120) -> subprocess.Popen:

    from retailgan.serving.security import hash_key
    from retailgan.serving.server import wait_ready

    env = {**os.environ, "RETAILGAN_API_KEYS": f"bench:admin:{hash_key(KEY)}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retailgan.cli", "serve", "--model-dir", str(model), "--store", str(store),
         "--port", str(port), "--rate-limit", "100000", "--rate-burst", "100000", *extra],
        env=env, start_new_session=True,  # its own process group: workers are measured and stopped with it
    )
    try:
        wait_ready(proc, port, timeout_s=ready_s, poll_s=0.2)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (workers included), SIGKILL after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def bench_database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one server's events (``--events-db``), dropped afterwards."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- client (runs in its own process) -----------------------------------------------------------


class _Conn:
    """One keep-alive HTTP/1.1 connection: pre-encoded requests out, status and body back.

    The load client shares the machine's cores with the server, so every microsecond it spends per
    request is taken from the server: a bare asyncio stream costs a fraction of a general-purpose
    client's CPU per request (aiohttp's was about half the server's own).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        return status, (await self.reader.readexactly(length) if length else b"")


async def _client(url: str, rate: float, duration: float, reload_at: float | None, seed: int, ids: Path) -> dict:
    import numpy as np

    host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    rng = random.Random(seed)
    idle: list[_Conn] = []
    limit = 256  # connections at most, as a browser-like pool would open

    async def fresh() -> _Conn:
        return _Conn(*await asyncio.open_connection(host, int(port)))

    def head(method: str, path: str, body: bytes) -> bytes:
        return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()

    async def call(method: str, path: str, payload: object | None = None) -> tuple[int, bytes]:
        body = json.dumps(payload).encode() if payload is not None else b""
        message = head(method, path, body)
        c = idle.pop() if idle else await fresh()
        try:
            status, data = await asyncio.wait_for(c.request(message, body), timeout=10)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed an idle keep-alive connection (uvicorn's keep-alive timeout):
            # the request never reached it, so it is sent once more on a new connection.
            c.writer.close()
            c = await fresh()
            status, data = await asyncio.wait_for(c.request(message, body), timeout=10)
        if len(idle) < limit:
            idle.append(c)
        else:
            c.writer.close()
        return status, data

    sample = json.loads(ids.read_text())
    customers, products = sample["customers"], sample["products"]
    n = int(rate * duration)
    latencies = np.full(n, np.nan)
    service = np.full(n, np.nan)
    kinds = np.full(n, "", dtype=object)  # customer, session or event: which part of the mix makes the tail
    statuses: dict[str, int] = {}
    errors: list[str] = []
    reload_info: dict = {}

    async def one(i: int, due: float) -> None:
        r = rng.random()
        if r < 0.85:
            kinds[i], path, body = "customer", "/v1/recommendations", {"customer_id": rng.choice(customers), "k": 10}
        elif r < 0.95:
            kinds[i], path, body = "session", "/v1/recommendations", {"product_ids": rng.sample(products, 3), "k": 10}
        else:
            kinds[i], path, body = "event", "/v1/events", {"events": [{
                "customer_id": rng.choice(customers), "product_id": rng.choice(products), "event_type": "view"}]}
        sent = time.perf_counter()
        try:
            code = str((await call("POST", path, body))[0])
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            code = type(exc).__name__
        end = time.perf_counter()
        statuses[code] = statuses.get(code, 0) + 1
        if not code.startswith("2"):
            errors.append(code)
        latencies[i] = end - due
        service[i] = end - sent

    async def reloader() -> None:
        assert reload_at is not None
        await asyncio.sleep(reload_at)
        t = time.perf_counter()
        try:
            reload_info["accepted"] = (await call("POST", "/admin/models/reload", {}))[0]
            while True:
                s = json.loads((await call("GET", "/admin/models"))[1])
                if s["reload_state"] != "loading":
                    break
                await asyncio.sleep(0.05)
            reload_info.update(state=s["reload_state"], version=s["version"])
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            reload_info["error"] = f"{type(exc).__name__}: {exc}"
        reload_info.update(seconds=round(time.perf_counter() - t, 3), at_s=reload_at)

    tasks = []
    extra = [asyncio.create_task(reloader())] if reload_at is not None else []
    t0 = time.perf_counter() + 0.5
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks, *extra)
    wall = time.perf_counter() - t0
    for c in idle:
        c.writer.close()
    ms = latencies * 1000
    return {
        "offered_rate": rate,
        "duration_s": duration,
        "requests": n,
        "achieved_rate": round(n / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(np.max(ms)), 2),
        "service_p50_ms": round(float(np.percentile(service * 1000, 50)), 2),
        "service_p99_ms": round(float(np.percentile(service * 1000, 99)), 2),
        "errors": len(errors),
        "statuses": statuses,
        "reload": reload_info or None,
        "by_kind": {k: {"requests": int((kinds == k).sum()),
                        "p50_ms": round(float(np.percentile(ms[kinds == k], 50)), 2),
                        "p99_ms": round(float(np.percentile(ms[kinds == k], 99)), 2),
                        "over_20ms": int((ms[kinds == k] > 20).sum())}
                    for k in ("customer", "session", "event") if (kinds == k).any()},
    }



def _served_copy(args: argparse.Namespace, mode: str) -> Path:
    """A copy of ``--store`` under ``--work`` for ``mode`` to write to (the original stays as it was)."""
    if args.model_dir is None or args.store is None:
        raise SystemExit(f"{mode} needs --model-dir and --store")
    args.work.mkdir(parents=True, exist_ok=True)
    served = args.work / f"{mode}.duckdb"
    shutil.copy(args.store, served)
    Path(f"{served}.wal").unlink(missing_ok=True)
    return served

def _run_client(coro: object) -> dict:
    """Run the client on uvloop where installed (uvicorn's `standard` extra brings it): less CPU per request."""
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="run",
                    choices=["run", "client", "capacity", "handler", "reload", "history"])
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench-serve")
    ap.add_argument("--l2", type=float, default=490.13, help="EASE l2 (tuned value, docs/benchmarks.md section 2)")
    ap.add_argument("--model-dir", type=Path, default=None, help="(run) serve this model instead of the EASE one")
    ap.add_argument("--store", type=Path, default=None, help="(run) the store of --model-dir (copied for the run)")
    ap.add_argument("--runs", default="steady,reload", help="(run) steady and/or reload (a reload at half time)")
    ap.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    ap.add_argument("--url", default=None)
    ap.add_argument("--reload-at", type=float, default=None)
    ap.add_argument("--ids", type=Path, default=None, help="(client) customer and product ids to draw from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="(reload) reloads timed (medians reported)")
    ap.add_argument("--ready-timeout", type=float, default=600,
                    help="(run) seconds the server may take to start (featgan at M builds its faiss index)")
    ap.add_argument("--stores", default="", help="(history) stores of the same events, comma-separated")
    ap.add_argument("--workers", default="1,2", help="(capacity) worker process counts, comma-separated")
    ap.add_argument("--rates", default="200,300,400,500,600", help="(capacity) offered rates, comma-separated")
    ap.add_argument("--p99-ms", type=float, default=20.0, help="(capacity) the latency target")
    ap.add_argument("--pg-admin", default="postgresql://root@127.0.0.1:5432/postgres",
                    help="(capacity, run --pg-events) PostgreSQL URL to create the run's databases from")
    ap.add_argument("--pg-events", action="store_true",
                    help="(run) events to a fresh PostgreSQL database (serve --events-db), not the store")
    args = ap.parse_args()
    if args.mode == "client":
        print(json.dumps(_run_client(_client(args.url, args.rate, args.duration, args.reload_at, args.seed, args.ids))))
        return
    if args.mode == "capacity":
        capacity(args)
        return
    if args.mode == "handler":
        handler_cost(args)
        return
    if args.mode == "reload":
        reload_cost(args)
        return
    if args.mode == "history":
        history_cost(args)
        return
    if (args.model_dir is None) != (args.store is None):
        raise SystemExit("--model-dir and --store go together")
    if args.model_dir is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        store, model = args.store, args.model_dir
    else:
        store, model = prepare(args.work, args.l2)
    ids = sample_ids(store, args.work / "ids.json", args.seed)
    served = args.work / "served.duckdb"  # a fresh copy each time: the runs' events go there
    shutil.copy(store, served)
    Path(f"{served}.wal").unlink(missing_ok=True)
    # Write the copy out now: otherwise the kernel flushes it during the run, and every commit's
    # fsync waits behind up to a gigabyte of dirty pages (event p99 585 ms at M in such a run).
    os.sync()
    port = free_port()
    stack = ExitStack()
    extra: tuple[str, ...] = ()
    if args.pg_events:  # events to PostgreSQL; the store is then opened read-only
        extra = ("--events-db", stack.enter_context(bench_database(args.pg_admin, f"retailgan_run_{os.getpid()}")))
    load_at_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    server = start_server(served, model, port, *extra, ready_s=args.ready_timeout)
    startup = {"seconds": round(time.perf_counter() - t_start, 2), "loadavg_1min_before": load_at_start,
               "memory_after_start": proc_memory_mib(server.pid)}
    print("start-up", json.dumps(startup), flush=True)
    plan = {"steady": ("steady", None), "reload": ("reload mid-run", args.duration / 2)}
    runs = {}
    try:
        for name, reload_at in (plan[r] for r in args.runs.split(",")):
            cmd = [sys.executable, __file__, "client", "--url", f"http://127.0.0.1:{port}", "--rate", str(args.rate),
                   "--duration", str(args.duration), "--seed", str(args.seed), "--ids", str(ids)]
            if reload_at is not None:
                cmd += ["--reload-at", str(reload_at)]
            load_before = os.getloadavg()[0]
            cpu0, child0 = proc_cpu_s(server.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
            wait_idle(port)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"client failed ({done.returncode}):\n{done.stderr[-3000:]}")
            out = done.stdout
            cpu1, child1 = proc_cpu_s(server.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
            runs[name] = json.loads(out.strip().splitlines()[-1])
            n = runs[name]["requests"]
            runs[name]["server_cpu_ms_per_request"] = round((cpu1 - cpu0) / n * 1000, 3)
            client_cpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
            runs[name]["client_cpu_ms_per_request"] = round(client_cpu / n * 1000, 3)
            runs[name]["loadavg_1min_before"] = load_before
            runs[name]["loadavg_1min_after"] = os.getloadavg()[0]
            runs[name]["memory_after"] = proc_memory_mib(server.pid)
            print(name, json.dumps(runs[name]), flush=True)
    finally:
        stop_server(server)
        stack.close()
    doc = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_after": os.getloadavg()},
        "model": {"name": "ease", "l2": args.l2, "dir": str(model)} if args.model_dir is None else
                 _model_info(model) | {"store": str(store)},
        "command": " ".join(["python", *sys.argv]),
        "events": "postgresql" if args.pg_events else "store",
        "startup": startup,
        "runs": runs,
    }
    print("| run | offered req/s | achieved | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU ms/req | load |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in runs.items():
        print(f"| {name} | {r['offered_rate']:.0f} | {r['achieved_rate']} | {r['p50_ms']} | {r['p90_ms']} | "
              f"{r['p99_ms']} | {r['max_ms']} | {r['errors']} | {r['server_cpu_ms_per_request']} | "
              f"{r['loadavg_1min_before']:.1f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


def _model_info(model: Path) -> dict[str, Any]:
    """Name, directory and retrieval index (featgan's faiss index, else "exact") of a model directory."""
    meta = json.loads((model / "model.json").read_text())
    return {"name": meta["model"], "dir": str(model), "index": meta["config"].get("index", "exact"),
            "customers": len(meta["user_ids"]), "products": len(meta["item_ids"])}


def _per_call(fn: Any, inputs: list) -> dict:
    """Wall time percentiles and mean CPU time of ``fn`` over ``inputs``, in ms."""
    import numpy as np

    wall, cpu = [], []
    for x in inputs:
        t, c = time.perf_counter(), time.process_time()
        fn(x)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    w = np.asarray(wall) * 1000
    return {"calls": len(inputs), "cpu_ms_mean": round(float(np.mean(cpu)) * 1000, 3),
            "wall_ms_p50": round(float(np.percentile(w, 50)), 3), "wall_ms_p99": round(float(np.percentile(w, 99)), 3),
            "loadavg_1min": os.getloadavg()[0]}


def handler_cost(args: argparse.Namespace, calls: int = 500) -> None:
    """CPU and wall time of the recommendation handler, called in process on --model-dir / --store."""
    import numpy as np
    from fastapi.testclient import TestClient

    from retailgan.serving import schemas as S
    from retailgan.serving.app import _recommend, create_app
    from retailgan.serving.settings import Settings

    served = _served_copy(args, "handler")
    app = create_app(Settings(model_dir=args.model_dir, store=served, auth=False))
    t = time.perf_counter()
    with TestClient(app):
        out: dict[str, Any] = {"startup_s": round(time.perf_counter() - t, 2)}
        state = app.state.service
        b = state.bundle
        m = b.model
        rng = random.Random(args.seed)
        rows = [rng.randrange(m.n_users) for _ in range(calls)]
        users = [str(m.users.ids[u]) for u in rows]
        products = [str(m.items.ids[rng.randrange(m.n_items)]) for _ in range(3 * calls)]
        cases = {
            "known customer": [S.RecommendationRequest(customer_id=u, k=10) for u in users],
            "session of 3 products": [S.RecommendationRequest(product_ids=products[3 * i : 3 * i + 3], k=10)
                                      for i in range(calls)],
            "unknown customer": [S.RecommendationRequest(customer_id=f"new-{i}", k=10) for i in range(calls)],
        }
        for name, reqs in cases.items():
            _recommend(state, b, reqs[0])  # warm
            out[f"handler, {name}"] = _per_call(lambda r: _recommend(state, b, r), reqs)
        if b.fast_top_k(0):
            out["top-k path, known customer"] = _per_call(lambda u: b.rank_known(u, 10, b.seen_items(u), None), rows)

        def dense(u: int) -> Any:  # what the handler did before: every product scored, seen masked
            scores = np.array(b.score_user(u), dtype=np.float64)
            scores[b.seen_items(u)] = -np.inf
            return b.top_k(scores, 10)

        out["dense scores + top-k, known customer"] = _per_call(dense, rows)
        # The store-side endpoints: an event committed (POST /v1/events), a customer's history.
        from datetime import datetime, timezone

        from retailgan.serving.storage import NewEvent

        def event(i: int) -> None:
            state.write_events([NewEvent(event_id=f"bench-{i}", customer_id=users[i], product_id=products[i],
                                         event_type="view", ts=datetime.now(timezone.utc), quantity=None, price=None)])

        out["event write (store)"] = _per_call(event, list(range(min(calls, 200))))
        out["customer history (store, 20 events)"] = _per_call(lambda u: state.history(u, 20), users[:5])
        out["model"] = {"name": b.name, "customers": m.n_users, "products": m.n_items, "dir": str(args.model_dir)}
    out["command"] = " ".join(["python", *sys.argv])
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


def history_cost(args: argparse.Namespace, customers: int = 100, limit: int = 20) -> None:
    """Time a customer's history on each of --stores (same customers) and compare the lists."""
    from retailgan.serving.storage import ServiceStore

    stores = [Path(s) for s in args.stores.split(",") if s]
    out: dict[str, Any] = {"customers": customers, "limit": limit, "stores": {}}
    lists: dict[str, list] = {}
    ids: list[str] = []
    for store in stores:
        svc = ServiceStore(store, read_only=True)
        try:
            if not ids:  # a seeded sample of the first store's customers, the same for every store
                rows = svc.store.con.execute("SELECT user_id FROM users ORDER BY user_id").fetchall()
                every = [str(r[0]) for r in rows]
                ids = random.Random(args.seed).sample(every, min(customers, len(every)))
            svc.history(ids[0], limit)  # warm
            lists[str(store)] = [svc.history(c, limit) for c in ids]
            out["stores"][str(store)] = _per_call(lambda c, svc=svc: svc.history(c, limit), ids)
        finally:
            svc.close()
        print(store, json.dumps(out["stores"][str(store)]), flush=True)
    out["identical_lists"] = all(v == next(iter(lists.values())) for v in lists.values())
    out["command"] = " ".join(["python", *sys.argv])
    print(json.dumps(out, indent=1, default=str))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


def reload_cost(args: argparse.Namespace) -> None:
    """Wall and CPU time of a model reload in process, and how late the event loop ran meanwhile."""
    import statistics

    import numpy as np

    from retailgan.serving.settings import Settings
    from retailgan.serving.state import ServiceState

    served = _served_copy(args, "reload")
    state = ServiceState(Settings(model_dir=args.model_dir, store=served, auth=False))
    t, c = time.perf_counter(), time.process_time()
    state.start()  # the start-up load (store, catalogue, model), on this thread
    out: dict[str, Any] = {"start_s": round(time.perf_counter() - t, 3),
                           "start_cpu_s": round(time.process_time() - c, 3),
                           "rss_after_start_mib": proc_memory_mib(os.getpid())["rss_mib"]}

    async def one() -> dict[str, float]:
        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:  # what every request's await sees: how late a 1 ms timer fires
            while not done.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - t0 - 0.001)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(2.0)  # the loop's lateness without a reload: the machine's own share
        idle = np.asarray(lags) * 1000
        lags.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        await state.reload(publish=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        done.set()
        await tick
        if state.reload_state != "succeeded":
            raise SystemExit(f"reload failed: {state.last_error}")
        lag = np.asarray(lags) * 1000
        return {"reload_s": wall, "reload_cpu_s": cpu, "loop_lag_max_ms": float(lag.max()),
                "loop_lag_p99_ms": float(np.percentile(lag, 99)), "loop_lag_p50_ms": float(np.percentile(lag, 50)),
                # time the loop spent more than 20 ms late (a request's whole p99 budget)
                "loop_late_over_20ms_s": float(np.clip(lag - 20, 0, None).sum() / 1000),
                "idle_loop_lag_max_ms": float(idle.max()), "idle_loop_lag_p99_ms": float(np.percentile(idle, 99)),
                "loadavg_1min": os.getloadavg()[0]}

    runs = []
    try:
        for _ in range(args.repeats):
            runs.append(asyncio.run(one()))
            print(json.dumps(runs[-1]), flush=True)
    finally:
        state.stop()
    out |= {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    out |= {"runs": runs, "rss_after_mib": proc_memory_mib(os.getpid())["rss_mib"],
            "model": {"name": state.bundle.name if state.bundle else None, "dir": str(args.model_dir)},
            "command": " ".join(["python", *sys.argv])}
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


def run_client(port: int, ids: Path, args: argparse.Namespace, rate: float, pgid: int,
               reload_at: float | None = None) -> dict:
    """One open-loop client run against the server on ``port``, with the server's CPU per request."""
    cmd = [sys.executable, __file__, "client", "--url", f"http://127.0.0.1:{port}", "--rate", str(rate),
           "--duration", str(args.duration), "--seed", str(args.seed), "--ids", str(ids)]
    if reload_at is not None:
        cmd += ["--reload-at", str(reload_at)]
    wait_idle(port)
    load_before = os.getloadavg()[0]
    cpu0 = group_cpu_s(pgid)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"client failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    cpu1 = group_cpu_s(pgid)
    per_process = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
    out["server_cpu_ms_per_request"] = round(sum(per_process.values()) / out["requests"] * 1000, 3)
    # How the work spread over the processes (supervisor, workers): CPU seconds each, largest first.
    out["server_cpu_s_per_process"] = sorted((round(v, 2) for v in per_process.values()), reverse=True)
    out["loadavg_1min_before"] = load_before
    return out


def capacity(args: argparse.Namespace) -> None:
    """The highest offered rate each worker count serves with p99 <= --p99-ms and no errors."""
    store, model = prepare(args.work, args.l2)
    ids = sample_ids(store, args.work / "ids.json", args.seed)
    workers = [int(w) for w in args.workers.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    servers: dict[int, tuple[subprocess.Popen, int]] = {}
    runs: list[dict] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers and drop the databases
    with ExitStack() as databases:
        try:
            for w in workers:
                url = databases.enter_context(bench_database(args.pg_admin, f"retailgan_bench_{os.getpid()}_{w}"))
                port = free_port()
                servers[w] = (start_server(store, model, port, "--workers", str(w), "--events-db", url), port)
            for rate in rates:
                for w in workers:  # interleaved: every worker count meets the machine's load of the moment
                    proc, port = servers[w]
                    r = run_client(port, ids, args, rate, proc.pid)
                    r["workers"] = w
                    r["meets_target"] = bool(r["p99_ms"] <= args.p99_ms and r["errors"] == 0
                                             and r["achieved_rate"] >= 0.98 * rate)
                    runs.append(r)
                    print(f"workers={w} rate={rate:.0f}", json.dumps(r), flush=True)
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
    best = {w: max([r["offered_rate"] for r in runs if r["workers"] == w and r["meets_target"]], default=0.0)
            for w in workers}
    summary = {"p99_target_ms": args.p99_ms, "max_rate_meeting_target": {str(w): b for w, b in best.items()}}
    if best.get(1):
        summary["ratio_to_1_worker"] = {str(w): round(b / best[1], 2) for w, b in best.items()}
    print("| workers | offered req/s | achieved | p50 ms | p99 ms | errors | server CPU ms/req | load | p99 target |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:---|")
    for r in runs:
        print(f"| {r['workers']} | {r['offered_rate']:.0f} | {r['achieved_rate']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['errors']} | {r['server_cpu_ms_per_request']} | {r['loadavg_1min_before']:.1f} | "
              f"{'met' if r['meets_target'] else 'missed'} |")
    print(json.dumps(summary))
    if args.out:
        doc = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version(), "loadavg_after": os.getloadavg()},
               "model": {"name": "ease", "l2": args.l2}, "duration_s": args.duration, "summary": summary,
               "runs": runs}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
