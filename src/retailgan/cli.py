"""The ``retailgan`` command line: ingest logs, compare recommenders, train, recommend."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from retailgan import progress
from retailgan.cli_common import AS_OF_HELP, console, json_option, load_store, parse_ks, run_guarded, write_json
from retailgan.cli_recommend import recommend
from retailgan.errors import ConfigError
from retailgan.fileio import write_text_atomic
from retailgan.serving.cli import events_app, serve

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="retailgan: personalised recommendations from raw retail logs.",
    pretty_exceptions_enable=False,
)
BUNDLED_RETAIL = Path(__file__).resolve().parents[2] / "data" / "online-retail" / "online_retail.csv.gz"


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    progress.enable()  # long steps report on stderr, in a terminal and in logs alike


# -- ingest -----------------------------------------------------------------------------------


@app.command()
def ingest(
    source: Path = typer.Argument(..., help="CSV, CSV.gz, Parquet or JSONL file (or dataset folder)."),
    store: Path = typer.Option(Path("retailgan.duckdb"), "--store", help="DuckDB store file (created if absent)."),
    fmt: str = typer.Option(
        "online-retail", "--format", help="online-retail, movielens-100k, amazon-s3rec, rechorus, events."
    ),
    user_col: str | None = typer.Option(None, "--user-col", help="events format: user id column."),
    item_col: str | None = typer.Option(None, "--item-col", help="events format: item id column."),
    time_col: str | None = typer.Option(None, "--time-col", help="events format: timestamp column."),
    event_col: str | None = typer.Option(None, "--event-col", help="events format: event type column."),
    quantity_col: str | None = typer.Option(None, "--quantity-col"),
    price_col: str | None = typer.Option(None, "--price-col"),
    rating_col: str | None = typer.Option(None, "--rating-col"),
    catalogue: Path | None = typer.Option(None, "--catalogue", help="events format: product catalogue file."),
    catalogue_item_col: str | None = typer.Option(None, "--catalogue-item-col"),
    title_col: str | None = typer.Option(None, "--title-col"),
    category_col: str | None = typer.Option(None, "--category-col"),
    catalogue_price_col: str | None = typer.Option(None, "--catalogue-price-col"),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the ingest report as JSON here."),
    force: bool = typer.Option(
        False, "--force", help="Read the file again even if it was ingested before (events already stored stay once)."
    ),
) -> None:
    """Ingest a behaviour log into the store: clean, report, and keep every dropped row."""
    from retailgan.data.ingest import ingest as do_ingest

    mapping = {
        k: v
        for k, v in {
            "user": user_col,
            "item": item_col,
            "timestamp": time_col,
            "event_type": event_col,
            "quantity": quantity_col,
            "price": price_col,
            "rating": rating_col,
        }.items()
        if v
    }
    cat_mapping = {
        k: v
        for k, v in {
            "item": catalogue_item_col,
            "title": title_col,
            "category": category_col,
            "price": catalogue_price_col,
        }.items()
        if v
    }
    report = run_guarded(
        do_ingest,
        store,
        source,
        fmt,
        mapping=mapping or None,
        catalogue=catalogue,
        catalogue_mapping=cat_mapping or None,
        options={"force": force},
    )
    Console().print(report.to_markdown(), highlight=False, soft_wrap=True)
    if json_out:
        write_json(json_out, report.to_dict())


@app.command()
def info(
    store: Path = typer.Option(Path("retailgan.duckdb"), "--store"),
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    """Summarise a store: counts, past ingests and rejected rows by reason."""
    from retailgan.data.store import Store

    def summary() -> dict[str, Any]:
        with Store.open(store, create=False, read_only=True) as st:
            return st.summary()

    data = run_guarded(summary)
    Console().print_json(json.dumps(data, default=str))
    if json_out:
        write_json(json_out, data)


# -- compare ----------------------------------------------------------------------------------


@app.command()
def compare(
    store: Path = typer.Option(Path("retailgan.duckdb"), "--store"),
    protocol: str = typer.Option(
        "temporal", "--protocol", help="random, temporal, leave-last, cfgan-paper or cold-items."
    ),
    models: str = typer.Option("pop,itemknn,ease,ials,bpr", "--models"),
    tune_trials: int = typer.Option(0, "--tune-trials", help="Optuna trials per model, on validation only."),
    k: str = typer.Option("10,20", "--k", help="Cut-offs, comma-separated."),
    seed: int = typer.Option(0, "--seed"),
    test_fraction: float = typer.Option(0.2, "--test-fraction"),
    n_last: int = typer.Option(1, "--n-last", help="leave-last: items held out per user."),
    event_weights: str | None = typer.Option(None, "--event-weights", help="e.g. view=1,cart=2,purchase=3"),
    rating_threshold: float | None = typer.Option(None, "--rating-threshold"),
    min_user: int = typer.Option(1, "--min-user", help="k-core: minimum interactions per user."),
    min_item: int = typer.Option(1, "--min-item", help="k-core: minimum interactions per item."),
    params: str | None = typer.Option(None, "--params", help='Fixed parameters, JSON: {"ease": {"l2": 300}}'),
    json_out: Path | None = typer.Option(None, "--json"),
    plot: Path | None = typer.Option(None, "--plot"),
    report: Path | None = typer.Option(None, "--report", help="Markdown report file."),
    save_dir: Path | None = typer.Option(None, "--save-dir", help="Save each fitted model in DIR/<model>."),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
) -> None:
    """Tune on validation, fit, and evaluate recommenders side by side on one split."""
    run_guarded(
        _compare,
        store,
        protocol,
        models,
        tune_trials,
        k,
        seed,
        test_fraction,
        n_last,
        event_weights,
        rating_threshold,
        min_user,
        min_item,
        params,
        json_out,
        plot,
        report,
        save_dir,
        as_of=as_of,
    )


def _compare(
    store,
    protocol,
    models,
    tune_trials,
    k,
    seed,
    test_fraction,
    n_last,
    event_weights,
    rating_threshold,
    min_user,
    min_item,
    params,
    json_out,
    plot,
    report,
    save_dir,
    as_of=None,
) -> dict[str, Any]:
    from retailgan.data.splits import split
    from retailgan.evaluation.report import plot_results, results_table_markdown
    from retailgan.experiments import comparison_json, run_comparison
    from retailgan.models.registry import get_model_class

    ks = parse_ks(k)
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ConfigError("--models is empty")
    for name in names:
        get_model_class(name)  # fail on a typo before any work
    try:
        fixed = json.loads(params) if params else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(fixed, dict) or not all(isinstance(v, dict) for v in fixed.values()):
        raise ConfigError('--params must be a JSON object of objects, e.g. {"ease": {"l2": 300}}')
    ds = load_store(store, event_weights, rating_threshold, min_user, min_item, as_of)
    sp_ = split(ds, protocol, seed=seed, test_fraction=test_fraction, n_last=n_last)
    console.print(
        f"{ds.name}: {len(ds):,} pairs, {ds.n_users:,} users, {ds.n_items:,} items; "
        f"{protocol} split: train {len(sp_.train):,} / test {len(sp_.test):,} "
        f"(validation {len(sp_.validation):,} carved from train)",
        highlight=False,
    )
    runs = run_comparison(sp_, names, ks=ks, seed=seed, tune_trials=tune_trials, params=fixed)
    primary = f"ndcg@{ks[-1]}"
    metric_names = [f"{m}@{kk}" for kk in ks for m in ("ndcg", "recall", "precision", "map", "mrr", "hitrate")]
    extra = [f"{m}@{ks[0]}" for m in ("coverage", "novelty", "ild", "revenue")]
    plotted = [f"ndcg@{kk}" for kk in ks] + [f"recall@{kk}" for kk in ks]
    doc = comparison_json(runs, sp_, dataset_name=ds.name, seed=seed, primary=primary, ci_metrics=plotted)
    shown = [m for m in [*metric_names, *extra] if any(m in r["metrics"] for r in doc["results"])]
    table = results_table_markdown(doc["results"], shown)
    # The terminal gets the headline metrics without CIs; the report file has every column.
    brief = [m for m in shown if m.split("@")[0] in ("ndcg", "recall", "coverage", "revenue")]
    typer.echo(results_table_markdown([{**r, "ci": {}} for r in doc["results"]], brief))
    if any("views" in r for r in doc["results"]):
        table += "\n" + _views_table(doc, ks[-1])
        typer.echo(_views_table(doc, ks[-1]))
    if json_out:
        write_json(json_out, doc)
    if plot:
        plot_results(
            doc["results"],
            [f"ndcg@{kk}" for kk in ks] + [f"recall@{kk}" for kk in ks],
            plot,
            title=f"{ds.name} - {protocol} split",
        )
    if report:
        write_text_atomic(report, _report_markdown(doc, table))
    if save_dir:
        for run in runs:
            run.model.save(Path(save_dir) / run.name)
    return doc


def _views_table(doc: dict[str, Any], k: int) -> str:
    """cold-items: Recall@k and NDCG@k of every model in the cold-only, warm-only and hybrid views."""
    views = list(doc["results"][0]["views"])
    head = "| model | " + " | ".join(f"{v} recall@{k} | {v} ndcg@{k}" for v in views) + " |"
    lines = [head, "|:---|" + "---:|" * (2 * len(views))]
    for r in doc["results"]:
        cells = []
        for v in views:
            m = r["views"][v]["metrics"]
            cells += [f"{m.get(f'recall@{k}') or 0:.4f}", f"{m.get(f'ndcg@{k}') or 0:.4f}"]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _report_markdown(doc: dict[str, Any], table: str) -> str:
    lines = [
        f"# {doc['dataset']}: {doc['protocol']} split, seed {doc['seed']}",
        "",
        "Hyperparameters chosen on the validation part only; every model fitted on the full training",
        "part and evaluated once on the test part, full ranking over all items, training items excluded.",
        "",
        table,
        f"Best by {doc['primary_metric']}: **{doc['best']}**. Paired comparison with the best "
        "(mean difference, 95 % bootstrap CI, paired t-test and Wilcoxon p-values):",
        "",
        "| model | diff | 95% CI | p (t) | p (Wilcoxon) |",
        "|:---|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        v = r.get("vs_best")
        if v:
            lines.append(
                f"| {r['model']} | {v['mean_diff']:+.4f} | [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}] "
                f"| {v['p_ttest']:.2g} | {v['p_wilcoxon']:.2g} |"
            )
    lines += ["", "Parameters:", ""]
    lines += [f"- {r['model']}: `{json.dumps(r['params'])}`" for r in doc["results"]]
    return "\n".join(lines) + "\n"


@app.command(name="tune")
def tune_cmd(
    store: Path = typer.Option(Path("retailgan.duckdb"), "--store"),
    model: str = typer.Option(..., "--model"),
    protocol: str = typer.Option("temporal", "--protocol"),
    trials: int = typer.Option(20, "--trials", min=0),
    metric: str = typer.Option("ndcg@20", "--metric"),
    seed: int = typer.Option(0, "--seed"),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop searching after this many seconds."),
    params: str | None = typer.Option(
        None, "--params", help='Fixed parameters, JSON (kept in every trial), e.g. {"trend_days": 14}'
    ),
    event_weights: str | None = typer.Option(None, "--event-weights"),
    rating_threshold: float | None = typer.Option(None, "--rating-threshold"),
    min_user: int = typer.Option(1, "--min-user"),
    min_item: int = typer.Option(1, "--min-item"),
    json_out: Path | None = typer.Option(None, "--json"),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
) -> None:
    """Search a model's hyperparameters on the validation part of a split (the test part is untouched)."""

    def go() -> None:
        from retailgan.data.splits import split
        from retailgan.models.registry import get_model_class
        from retailgan.tuning import tune

        get_model_class(model)
        ds = load_store(store, event_weights, rating_threshold, min_user, min_item, as_of)
        fixed = json_option(params, "--params")
        result = tune(
            model,
            split(ds, protocol, seed=seed),
            n_trials=trials,
            seed=seed,
            metric=metric,
            timeout=timeout,
            fixed=fixed,
        )
        doc = {
            "model": model,
            "protocol": protocol,
            "seed": seed,
            "metric": metric,
            "fixed": fixed,
            "best_value": result.value,
            "best_params": result.params,
            "trials": result.trials,
            "seconds": result.seconds,
        }
        typer.echo(f"best validation {metric} = {result.value:.4f} with {json.dumps(result.params)}")
        if json_out:
            write_json(json_out, doc)

    run_guarded(go)


