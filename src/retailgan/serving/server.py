"""Run the service under uvicorn (``retailgan serve``), with limits on request heads.

uvicorn's httptools protocol (what ``uvicorn[standard]`` picks) sets no limit on the request
line or the header block: a 64 MB header is read into memory in full before the app sees it.
:class:`LimitedHttpProtocol` refuses a request line over :data:`MAX_REQUEST_LINE` bytes with 414
and a head (request line and headers) over :data:`MAX_HEAD` bytes with 431, and closes the
connection without reading the rest.

``--workers N`` (N > 1) runs N uvicorn worker processes on the one socket bound here (uvicorn's
supervisor restarts a worker that dies); each builds the app from the settings this process
checked, through :func:`worker_app`. They share events and reloads through PostgreSQL
(``--events-db``, :mod:`retailgan.serving.pgevents`), which N > 1 therefore needs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
from typing import Any

from retailgan.errors import ConfigError, extra_needed
from retailgan.serving.settings import Settings

log = logging.getLogger("retailgan.serving")

MAX_REQUEST_LINE = 8 * 1024
"""Longest request target (path and query string), in bytes."""
MAX_HEAD = 32 * 1024
"""Longest request head (request line and all headers), in bytes."""
ENV_WORKER_SETTINGS = "RETAILGAN_SERVE_SETTINGS"
"""How the supervising process hands its checked settings (JSON) to the worker processes."""


def check_serving_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import httptools  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise extra_needed("serving", "serve", str(exc)) from None


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Validate the settings up front (clear errors before binding), then run uvicorn."""
    check_serving_extra()
    import uvicorn

    from retailgan.data.reftime import parse_as_of
    from retailgan.data.store import Store
    from retailgan.persistence import read_meta
    from retailgan.serving.app import create_app
    from retailgan.serving.security import load_keys

    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {workers}")
    if workers > 1 and not settings.events_db:
        # DuckDB admits one process with a store open for writing, and events are written to it.
        raise ConfigError(
            f"--workers {workers} needs --events-db postgresql://...: without it the service writes events to "
            "the DuckDB store, which one process at a time can open for writing"
        )
    if settings.events_db:
        from retailgan.serving.pgevents import check_postgres_extra, check_url

        check_postgres_extra()
        check_url(settings.events_db)
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    meta = read_meta(settings.model_dir)
    parse_as_of(settings.as_of)
    # Read-only with --events-db: other processes and hosts may have it open (read-only) already.
    Store.open(settings.store, create=False, read_only=bool(settings.events_db)).close()
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
    try:
        # Open the store and load and check the model now: a corrupt model, or one of another store,
        # is one clear error (exit 2) instead of a failed uvicorn start-up.
        app.state.service.start()
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    events = f", events in {_hide_password(settings.events_db)}" if settings.events_db else ""
    procs = f" with {workers} worker processes" if workers > 1 else ""
    print(
        f"serving {meta['model']} from {settings.model_dir} with store {settings.store}{events} "
        f"on http://{shown}:{port}{procs} (Ctrl+C stops)",
        file=sys.stderr,
        flush=True,
    )
    if workers == 1:
        config = uvicorn.Config(app, host=host, port=port, workers=1, log_level="warning", access_log=False,
                                http=limited_http_protocol())
        uvicorn.Server(config).run(sockets=[sock])
        return
    # The checks passed here; each worker starts its own state (store read-only, model, follower).
    app.state.service.stop()
    from uvicorn.supervisors import Multiprocess

    os.environ[ENV_WORKER_SETTINGS] = settings.model_dump_json()  # the spawned workers inherit it
    config = uvicorn.Config(f"{__name__}:worker_app", factory=True, host=host, port=port, workers=workers,
                            log_level="warning", access_log=False, http=f"{__name__}:LimitedHttpProtocol")
    Multiprocess(config, sockets=[sock]).run()


def worker_app() -> Any:
    """The app of one ``--workers`` process, from the settings its supervisor checked."""
    from retailgan.serving.app import create_app
    from retailgan.serving.settings import Settings

    return create_app(Settings.model_validate_json(os.environ[ENV_WORKER_SETTINGS]))


def _hide_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def __getattr__(name: str) -> Any:
    # Importable by name (uvicorn's workers load the protocol class from a string) without importing
    # uvicorn when this module is.
    if name == "LimitedHttpProtocol":
        global _protocol
        if _protocol is None:
            _protocol = limited_http_protocol()
        return _protocol
    raise AttributeError(name)


_protocol: type | None = None


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


def limited_http_protocol() -> type:
    """uvicorn's httptools protocol with the request-line and head limits (see the module docstring)."""
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class LimitedHttpProtocol(HttpToolsProtocol):
        max_request_line = MAX_REQUEST_LINE
        max_head = MAX_HEAD

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._chunk = 0
            # Bytes received since the chunk holding the current request's first byte (an upper
            # bound of its head so far: that chunk may end the previous request); None once the
            # headers are complete.
            self._head: int | None = None
            self._refusal: tuple[int, str] | None = None

        def data_received(self, data: bytes) -> None:
            if self._refusal is not None:
                return
            self._chunk = len(data)
            if self._head is not None:
                self._head += len(data)
            super().data_received(data)
            if self._refusal is None and self._head is not None and self._head > self.max_head:
                self._refuse(431, f"request headers larger than {self.max_head} bytes")
            if self._refusal is not None:
                self._send_refusal()

        def _refuse(self, status: int, message: str) -> None:
            if self._refusal is None:
                self._refusal = (status, message)

        def _send_refusal(self) -> None:
            assert self._refusal is not None
            status, message = self._refusal
            if self.transport.is_closing():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
            log.warning("%s: refused with %d: %s", client, status, message)
            body = json.dumps({"detail": message}).encode()
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body), body]))
            self.transport.close()

        # Parser callbacks: once a request is refused, nothing more is buffered or dispatched.
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head = self._chunk

        def on_url(self, url: bytes) -> None:
            if self._refusal is None and len(self.url) + len(url) > self.max_request_line:
                self._refuse(414, f"request line longer than {self.max_request_line} bytes")
            if self._refusal is None:
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._refusal is None:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head = None
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.max_head:  # exact, for a head that arrived whole in one chunk
                self._refuse(431, f"request headers larger than {self.max_head} bytes")
            if self._refusal is None:
                super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if self._refusal is None:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refusal is None:
                super().on_message_complete()

    return LimitedHttpProtocol


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
