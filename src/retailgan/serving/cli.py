"""``retailgan serve`` and ``retailgan events``: the HTTP service and its events in PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from retailgan.cli_common import AS_OF_HELP, console, run_guarded
from retailgan.errors import ConfigError


def serve(
    model_dir: Path = typer.Option(..., "--model-dir", help="Model directory (reloaded from here)."),
    store: Path = typer.Option(..., "--store", help="DuckDB store (catalogue, histories, events)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    workers: int = typer.Option(
        1, "--workers", help="Worker processes on the one port; more than 1 needs --events-db."
    ),
    events_db: str | None = typer.Option(
        None, "--events-db", help="PostgreSQL URL (postgresql://...) for events shared by every worker and host "
        "(default: $RETAILGAN_EVENTS_DB, else the DuckDB store); needs the 'postgres' extra.",
    ),
    events_poll: float = typer.Option(
        1.0, "--events-poll", help="With --events-db: most seconds before other replicas' events are folded in."
    ),
    rate_limit_redis: str | None = typer.Option(
        None, "--rate-limit-redis", help="Redis URL (redis://host:6379/0) for rate limits shared by every "
        "worker and host (default: per process); needs the 'redis' extra.",
    ),
    keys: Path | None = typer.Option(None, "--keys", help="API keys file (name:role:sha256hex lines)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without API keys (local use only)."),
    rate_limit: float = typer.Option(50.0, "--rate-limit", help="Requests per second per key."),
    rate_burst: int = typer.Option(100, "--rate-burst", help="Burst size per key."),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
    anon_rate_limit: float = typer.Option(
        5.0, "--anon-rate-limit", help="Requests per second per client address without a valid key."
    ),
    anon_rate_burst: int = typer.Option(20, "--anon-rate-burst", help="Burst size per address without a valid key."),
) -> None:
    """Serve recommendations over HTTP (needs the 'serve' extra); see retailgan.serving."""

    def go() -> None:
        from retailgan.serving.server import check_serving_extra

        check_serving_extra()
        from retailgan.serving.server import serve as run_server
        from retailgan.serving.settings import Settings

        shared: dict[str, Any] = {"events_db": events_db} if events_db else {}
        settings = Settings(model_dir=model_dir, store=store, keys_file=keys, auth=not no_auth,
                            rate_limit=rate_limit, rate_burst=rate_burst, anon_rate_limit=anon_rate_limit,
                            anon_rate_burst=anon_rate_burst, as_of=as_of, events_poll_s=events_poll,
                            rate_limit_redis=rate_limit_redis, **shared)
        run_server(settings, host=host, port=port, workers=workers)

    run_guarded(go)


events_app = typer.Typer(no_args_is_help=True, help="The service's events in PostgreSQL (`serve --events-db`).")


@events_app.command("sync")
def events_sync(
    events_db: str | None = typer.Option(
        None, "--events-db", envvar="RETAILGAN_EVENTS_DB", help="The PostgreSQL URL the service writes events to."
    ),
    store: Path = typer.Option(..., "--store", help="The store to copy them into (not open in a running service)."),
) -> None:
    """Copy the events the service took in PostgreSQL that the store lacks into the store, once each,
    in one transaction. Run it before `train`, `compare`, `recommend --all` and `campaign build`."""

    def go() -> None:
        if not events_db:
            raise ConfigError("events sync: give --events-db postgresql://... (or set RETAILGAN_EVENTS_DB)")
        from retailgan.serving.pgsync import sync_events

        console.print(sync_events(events_db, store).summary(store), highlight=False)

    run_guarded(go)
