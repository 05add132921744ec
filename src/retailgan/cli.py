"""The ``retailgan`` command line: ingest logs, compare recommenders, train, recommend."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from retailgan import progress
from retailgan.errors import ConfigError, RetailganError
from retailgan.fileio import write_text_atomic

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="retailgan: personalised recommendations from raw retail logs.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # a line stays one line in a log (no wrap at 80 columns)
BUNDLED_RETAIL = Path(__file__).resolve().parents[2] / "data" / "online-retail" / "online_retail.csv.gz"


def _fail(message: str, code: int = 2) -> None:
    # Escaped: a message may hold brackets ("pip install 'retailgan[serve]'") that rich reads as markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def _write_text_atomic(path: Path, text: str) -> None:
    write_text_atomic(path, text)


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError:
        raise ConfigError(f"--k must be comma-separated integers like 10,20, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ConfigError(f"--k values must be >= 1, got {text!r}")
    return ks


def _parse_weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"--event-weights must look like view=1,cart=2,purchase=3; got {part!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--event-weights: {value!r} for {name!r} is not a number") from None
    return out


AS_OF_HELP = (
    "Reference time ('now' or an ISO date / time, UTC): events dated after it are ignored and every recency "
    "rule counts back from it; default: the store's latest ingested event."
)


def _load(store: Path, event_weights: str | None, rating_threshold: float | None, min_user: int, min_item: int,
          as_of: str | None = None):
    from retailgan.data.dataset import LoadOptions, load_dataset
    from retailgan.data.reftime import parse_as_of
    from retailgan.data.schemas import DEFAULT_EVENT_WEIGHTS

    weights = _parse_weights(event_weights)
    opts = LoadOptions(
        event_weights={**DEFAULT_EVENT_WEIGHTS, **(weights or {})},
        rating_threshold=rating_threshold,
        min_user=min_user,
        min_item=min_item,
        as_of=parse_as_of(as_of),
    )
    ds = load_dataset(store, opts)
    if len(ds) == 0:
        raise ConfigError(f"{store}: the store has no events (run `retailgan ingest` first)")
    return ds


def _run(fn, *args, **kwargs):
    """Call ``fn`` turning retailgan errors into one clear line on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except RetailganError as exc:
        _fail(str(exc))
    except FileNotFoundError as exc:
        _fail(f"{exc.filename}: no such file or directory")


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
    report = _run(
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
        _write_json_atomic(json_out, report.to_dict())


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

    data = _run(summary)
    Console().print_json(json.dumps(data, default=str))
    if json_out:
        _write_json_atomic(json_out, data)


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
    _run(
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

    ks = _parse_ks(k)
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
    ds = _load(store, event_weights, rating_threshold, min_user, min_item, as_of)
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
        _write_json_atomic(json_out, doc)
    if plot:
        plot_results(
            doc["results"],
            [f"ndcg@{kk}" for kk in ks] + [f"recall@{kk}" for kk in ks],
            plot,
            title=f"{ds.name} - {protocol} split",
        )
    if report:
        _write_text_atomic(report, _report_markdown(doc, table))
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


def _json_option(value: str | None, name: str) -> dict[str, Any]:
    """A JSON-object option (empty when not given); a clear error otherwise."""
    try:
        out = json.loads(value) if value else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(out, dict):
        raise ConfigError(f'{name} must be a JSON object, e.g. {{"l2": 300}}')
    return out


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
        ds = _load(store, event_weights, rating_threshold, min_user, min_item, as_of)
        fixed = _json_option(params, "--params")
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
            _write_json_atomic(json_out, doc)

    _run(go)


# -- train / recommend --------------------------------------------------------------------------


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
        fixed = _json_option(params, "--params")
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
            _load(store, event_weights, rating_threshold, min_user, min_item, as_of)  # fail fast, before spawning
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

    _run(go)


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
    ds = _load(job["store"], job["event_weights"], job["rating_threshold"], job["min_user"], job["min_item"],
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
        _write_json_atomic(
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


@app.command()
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
        None, "--address", help="Ray cluster for --engine ray (e.g. auto or HOST:6379); default: a local instance."
    ),
) -> None:
    """Top-k products for customers, with titles and prices; with --all or --segment, every
    customer's top-k into a Parquet table (resumable, atomic; see retailgan.batch)."""
    if all_customers or segment is not None:
        _recommend_batch(model_dir, user, all_customers, segment, out, store, as_of, k, include_seen, explain,
                         block_size, workers, engine, address)
        return
    if not user:
        _fail("give --user ID (repeatable), or --all / --segment with --out for every customer")
    if out is not None or as_of is not None or engine != "local" or address is not None:
        _fail("--out, --as-of, --engine and --address go with --all or --segment")

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

    _run(go)


def _recommend_batch(model_dir: Path, user: list[str] | None, all_customers: bool, segment: str | None,
                     out: Path | None, store: Path | None, as_of: str | None, k: int, include_seen: bool,
                     explain: bool, block_size: int, workers: int, engine: str, address: str | None) -> None:
    """``recommend --all`` / ``--segment``: the batch job of :mod:`retailgan.batch`."""
    if user:
        _fail("--user cannot be combined with --all or --segment")
    if all_customers and segment is not None:
        _fail("give --all or --segment, not both")
    if out is None:
        _fail("--all / --segment need --out FILE.parquet")
    if segment is not None and store is None:
        _fail("--segment needs --store (the customers it selects from)")

    def go():
        from retailgan.batch import recommend_all
        from retailgan.data.reftime import parse_as_of

        return recommend_all(model_dir, out, store=store, segment=segment or "all", k=k,
                             exclude_seen=not include_seen, explain=explain, block_size=block_size,
                             workers=workers, engine=engine, address=address, progress=True,
                             as_of=parse_as_of(as_of))

    summary = _run(go)
    if summary.ignored_events:
        console.print(f"note: {summary.ignored_events} event(s) dated after the reference time "
                      f"{summary.reference_time} were ignored (--as-of moves it)", highlight=False)
    console.print(f"wrote {summary.rows} recommendations for {summary.customers} customers to {out} "
                  f"({summary.model_version})", highlight=False)


@app.command()
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

    _run(go)


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
            _write_json_atomic(json_out, report.to_dict())

    _run(go)


# -- events sync ------------------------------------------------------------------------------

events_app = typer.Typer(no_args_is_help=True, help="The service's events in PostgreSQL (`serve --events-db`).")
app.add_typer(events_app, name="events")


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

    _run(go)


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
        _run(_compare, store, "temporal", models, tune_trials, "10,20", seed, 0.2, 1, None, None, 1, 1, None,
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


from retailgan.imagegen.cli import images_app  # noqa: E402  (the sub-app is defined after the main app)

app.add_typer(images_app, name="images")

from retailgan.campaign.cli import campaign_app  # noqa: E402

app.add_typer(campaign_app, name="campaign")


def main() -> None:  # pragma: no cover - console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