# -- train ------------------------------------------------------------------------------------


@app.command()
def train(
    store: Path = typer.Option(Path("retailgan.duckdb"), "--store"),
    model: str = typer.Option("ease", "--model"),
    out: Path = typer.Option(..., "--out", help="Model directory to write."),
    params: str | None = typer.Option(None, "--params", help='JSON, e.g. {"l2": 300}'),
    tune_trials: int = typer.Option(0, "--tune-trials", help="Tune first on a split of the data (validation only)."),
    protocol: str = typer.Option("temporal", "--protocol", help="Split used for tuning."),
    seed: int = typer.Option(0, "--seed"),
    event_weights: str | None = typer.Option(None, "--event-weights"),
    rating_threshold: float | None = typer.Option(None, "--rating-threshold"),
    min_user: int = typer.Option(1, "--min-user"),
    min_item: int = typer.Option(1, "--min-item"),
    json_out: Path | None = typer.Option(None, "--json", help="Write what was trained (params, sizes, time) here."),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Train data-parallel in this many local processes (torch.distributed, gloo)."
    ),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
) -> None:
    """Fit one model on all of the store's data (optionally tuned first) and save it.

    With ``--nproc N`` (or under ``torchrun``) models that support it (cfgan, resgan, featgan) train
    data-parallel with DistributedDataParallel; rank 0 writes the model.
    """

    def go() -> None:
        from retailgan import distributed
        from retailgan.models.registry import get_model_class

        cls = get_model_class(model)
        fixed = json_option(params, "--params")
        job = {
            "store": store, "model": model, "out": out, "fixed": fixed, "tune_trials": tune_trials,
            "protocol": protocol, "seed": seed, "event_weights": event_weights,
            "rating_threshold": rating_threshold, "min_user": min_user, "min_item": min_item, "json_out": json_out,
            "as_of": as_of,
        }
        under_torchrun = distributed.torchrun_env() and int(os.environ["WORLD_SIZE"]) > 1
        if (nproc > 1 or under_torchrun) and not cls.supports_distributed:
            from retailgan.models.registry import MODELS

            able = ", ".join(n for n in MODELS if get_model_class(n).supports_distributed)
            raise ConfigError(f"{model} does not train data-parallel; models that do: {able}")
        if nproc > 1 and under_torchrun:
            raise ConfigError("--nproc cannot be combined with torchrun (torchrun already started the processes)")
        if nproc > 1:
            load_store(store, event_weights, rating_threshold, min_user, min_item, as_of)  # fail fast, before spawning
            distributed.launch(nproc, _train_job, job)
        elif under_torchrun:
            import torch.distributed as dist

            distributed.init_from_env()
            try:
                _train_job(job)
                dist.barrier()  # leave together (see distributed._worker)
            finally:
                dist.destroy_process_group()
        else:
            _train_job(job)

    run_guarded(go)


