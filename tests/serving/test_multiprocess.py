"""Several `retailgan serve` processes sharing one PostgreSQL database (and Redis for rate limits):
concurrent events, a SIGKILL right after a 201 loses nothing, each folds in the others' events,
a reload on one reaches the others, a rate limit holds across them; and `--workers 2`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from retailgan.serving.server import wait_ready
from tests.serving.conftest import ADMIN_KEY, USER_KEY, fit
from tests.serving.test_server_process import free_port

pytest.importorskip("psycopg", reason="the 'postgres' extra is not installed")

H = {"X-API-Key": USER_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}
FOLD_IN_S = 0.5
"""--events-poll of the servers under test: the longest wait for another replica's events."""


def serve(built, store: Path, model_dir: Path, port: int, pg_url: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "retailgan.cli", "serve", "--model-dir", str(model_dir), "--store", str(store),
           "--keys", str(built["keys"]), "--port", str(port), "--events-db", pg_url,
           "--events-poll", str(FOLD_IN_S), *extra]
    # A session of its own: the test can end the server with every worker process it started.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(proc, port, timeout_s=90)
    except RuntimeError as exc:
        stop(proc)
        output = proc.stdout.read().decode() if proc.stdout else ""
        raise AssertionError(f"{exc}: {output[-3000:]}") from None
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):  # workers left by a killed supervisor
        os.killpg(proc.pid, signal.SIGKILL)


