"""Run the service under uvicorn (``retailgan serve``)."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Any

from retailgan.errors import ConfigError, extra_needed
from retailgan.serving.settings import Settings

log = logging.getLogger("retailgan.serving")


def check_serving_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise extra_needed("serving", "serve", str(exc)) from None


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Validate the settings up front (clear errors before binding), then run uvicorn."""
    check_serving_extra()
    import uvicorn

    from retailgan.data.store import Store
    from retailgan.persistence import read_meta
    from retailgan.serving.app import create_app
    from retailgan.serving.security import load_keys

    if workers != 1:
        # DuckDB admits one process with a store open for writing, and events are written to it.
        raise ConfigError(
            f"--workers {workers}: the service writes events to the DuckDB store, which one process at a "
            "time can open for writing; run one worker per store (scale out with replicas behind a load balancer)"
        )
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    meta = read_meta(settings.model_dir)
    Store.open(settings.store, create=False).close()
    if settings.auth and not load_keys(settings.keys_file, settings.api_keys):
        raise ConfigError(
            "no API keys configured: pass --keys FILE or set RETAILGAN_API_KEYS "
            "(make one with `python -m retailgan.serving.security --name NAME --role admin`), "
            "or serve without keys with --no-auth"
        )
    if not settings.auth:
        log.warning("serving WITHOUT API keys (--no-auth): anyone who can reach %s:%d can call every endpoint",
                    host, port)
    app = create_app(settings)
    sock = bind(host, port)  # bound here, so a busy port is one clear line and no other process takes it meanwhile
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving {meta['model']} from {settings.model_dir} with store {settings.store} "
        f"on http://{shown}:{port} (Ctrl+C stops)",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, host=host, port=port, workers=1, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (uvicorn listens on it); ConfigError naming the port if busy."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot resolve ({exc.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        busy = " (another server is using it; pick another with --port)" if exc.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"cannot listen on {host} port {port}: {exc.strerror or exc}{busy}") from None
    return sock


def wait_ready(proc: Any, port: int, timeout_s: float, poll_s: float = 0.1) -> None:
    """Wait until a server process started on ``port`` answers ``/readyz`` with 200.

    Raises :class:`RuntimeError` if the process exits first or the timeout passes (the process is
    killed then).
    """
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout_s:.0f} s")