def _train_job(job: dict[str, Any]) -> None:
    """Load, (tune), fit and save: the body of ``train``, run by every process when distributed."""
    from retailgan import distributed
    from retailgan.data.splits import split
    from retailgan.models.base import TrainingOptions
    from retailgan.models.registry import get_model_class
    from retailgan.tuning import tune

    main_process = distributed.rank() == 0
    progress.enable(main_process)  # one process reports
    cls = get_model_class(job["model"])
    ds = load_store(job["store"], job["event_weights"], job["rating_threshold"], job["min_user"], job["min_item"],
               job["as_of"])
    chosen = job["fixed"]
    seed = job["seed"]
    if job["tune_trials"] > 0 or hasattr(cls.config_class, "epochs"):
        result = tune(
            job["model"], split(ds, job["protocol"], seed=seed), n_trials=job["tune_trials"], seed=seed, fixed=chosen
        )
        chosen = result.params
        tuned = {name: chosen[name] for name in result.searched if name in chosen}
        if main_process and tuned:  # defaults and --params values were not chosen: not shown
            console.print(f"chosen on validation: {json.dumps(tuned)} ({result.metric} {result.value:.4f})")
    fitted = cls(**chosen).fit(ds, TrainingOptions(seed=seed))
    if not main_process:
        return
    fitted.save(job["out"])
    world = distributed.world_size()
    where = f" on {world} processes" if world > 1 else ""
    console.print(f"saved {job['model']} ({ds.n_users:,} users, {ds.n_items:,} items{where}) to {job['out']}")
    if job["json_out"]:
        write_json(
            job["json_out"],
            {
                "model": job["model"],
                "params": fitted.config.to_dict(),
                "model_dir": str(job["out"]),
                "users": ds.n_users,
                "items": ds.n_items,
                "pairs": len(ds),
                "fit_s": fitted.fit_seconds,
                "processes": world,
            },
        )


