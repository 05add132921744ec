"""`retailgan serve` as a real uvicorn process on loopback: a crash right after a 2xx on
/v1/events loses nothing; start-up errors are clear."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from typer.testing import CliRunner

from retailgan.cli import app
from retailgan.serving.server import wait_ready
from tests.serving.conftest import ADMIN_KEY, USER_KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_dir, store, keys, port) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "retailgan.cli", "serve", "--model-dir", str(model_dir), "--store", str(store),
           "--keys", str(keys), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, port, timeout_s=60)
    except RuntimeError as exc:
        output = proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else ""
        raise AssertionError(f"{exc}: {output}") from None
    return proc


def test_event_survives_sigkill_right_after_2xx(built, tmp_path):
    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    h = {"X-API-Key": USER_KEY}
    proc = start(built["models"]["ease"], store, built["keys"], port)
    try:
        ev = {"events": [{"customer_id": "CRASH1", "product_id": "P105", "event_type": "cart", "event_id": "k1"}]}
        r = httpx.post(f"{base}/v1/events", json=ev, headers=h, timeout=10)
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook runs, no checkpoint
        assert r.status_code == 201, r.text
    finally:
        proc.kill()
        proc.wait(10)
    proc = start(built["models"]["ease"], store, built["keys"], port)
    try:
        hist = httpx.get(f"{base}/v1/customers/CRASH1/history", headers=h, timeout=10)
        assert hist.status_code == 200, hist.text
        assert [(e["product_id"], e["event_type"]) for e in hist.json()["events"]] == [("P105", "cart")]
        # The restarted service folds the stored event in again.
        out = httpx.post(f"{base}/v1/recommendations", json={"customer_id": "CRASH1", "k": 3}, headers=h,
                         timeout=10).json()
        assert out["strategy"] == "fold-in" and out["history_size"] == 1
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert "retailgan_model_info" in metrics
        status = httpx.get(f"{base}/admin/models", headers={"X-API-Key": ADMIN_KEY}, timeout=10)
        assert status.status_code == 200 and status.json()["model"] == "ease"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (["--workers", "2"], {}, "one process at a time"),
        ([], {"RETAILGAN_API_KEYS": ""}, "no API keys configured"),
        ([], {"RETAILGAN_API_KEYS": "shop:user:abc"}, "64 hex digits"),
        (["--port", "0"], {}, "--port"),
    ],
)
def test_serve_startup_errors_are_clear(built, extra, env, message, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, ["serve", "--model-dir", str(built["models"]["ease"]), "--store",
                                   str(built["store"]), *extra])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())


def test_serve_refuses_missing_model_dir(built, tmp_path):
    res = CliRunner().invoke(app, ["serve", "--model-dir", str(tmp_path / "none"), "--store", str(built["store"]),
                                   "--no-auth"])
    assert res.exit_code == 2 and "no such model directory" in res.output


def test_serve_on_a_busy_port_is_one_clear_line(built):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "--model-dir", str(built["models"]["ease"]), "--store",
                                       str(built["store"]), "--no-auth", "--port", str(port)])
    assert res.exit_code == 2, res.output
    assert f"port {port}" in res.output and "pick another with --port" in res.output
    assert "Traceback" not in res.output


def test_serve_says_where_it_listens(built, monkeypatch):
    import uvicorn

    ran = []

    def run(self, sockets):
        ran.append(sockets[0].getsockname())
        sockets[0].close()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    port = free_port()
    res = CliRunner().invoke(app, ["serve", "--model-dir", str(built["models"]["ease"]), "--store",
                                   str(built["store"]), "--no-auth", "--port", str(port)])
    assert res.exit_code == 0, res.output
    assert ran == [("127.0.0.1", port)]
    assert f"serving ease from {built['models']['ease']}" in res.stderr
    assert f"on http://127.0.0.1:{port}" in res.stderr
