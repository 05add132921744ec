"""Service limits: request-line and header limits on a real server process, the key checked before
the body, unauthenticated floods rate limited, strict request numbers, ids trimmed alike in bodies
and paths, and an OpenAPI document that says what the service answers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from retailgan.serving import Settings, create_app
from retailgan.serving.security import RateLimiter
from retailgan.serving.server import MAX_HEAD, MAX_REQUEST_LINE
from tests.serving.conftest import USER_KEY
from tests.serving.test_server_process import free_port, start

U = {"X-API-Key": USER_KEY}
REPO = Path(__file__).resolve().parents[2]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def send_head(port: int, head: bytes, then: int = 0) -> tuple[bytes, float]:
    """Send a request head (and ``then`` MiB more of one header value); the status line and seconds taken."""
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(head)
            for _ in range(then):
                s.sendall(b"a" * (1 << 20))
            s.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: the answer, if it came, is in our buffer
        try:
            answer = s.recv(4096)
        except OSError:
            answer = b""
    return answer.split(b"\r\n")[0], time.monotonic() - t


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's memory")
    store = tmp_path_factory.mktemp("limits") / "shop.duckdb"
    shutil.copy(built["store"], store)
    port = free_port()
    proc = start(built["models"]["ease"], store, built["keys"], port)
    yield proc, port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_huge_headers_are_refused_unread_and_the_server_stays_healthy(server):
    proc, port = server
    base = f"http://127.0.0.1:{port}"
    before = rss_mib(proc.pid)
    statuses: list[bytes] = []
    took: list[float] = []

    def attack() -> None:
        status, seconds = send_head(port, b"GET /v1/products HTTP/1.1\r\nHost: x\r\nX-API-Key: ", then=64)
        statuses.append(status)
        took.append(seconds)

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for t in threads:
        t.start()
    health = []
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        health.append(time.monotonic() - t0)
    for t in threads:
        t.join()
    # Refused after the first tens of KiB: 431 when the answer outruns the reset, else the reset.
    assert all(s in (b"", b"HTTP/1.1 431 Request Header Fields Too Large") for s in statuses), statuses
    assert max(took) < 5, took
    assert max(health) < 1, health
    assert rss_mib(proc.pid) - before < 20
    # A head a little over the limit, sent whole: the answer is read back in full.
    status, _ = send_head(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * MAX_HEAD)
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    status, _ = send_head(port, b"GET /v1/products?query=" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: x")
    assert status == b"HTTP/1.1 414 Request-URI Too Long"
    # Within the limits all is as before, on the same server.
    pad = {"X-Pad": "a" * (MAX_HEAD // 2)}
    r = httpx.get(f"{base}/v1/products", params={"query": "a" * 100}, headers={**U, **pad}, timeout=10)
    assert r.status_code == 200, r.text
    r = httpx.get(f"{base}/v1/products/{'x' * 65}", headers=U, timeout=10)
    assert r.status_code == 422


@pytest.fixture
def client(built, tmp_path):
    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    app = create_app(Settings(model_dir=built["models"]["ease"], store=store, keys_file=built["keys"],
                              anon_rate_limit=0.5, anon_rate_burst=3))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_key_is_checked_before_the_body(client):
    bad_json = {"content": b'{"customer_id": ', "headers": {"Content-Type": "application/json"}}
    r = client.post("/v1/recommendations", **bad_json)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "ApiKey"
    r = client.post("/v1/events", content=bad_json["content"], headers={**bad_json["headers"], "X-API-Key": "nope"})
    assert r.status_code == 403
    r = client.post("/v1/recommendations", content=bad_json["content"], headers={**bad_json["headers"], **U})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


def test_requests_without_a_valid_key_are_rate_limited_per_client(client):
    codes = [client.get("/v1/products", headers={"X-API-Key": "guess"}).status_code for _ in range(3)]
    assert codes == [403, 403, 403]
    r = client.get("/v1/products")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "without a valid API key" in r.json()["detail"]
    # Keyed requests keep their own (per-key) bucket, and keyless routes are not limited.
    assert client.get("/v1/products", headers=U).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_rate_limiter_keeps_at_most_max_names_buckets():
    limiter = RateLimiter(rate=0.001, burst=1, max_names=2)
    assert [limiter.check(n) for n in ("a", "b")] == [0, 0]
    assert limiter.check("a") >= 1
    limiter.check("c")  # drops "a", the oldest
    assert limiter.check("b") >= 1 and limiter.check("a") == 0


def test_ids_are_trimmed_alike_in_bodies_and_paths(client):
    plain = client.get("/v1/customers/C0/history", headers=U).json()
    padded = client.get("/v1/customers/%20%20C0%20%20/history", headers=U)
    assert padded.status_code == 200 and padded.json() == plain
    assert client.get("/v1/products/%09P000%0A", headers=U).json()["product_id"] == "P000"
    body = client.post("/v1/recommendations", json={"customer_id": "  C0  ", "k": 3}, headers=U).json()
    assert body["customer_id"] == "C0" and body["known_customer"]
    for blank in ("%20%20", "%09"):
        assert client.get(f"/v1/customers/{blank}/history", headers=U).status_code == 422
    assert client.post("/v1/recommendations", json={"customer_id": "   "}, headers=U).status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": "C0", "k": "5"}, "k"),
        ({"customer_id": "C0", "k": True}, "k"),
        ({"customer_id": "C0", "k": 5.5}, "k"),
        ({"customer_id": "C0", "diversity": "0.5"}, "diversity"),
        ({"customer_id": "C0", "diversity": True}, "diversity"),
        ({"customer_id": "C0", "exclude_seen": "false"}, "exclude_seen"),
        ({"customer_id": "C0", "explain": 1}, "explain"),
        ({"customer_id": "C0", "filters": {"max_price": "3"}}, "filters.max_price"),
    ],
)
def test_request_numbers_and_booleans_are_strict(client, body, field):
    r = client.post("/v1/recommendations", json=body, headers=U)
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == [field], r.text


@pytest.mark.parametrize(
    ("change", "field"),
    [({"quantity": "2"}, "quantity"), ({"price": False}, "price"), ({"ts": 0}, "ts"), ({"ts": "1300000000"}, "ts"),
     ({"ts": "2011-12-09"}, "ts")],
)
def test_event_fields_are_strict(client, change, field):
    ev = {"customer_id": "C0", "product_id": "P000", "event_type": "view", **change}
    r = client.post("/v1/events", json={"events": [ev]}, headers=U)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == f"events.0.{field}", r.text


def test_numbers_sent_as_numbers_still_pass(client):
    r = client.post("/v1/recommendations", json={"customer_id": "C0", "k": 2, "diversity": 1,
                                                 "filters": {"max_price": 100}}, headers=U)
    assert r.status_code == 200 and len(r.json()["items"]) == 2
    ev = {"customer_id": "C0", "product_id": "P000", "event_type": "view", "quantity": 2, "price": 3,
          "ts": "2011-12-09 12:50"}
    assert client.post("/v1/events", json={"events": [ev]}, headers=U).status_code == 201


def test_openapi_documents_every_error_answer(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if op.get("parameters") or op.get("requestBody"):
                schema = op["responses"]["422"]["content"]["application/json"]["schema"]
                refs = [schema.get("$ref")] + [s["$ref"] for s in schema.get("anyOf", [])]
                assert "#/components/schemas/ErrorOut" in refs, (method, path)
            if op.get("security"):
                assert {"401", "403", "429"} <= codes, (method, path)
            if op.get("requestBody"):
                assert {"400", "413"} <= codes, (method, path)
    one_of = spec["components"]["schemas"]["RecommendationRequest"]["oneOf"]
    assert [b["required"] for b in one_of] == [["customer_id"], ["product_ids"]]
    # What the 422 schema promises is what a 422 is.
    r = client.get("/v1/products?limit=0", headers=U).json()
    assert isinstance(r["detail"], str) and r["errors"][0]["field"] == "query.limit"


@pytest.mark.slow
def test_schemathesis_finds_no_failures(tmp_path):
    """benchmarks/bench_schemathesis.sh for 60 s: --checks all against a real server on Online Retail."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "schemathesis").exists() or shutil.which("bash") is None:
        pytest.skip("needs the schemathesis CLI (dev extra) and bash")
    script = REPO / "benchmarks" / "bench_schemathesis.sh"
    res = subprocess.run(["bash", str(script), str(tmp_path), "60"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "BIN": str(bin_dir)})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert " passed" in out and "failure" not in out.split("SUMMARY")[-1], out[-3000:]
