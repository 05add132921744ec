"""``retailgan recommend``: one customer's top-k in the terminal, or every customer's into Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from retailgan.cli_common import console, fail, run_guarded


def _reasons(model, user_id: str, top, known: bool) -> list:
    """Reasons for one customer's list (``retailgan.explanations``, as the service gives them)."""
    import numpy as np

    from retailgan.explanations import explain_items

    u = model.users.index([user_id], missing="negative")[0]
    hist = model.seen[u].indices if u >= 0 else np.empty(0, dtype=np.int64)
    titles = dict(zip(model.items.ids, model.item_info.titles, strict=True))
    return explain_items(
        model, model.name, model.popularity, top, hist, "model" if known else "popular", lambda pid: titles.get(pid)
    )


def recommend(
    model_dir: Path = typer.Option(..., "--model-dir"),
    user: list[str] | None = typer.Option(None, "--user", help="Raw customer id (repeatable)."),
    k: int = typer.Option(10, "--k", min=1, max=1000),
    include_seen: bool = typer.Option(False, "--include-seen", help="Allow items the customer already has."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    explain: bool = typer.Option(False, "--explain", help="Show why: the history products behind each one."),
    all_customers: bool = typer.Option(
        False, "--all", help="Every customer (the store's, else the model's) into --out (a batch job)."
    ),
    segment: str | None = typer.Option(
        None, "--segment", help="Like --all for a campaign segment (needs --store): "
        "all | ids:ID1,ID2 | country:NAME | recent:DAYS | spend:LOW-HIGH."
    ),
    out: Path | None = typer.Option(None, "--out", help="Parquet file for --all / --segment (written atomically)."),
    store: Path | None = typer.Option(
        None, "--store", help="DuckDB store whose customers --all / --segment take; its catalogue products without "
        "sales are added to models that embed products from content (featgan, the cold-start models)."
    ),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Reference time for --segment recent:N and trend models ('now' or an ISO date / "
        "time, UTC); default: the store's latest ingested event."
    ),
    block_size: int = typer.Option(2000, "--block-size", help="Customers per block (bounds memory; resumable unit)."),
    workers: int = typer.Option(1, "--workers", help="Processes scoring blocks in parallel (same output)."),
    engine: str = typer.Option("local", "--engine", help="Where --all / --segment run: local | ray."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster for --engine ray (e.g. auto or HEAD:6380); default: a local instance."
    ),
    index: str = typer.Option(
        "exact", "--index", help="--all / --segment: exact | ivf | hnsw (faiss, approximate; ials, bpr, featgan). "
        "An approximate index must pass the recall gate (--min-recall)."
    ),
    index_params: str | None = typer.Option(
        None, "--index-params",
        help='JSON for the faiss index, e.g. \'{"nprobe": 32}\' (ivf) or \'{"ef_search": 128}\' (hnsw).'
    ),
    min_recall: float = typer.Option(
        0.9, "--min-recall", help="Refuse an approximate index whose recall@k against exact, on 2,000 sampled "
        "customers, is below this."
    ),
) -> None:
    """Top-k products for customers, with titles and prices; with --all or --segment, every
    customer's top-k into a Parquet table (resumable, atomic; see retailgan.batch)."""
    if all_customers or segment is not None:
        _recommend_batch(model_dir, user, all_customers, segment, out, store, as_of, k, include_seen, explain,
                         block_size, workers, engine, address, (index, index_params, min_recall))
        return
    if not user:
        fail("give --user ID (repeatable), or --all / --segment with --out for every customer")
    if out is not None or as_of is not None or engine != "local" or address is not None or index != "exact":
        fail("--out, --as-of, --engine, --address and --index go with --all or --segment")

    def go() -> None:
        from rich.table import Table

        from retailgan.persistence import load_model

        mdl = load_model(model_dir)
        if store is not None:
            # Products of the store's catalogue the model was not trained with (no sales yet) join
            # the candidates of a model that embeds products from their records.
            from retailgan.data.store import Store
            from retailgan.serving.engine import add_catalogue_products
            from retailgan.serving.storage import store_catalogue

            with Store.open(store, create=False, read_only=True) as st:
                add_catalogue_products(mdl, store_catalogue(st).values())
        recs = mdl.recommend(user, k, exclude_seen=not include_seen)
        info = mdl.item_info
        out = []
        for r, uid in enumerate(recs.user_ids):
            valid = recs.item_idx[r] >= 0
            reasons = _reasons(mdl, str(uid), recs.item_idx[r][valid], bool(recs.known[r])) if explain else []
            items = []
            for rank, (j, iid, score) in enumerate(
                zip(recs.item_idx[r][valid], recs.item_ids[r][valid], recs.scores[r][valid], strict=True), start=1
            ):
                price = float(info.prices[j])
                item = {
                    "rank": rank,
                    "product_id": iid,
                    "title": info.titles[j],
                    "price": None if price != price else price,
                    "score": float(score),
                }
                if explain:
                    why = reasons[rank - 1]
                    item["reasons"] = [w.text for w in why]
                    item["because"] = [
                        {"product_id": w.product_id, "contribution": w.contribution}
                        for w in why
                        if w.kind == "history_item"
                    ]
                items.append(item)
            # The names of the HTTP API's responses (retailgan.serving.schemas), so one vocabulary.
            out.append({"customer_id": uid, "known_customer": bool(recs.known[r]), "items": items})
            close = None if recs.known[r] else mdl.users.close_match(str(uid))
            if close is not None:
                console.print(f"customer {uid!r} is unknown (popular products shown): did you mean {close}?",
                              highlight=False, markup=False)
        if json_out:
            typer.echo(json.dumps(out, indent=2))
            return
        for entry in out:
            note = "" if entry["known_customer"] else " (unknown customer: popular products)"
            table = Table(title=f"customer {entry['customer_id']}{note}")
            for col in ("rank", "product", "title", "price", "score", *(["why"] if explain else [])):
                table.add_column(col)
            for it in entry["items"]:
                price = "" if it["price"] is None else f"{it['price']:.2f}"
                row = [str(it["rank"]), it["product_id"], str(it["title"] or ""), price, f"{it['score']:.4f}"]
                if explain:
                    row.append("; ".join(it["reasons"]))
                table.add_row(*row)
            Console().print(table)

    run_guarded(go)


def _recommend_batch(model_dir: Path, user: list[str] | None, all_customers: bool, segment: str | None,
                     out: Path | None, store: Path | None, as_of: str | None, k: int, include_seen: bool,
                     explain: bool, block_size: int, workers: int, engine: str, address: str | None,
                     index: tuple[str, str | None, float]) -> None:
    """``recommend --all`` / ``--segment``: the batch job of :mod:`retailgan.batch`; ``index``:
    (kind, its parameters as JSON, the recall gate)."""
    if user:
        fail("--user cannot be combined with --all or --segment")
    if all_customers and segment is not None:
        fail("give --all or --segment, not both")
    if out is None:
        fail("--all / --segment need --out FILE.parquet")
    if segment is not None and store is None:
        fail("--segment needs --store (the customers it selects from)")
    kind, params_text, min_recall = index
    try:
        params = json.loads(params_text) if params_text else {}
    except json.JSONDecodeError as exc:
        fail(f"--index-params is not JSON: {exc}")
    if not isinstance(params, dict):
        fail("--index-params must be a JSON object")

    def go():
        from retailgan.batch import recommend_all
        from retailgan.data.reftime import parse_as_of

        return recommend_all(model_dir, out, store=store, segment=segment or "all", k=k,
                             exclude_seen=not include_seen, explain=explain, block_size=block_size,
                             workers=workers, engine=engine, address=address, progress=True,
                             as_of=parse_as_of(as_of), index=kind, index_params=params, min_recall=min_recall)

    summary = run_guarded(go)
    if summary.ignored_events:
        console.print(f"note: {summary.ignored_events} event(s) dated after the reference time "
                      f"{summary.reference_time} were ignored (--as-of moves it)", highlight=False)
    console.print(f"wrote {summary.rows} recommendations for {summary.customers} customers to {out} "
                  f"({summary.model_version})", highlight=False)
    if summary.recall is not None:
        console.print(f"{summary.index} index: recall@{summary.k} {summary.recall:.4f} against the exact lists "
                      f"({summary.recall_customers} sampled customers)", highlight=False)