def eventually(fn, timeout_s: float):
    """Call ``fn`` until it returns a true value or the time is up; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def post_events(base: str, customer: str, ids: list[str], product: str = "P105") -> list[str]:
    """Post one event per id; the ids answered 201."""
    acked = []
    with httpx.Client(base_url=base, headers=H, timeout=10) as c:
        for i in ids:
            r = c.post("/v1/events", json={"events": [
                {"customer_id": customer, "product_id": product, "event_type": "view", "event_id": i}]})
            if r.status_code == 201:
                acked.append(i)
    return acked


def stored_ids(pg_url: str) -> set[str]:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        return {r[0] for r in conn.execute("SELECT event_id FROM retailgan_events").fetchall()}


@pytest.mark.timeout(300)
def test_two_servers_share_events_survive_sigkill_and_reloads(built, tmp_path, pg_url):
    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    model_dir = tmp_path / "model"
    shutil.copytree(built["models"]["ease"], model_dir)
    pa, pb = free_port(), free_port()
    a = serve(built, store, model_dir, pa, pg_url)
    b = None
    base_a, base_b = f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"
    try:
        b = serve(built, store, model_dir, pb, pg_url)
        # Both take events at once (two clients each), under the same store and database.
        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(post_events, base, f"MP{n}", [f"{n}-{i}" for i in range(15)])
                    for n, base in enumerate([base_a, base_b, base_a, base_b])]
            acked = [i for j in jobs for i in j.result()]
        assert len(acked) == 60

        # A is killed right after a 201: every event it acknowledged is in the database.
        last = httpx.post(f"{base_a}/v1/events", headers=H, timeout=10, json={"events": [
            {"customer_id": "KILLED", "product_id": "P103", "event_type": "cart", "event_id": "last"}]})
        os.killpg(a.pid, signal.SIGKILL)
        assert last.status_code == 201, last.text
        a.wait(10)
        assert set(acked) | {"last"} <= stored_ids(pg_url)

        # B folds in what A wrote: the customer A saw is scored from that event on B.
        def folded():
            r = httpx.post(f"{base_b}/v1/recommendations", json={"customer_id": "KILLED", "k": 3}, headers=H,
                           timeout=10).json()
            return r["strategy"] == "fold-in" and r["history_size"] == 1 and r
        assert eventually(folded, timeout_s=FOLD_IN_S + 5)
        hist = httpx.get(f"{base_b}/v1/customers/KILLED/history", headers=H, timeout=10).json()
        assert [(e["product_id"], e["event_type"]) for e in hist["events"]] == [("P103", "cart")]

        # A restarted reads every event back; B's events reach it as they come.
        a = serve(built, store, model_dir, pa, pg_url)
        post_events(base_b, "AFTER", ["after-1"], product="P101")
        for customer in ("KILLED", "AFTER"):
            assert eventually(lambda c=customer: httpx.post(
                f"{base_a}/v1/recommendations", json={"customer_id": c, "k": 3}, headers=H,
                timeout=10).json()["strategy"] == "fold-in", timeout_s=FOLD_IN_S + 5)

        # A reload on B reaches A: a new model in the directory, reloaded on B only.
        old = httpx.get(f"{base_a}/admin/models", headers=ADMIN, timeout=10).json()["version"]
        new_dir = fit(store_copy(store, tmp_path), "ease", tmp_path / "new-model", l2=500.0)
        model_dir.rename(tmp_path / "old-model")
        new_dir.rename(model_dir)
        r = httpx.post(f"{base_b}/admin/models/reload", json={"wait": True}, headers=ADMIN, timeout=60)
        assert r.status_code == 200, r.text
        new = r.json()["version"]
        assert new != old
        assert eventually(lambda: httpx.get(f"{base_a}/admin/models", headers=ADMIN, timeout=10).json()["version"]
                          == new, timeout_s=FOLD_IN_S + 10)
        assert httpx.post(f"{base_a}/v1/recommendations", json={"customer_id": "AFTER", "k": 3}, headers=H,
                          timeout=10).json()["model_version"] == f"ease-{new}"
    finally:
        stop(a)
        if b is not None:
            stop(b)


def store_copy(store: Path, tmp_path: Path) -> Path:
    """A copy of the served store to train on (the servers hold it open read-only)."""
    copy = tmp_path / "train.duckdb"
    shutil.copy(store, copy)
    return copy


@pytest.mark.timeout(300)
def test_rate_limit_holds_across_servers(built, tmp_path, pg_url, redis_url):
    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    limits = ["--rate-limit-redis", redis_url, "--rate-limit", "0.01", "--rate-burst", "10"]
    pa, pb = free_port(), free_port()
    a = serve(built, store, built["models"]["ease"], pa, pg_url, *limits)
    b = None
    try:
        b = serve(built, store, built["models"]["ease"], pb, pg_url, *limits)
        codes = []
        for i in range(16):  # alternate: 8 to each, 16 in all against one bucket of 10
            port = pa if i % 2 == 0 else pb
            r = httpx.post(f"http://127.0.0.1:{port}/v1/recommendations", json={"customer_id": "C000", "k": 3},
                           headers=H, timeout=10)
            codes.append(r.status_code)
        assert codes.count(200) == 10 and codes.count(429) == 6, codes
        assert codes[:10] == [200] * 10  # the bucket empties whichever server is asked
    finally:
        stop(a)
        if b is not None:
            stop(b)
        import redis

        client = redis.Redis.from_url(redis_url)
        database = pg_url.rsplit("/", 1)[1]
        for name in client.scan_iter(f"retailgan:ratelimit:{database}:*"):
            client.delete(name)


@pytest.mark.timeout(300)
def test_workers_share_events_and_reloads(built, tmp_path, pg_url):
    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    port = free_port()
    proc = serve(built, store, built["models"]["ease"], port, pg_url, "--workers", "2")
    base = f"http://127.0.0.1:{port}"
    try:
        # Wait until both workers answer (a fresh connection each time; the kernel spreads them).
        assert post_events(base, "W1", ["w-1"], product="P104") == ["w-1"]

        def every_worker_folded() -> bool:
            outs = [httpx.post(f"{base}/v1/recommendations", json={"customer_id": "W1", "k": 3}, headers=H,
                               timeout=10).json() for _ in range(20)]
            return all(o["strategy"] == "fold-in" for o in outs)
        assert eventually(every_worker_folded, timeout_s=FOLD_IN_S + 10)
        pids = {int(p) for p in subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True,
                                               text=True).stdout.split()}
        assert len(pids - {proc.pid}) >= 2  # the supervisor and its two workers
    finally:
        stop(proc)


def test_workers_without_events_db_is_one_clear_line(built, tmp_path):
    cmd = [sys.executable, "-m", "retailgan.cli", "serve", "--model-dir", str(built["models"]["ease"]),
           "--store", str(built["store"]), "--keys", str(built["keys"]), "--workers", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers 2 needs --events-db" in lines[0], done.stderr