# -- recommend, serve (defined in retailgan.cli_recommend and retailgan.serving.cli) --------------

app.command()(recommend)
app.command()(serve)


# -- forget -----------------------------------------------------------------------------------


@app.command()
def forget(
    store: Path = typer.Option(..., "--store", help="The store to erase the customers from (rewritten)."),
    customer: list[str] = typer.Option(..., "--customer", help="Customer id to erase (repeat for several)."),
    model_dir: list[Path] = typer.Option([], "--model-dir", help="Model directory to erase them from (repeatable)."),
    campaign_dir: list[Path] = typer.Option(
        [], "--campaign-dir", help="`campaign build` output to erase them from (repeatable)."
    ),
    reference: str | None = typer.Option(
        None, "--reference", help="The request's reference (a ticket number), kept in the audit record."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the audit record (no customer ids) here."),
    events_db: str | None = typer.Option(
        None, "--events-db", help="Also erase their events from this PostgreSQL database (`serve --events-db`)."
    ),
) -> None:
    """Erase customers (a request to be forgotten): store rows, rejected rows, model rows, campaign
    outputs, events in PostgreSQL; writes an audit record without their ids. Stop `serve` first, or
    use its admin endpoint (one process, without --events-db)."""

    def go() -> None:
        from retailgan.forget import forget as run_forget

        report = run_forget(store, customer, model_dirs=model_dir, campaign_dirs=campaign_dir, reference=reference,
                            events_db=events_db)
        s = report.store
        console.print(
            f"erased {report.customers} customer(s): {s['events']} events, {s['users']} customer rows and "
            f"{s['rejects']} rejected rows from {store}"
            + (f"; {s['events_db_events']} events from the events database" if events_db else "")
            + "".join(f"; {n} from model {m}" for m, n in report.models.items())
            + "".join(f"; {n} campaign rows from {c}" for c, n in report.campaigns.items())
            + f" (audit record {report.erasure_id})",
            highlight=False,
        )
        if report.models:
            console.print("models keep what shared parameters learned from them until retrained", highlight=False)
        if json_out:
            write_json(json_out, report.to_dict())

    run_guarded(go)


# -- demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    out: Path = typer.Option(Path("out"), "--out", help="Folder for the store, report, plot and models."),
    source: Path = typer.Option(BUNDLED_RETAIL, "--source", help="Online Retail file (bundled by default)."),
    tune_trials: int = typer.Option(5, "--tune-trials"),
    models: str = typer.Option("pop,itemknn,ease,ials,bpr,recent", "--models"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """End to end on the bundled UCI Online Retail log: ingest, clean, split, tune, evaluate, report."""
    out.mkdir(parents=True, exist_ok=True)
    store = out / "retail.duckdb"
    with progress.steps("demo", 2, "step", estimate=False) as steps:
        steps.begin(1, "ingest and clean")
        _demo_ingest(source, store, out)
        steps.done(1, "ingested")
        steps.begin(2, f"temporal split, tune {models} on validation ({tune_trials} trials each), evaluate on test")
        run_guarded(_compare, store, "temporal", models, tune_trials, "10,20", seed, 0.2, 1, None, None, 1, 1, None,
             out / "compare.json", out / "compare.png", out / "report.md", out / "models")
        steps.done(2, "compared")
    console.print(
        f"wrote {out / 'report.md'}, {out / 'compare.json'}, {out / 'compare.png'}, models in {out / 'models'}"
    )


def _demo_ingest(source: Path, store: Path, out: Path) -> None:
    """Step 1 of the demo: ``retailgan ingest`` of the Online Retail file."""
    ingest(
        source=source,
        store=store,
        fmt="online-retail",
        user_col=None,
        item_col=None,
        time_col=None,
        event_col=None,
        quantity_col=None,
        price_col=None,
        rating_col=None,
        catalogue=None,
        catalogue_item_col=None,
        title_col=None,
        category_col=None,
        catalogue_price_col=None,
        json_out=out / "ingest.json",
        force=False,
    )


app.add_typer(events_app, name="events")

from retailgan.imagegen.cli import images_app  # noqa: E402  (the sub-app is defined after the main app)

app.add_typer(images_app, name="images")

from retailgan.campaign.cli import campaign_app  # noqa: E402

app.add_typer(campaign_app, name="campaign")


def main() -> None:  # pragma: no cover - console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
