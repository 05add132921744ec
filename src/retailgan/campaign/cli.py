"""``retailgan campaign``: build personalised campaigns from a store and a trained model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from retailgan.campaign import DEFAULT_CHUNK_SIZE
from retailgan.cli_common import run_guarded

campaign_app = typer.Typer(
    no_args_is_help=True,
    help="Personalised campaigns: per-customer products, reasons and e-mails.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # a line stays one line in a log (no wrap at 80 columns)


@campaign_app.command("build")
def build(
    store: Path = typer.Option(..., "--store", help="The DuckDB store (customers, events, products)."),
    model_dir: Path = typer.Option(..., "--model-dir", help="A model directory written by `retailgan train`."),
    segment: str = typer.Option(
        "all", "--segment", help="all | ids:ID1,ID2 | country:NAME | recent:DAYS | spend:LOW-HIGH."
    ),
    theme: str | None = typer.Option(
        None, "--theme", help="category:NAME;keyword:WORD;max_price:P (any subset, joined by ';')."
    ),
    k: int = typer.Option(10, "--k", help="Products per customer."),
    out: Path = typer.Option(..., "--out", help="Output directory (replaced atomically when the build ends)."),
    recent_days: int = typer.Option(30, "--recent-days", help="Do not send products bought in the last N days."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK_SIZE, "--chunk-size", help="Customers per resumable chunk."),
    workers: int = typer.Option(1, "--workers", help="Processes building chunks in parallel (same output)."),
    engine: str = typer.Option("local", "--engine", help="Where the chunks run: local | ray."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster for --engine ray (e.g. auto or HEAD:6380); default: a local instance."
    ),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Reference time ('now' or an ISO date / time, UTC) that recent:N and --recent-days "
        "count back from; default: the store's latest ingested event. Later events are ignored."
    ),
) -> None:
    """Build campaign.parquet, one HTML + text e-mail and banner PNG per customer, summary.json and
    report.html / report.png into OUT."""
    from retailgan.campaign.build import build_campaign
    from retailgan.data.reftime import parse_as_of

    summary = run_guarded(
        lambda: build_campaign(
            store, model_dir, out, segment=segment, theme=theme, k=k, recent_days=recent_days,
            chunk_size=chunk_size, workers=workers, engine=engine, address=address, progress=True,
            as_of=parse_as_of(as_of),
        )
    )
    if summary.ignored_events:
        console.print(f"note: {summary.ignored_events} event(s) dated after the reference time "
                      f"{summary.reference_time} were ignored (--as-of moves it)", highlight=False)
    if summary.customers == 0:
        console.print(f"segment {segment!r} has no customers: wrote an empty campaign to {out}", highlight=False)
        return
    console.print(
        f"wrote {summary.rows} products for {summary.customers} customers to {out} "
        f"(coverage {summary.catalogue_coverage:.1%}, diversity {summary.diversity or 0:.1%}, "
        f"generated images {summary.generated_image_share or 0:.1%} of products, "
        f"expected revenue {summary.expected_revenue:.2f}; see {out / 'report.html'})",
        highlight=False,
    )
