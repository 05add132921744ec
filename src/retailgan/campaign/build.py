"""Build a campaign: segment -> per-customer top-K with reasons -> Parquet table, e-mails, banners, report.

Output directory: ``campaign.parquet`` (one row per recommended product, with its reason and image
source), ``emails/<stem>.html`` + ``.txt`` (self-contained HTML with inline images, and the plain-text
part), ``banners/<stem>.png``, ``summary.json`` and ``report.html`` / ``report.png``
(:mod:`retailgan.campaign.report`). ``<stem>`` is :func:`retailgan.campaign.render.email_stem`.

Streaming and resumable (the chunk machinery of :mod:`retailgan.jobs`, shared with batch
recommendations): the segment's customers (sorted by id) are processed in fixed-size chunks, in
this process or (``workers`` > 1) in a pool of processes or Ray actors (:mod:`retailgan.engines`);
each finished chunk leaves a Parquet part, its e-mails and banners in a work directory next to the
output (``.<out>.work``) and only then is recorded in ``progress.json`` there. A run that stops
(killed, crash) and is started again with the same arguments, store and model redoes only the
chunks not recorded (chunks may finish out of order with several workers); other arguments start
the work directory afresh. At the end the parts are merged one at a time into ``campaign.parquet``,
``summary.json`` and the report are written and the work directory is renamed to the output
directory in one step, so the output is either absent, the previous one, or complete. Nothing in
the output depends on timing or on the number of workers, so a resumed or parallel run is
byte-identical to an uninterrupted one. Memory is bounded by the chunk size (plus the model, the
prepared product images and the list of segment customer ids).

Expected revenue (``summary.json``): each customer is assumed to buy at most one of the products
sent, with probability :data:`CONVERSION_RATE`, spread over the K products in proportion to their
positive model scores::

    p(u, i) = CONVERSION_RATE * max(s_ui, 0) / sum_j max(s_uj, 0)      (uniform 1/K if all <= 0)
    expected_revenue = sum over customers u and products i of price_i * p(u, i)

Products without a known price add nothing. This is a planning figure, not a calibrated forecast.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from retailgan.batch import load_bundle
from retailgan.campaign import DEFAULT_CHUNK_SIZE
from retailgan.campaign.query import (
    parse_segment,
    parse_theme,
    recent_purchases,
    segment_customers,
    theme_mask,
)
from retailgan.campaign.render import (
    BANNER_TILES,
    EmailProduct,
    ProductImage,
    email_stem,
    prepare_image,
    render_banner,
    render_html,
    render_text,
)
from retailgan.campaign.report import write_report
from retailgan.data.images import get_images
from retailgan.data.reftime import AsOf
from retailgan.data.store import Store
from retailgan.engines import make_engine
from retailgan.errors import ConfigError, ModelFileError
from retailgan.explanations import explain_lists
from retailgan.jobs import (
    Chunks,
    JobProgress,
    fingerprint,
    finish_work,
    merge_parts,
    part_path,
    prepare_work,
    run_chunks,
    work_dir,
    write_json,
    write_part,
)
from retailgan.persistence import replace_directory
from retailgan.serving.engine import ModelBundle

log = logging.getLogger(__name__)

CONVERSION_RATE = 0.02
"""Assumed probability that a customer buys one product of the campaign (see the module docstring)."""

OUTPUT_FORMAT = 2
"""Bumped when the files a chunk leaves change (1: no images, banners or image column)."""
SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("rank", pa.int32()),
    ("product_id", pa.string()),
    ("title", pa.string()),
    ("price", pa.float64()),
    ("score", pa.float64()),
    ("reason", pa.string()),
    ("image", pa.string()),  # "photo" | "generated" | null (no image)
    ("model_version", pa.string()),
])


@dataclass(frozen=True)
class CampaignSummary:
    """What ``summary.json`` holds."""

    segment: str
    theme: str | None
    k: int
    recent_days: int
    reference_time: str | None
    """The "now" of ``recent:N`` and ``recent_days`` (:mod:`retailgan.data.reftime`), ISO, UTC."""
    ignored_events: int
    """Events dated after the reference time (ignored)."""
    model_version: str
    customers: int
    customers_with_products: int
    rows: int
    distinct_products: int
    catalogue_size: int
    catalogue_coverage: float
    diversity: float | None
    conversion_rate: float
    expected_revenue: float
    photo_share: float | None
    generated_image_share: float | None
    no_image_share: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _price(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


IMAGE_CACHE_MAX = 5_000
"""Prepared product images (PNG bytes) kept per process: the same products recur across customers."""
TILE_CACHE_MAX = 1_000
"""Banner tiles (128 x 162 RGB, about 62 KB each) kept per process."""


@dataclass
class CampaignContext:
    """Everything per-customer campaign work needs besides the store: the model, the validated
    options, the theme's candidate products and a cache of prepared product images.

    Shared by the batch build (one per process) and :func:`retailgan.campaign.customer.customer_campaign`,
    so that both produce the same products, reasons, e-mails and banners.
    """

    bundle: ModelBundle
    theme: str | None
    k: int
    recent_days: int
    candidates: list[str] | None
    titles: dict[str, str | None]
    images: dict[str, ProductImage | None] = field(default_factory=dict)
    tiles: dict[str, Any] = field(default_factory=dict)
    now: datetime | None = None
    """The reference time ``recent_days`` counts back from (:mod:`retailgan.data.reftime`)."""

    @classmethod
    def create(cls, bundle: ModelBundle, theme: str | None, k: int, recent_days: int) -> CampaignContext:
        """Validate the options against the model; raises :class:`ConfigError` naming the bad one."""
        if k < 1:
            raise ConfigError(f"--k must be >= 1, got {k}")
        if recent_days < 0:
            raise ConfigError(f"--recent-days must be >= 0, got {recent_days}")
        th = parse_theme(theme)
        ids = bundle.model.items.ids
        titles: dict[str, str | None] = {
            str(i): (None if t is None else str(t)) for i, t in zip(ids, bundle.titles, strict=True)
        }
        candidates = None
        if not th.empty:
            mask = theme_mask(th, bundle.titles, bundle.categories, bundle.prices, str(theme))
            candidates = [str(x) for x in ids[mask]]
        theme_text = theme.strip() if theme and theme.strip() else None
        return cls(bundle=bundle, theme=theme_text, k=k, recent_days=recent_days, candidates=candidates,
                   titles=titles)

    def product_images(self, store: Store, product_ids: list[str]) -> dict[str, ProductImage]:
        """Prepared images of these products (those that have one), read from the store once per run."""
        wanted = set(product_ids)
        if len(self.images) + len(wanted - self.images.keys()) > IMAGE_CACHE_MAX:
            self.images.clear()  # bounded memory; results do not depend on what is cached
        todo = sorted(wanted - self.images.keys())
        if todo:
            found = get_images(store, todo)
            for pid in todo:
                im = found.get(pid)
                self.images[pid] = None if im is None else prepare_image(im.png, im.generated)
        return {p: img for p in product_ids if (img := self.images.get(p)) is not None}


@dataclass(frozen=True)
class CustomerOutput:
    """One customer's rendered campaign."""

    customer_id: str
    products: list[EmailProduct]
    html: str
    text: str
    banner_png: bytes | None


def campaign_chunk(
    ctx: CampaignContext, store: Store, customers: list[str], *, banners: bool = True
) -> tuple[dict[str, list[Any]], list[CustomerOutput]]:
    """Rank, explain and render the campaign for ``customers``: the Parquet columns and one output each."""
    b = ctx.bundle
    model = b.model
    recent = recent_purchases(store, customers, ctx.recent_days, ctx.now)
    recs = model.top_k(customers, ctx.k, exclude_seen=False, exclude=[recent.get(u, []) for u in customers],
                       candidates=ctx.candidates)
    reasons = explain_lists(b, customers, recs.item_idx, recs.known, ctx.titles.get)
    per_customer: list[tuple[str, list[EmailProduct], list[float]]] = []
    for r, u in enumerate(customers):
        top = recs.item_idx[r][recs.item_idx[r] >= 0].astype(np.int64)
        products = []
        for rank, (j, reason) in enumerate(zip(top, reasons[r], strict=True), 1):
            pid = str(model.items.ids[j])
            products.append(EmailProduct(rank=rank, product_id=pid, title=ctx.titles.get(pid),
                                         price=_price(float(b.prices[j])), reason=reason))
        per_customer.append((u, products, [float(recs.scores[r, i]) for i in range(len(products))]))
    images = ctx.product_images(store, [p.product_id for _, ps, _ in per_customer for p in ps])
    cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    outputs: list[CustomerOutput] = []
    for u, products, scores in per_customer:
        products = [replace(p, image=img.kind if (img := images.get(p.product_id)) else None) for p in products]
        for p, score in zip(products, scores, strict=True):
            cols["customer_id"].append(u)
            cols["rank"].append(p.rank)
            cols["product_id"].append(p.product_id)
            cols["title"].append(p.title)
            cols["price"].append(p.price)
            cols["score"].append(score)
            cols["reason"].append(p.reason)
            cols["image"].append(p.image)
            cols["model_version"].append(b.label)
        if len(ctx.tiles) > TILE_CACHE_MAX - BANNER_TILES:
            ctx.tiles.clear()
        banner = render_banner(products, images, ctx.tiles) if banners else None
        outputs.append(CustomerOutput(
            customer_id=u, products=products, html=render_html(u, products, ctx.theme, images, banner),
            text=render_text(u, products, ctx.theme), banner_png=banner,
        ))
    return cols, outputs


def _write_chunk(ctx: CampaignContext, store: Store, work: Path, c: int, customers: list[str]) -> None:
    """Write chunk ``c``'s e-mails, banners and Parquet part into ``work`` (the part last, atomically)."""
    cols, outputs = campaign_chunk(ctx, store, customers)
    for o in outputs:
        stem = email_stem(o.customer_id)
        (work / "emails" / f"{stem}.html").write_text(o.html, "utf-8")
        (work / "emails" / f"{stem}.txt").write_text(o.text, "utf-8")
        if o.banner_png is not None:
            (work / "banners" / f"{stem}.png").write_bytes(o.banner_png)
    write_part(pa.table(cols, schema=SCHEMA), part_path(work, c))


@dataclass(frozen=True)
class _Workers:
    """Builds a worker process's chunk function (:class:`retailgan.jobs.WorkerFactory`): load the
    model, open the store read-only, once per process."""

    store_path: str
    model_dir: str
    label: str
    theme: str | None
    k: int
    recent_days: int
    now: datetime | None
    work: str

    def __call__(self) -> Callable[[int, list[str]], None]:
        b = load_bundle(self.model_dir, self.store_path)
        if b.label != self.label:
            raise ModelFileError(
                f"{self.model_dir}: the model changed during the campaign build ({self.label} -> {b.label})")
        # Several processes may read one DuckDB file at once, read-only; one thread each (the pool is the parallelism).
        store = Store.open(self.store_path, create=False, read_only=True, threads=1)
        if b.trend_days:  # the store's recent sales, as the main process and the service use
            b.set_recent_sales(store.recent_buyers(b.trend_days, self.now))
        ctx = CampaignContext.create(b, self.theme, self.k, self.recent_days)
        ctx.now = self.now
        return functools.partial(_write_chunk, ctx, store, Path(self.work))


def _expected_revenue(table: pa.Table) -> float:
    """Sum of price x p(u, i) over the rows of one part (see the module docstring)."""
    if table.num_rows == 0:
        return 0.0
    cust = table.column("customer_id").to_numpy(zero_copy_only=False)
    _, inv = np.unique(cust, return_inverse=True)
    s = np.maximum(table.column("score").to_numpy(zero_copy_only=False).astype(np.float64), 0.0)
    price = table.column("price").to_numpy(zero_copy_only=False).astype(np.float64)  # None -> NaN
    total = np.bincount(inv, weights=s)
    count = np.bincount(inv)
    share = np.where(total[inv] > 0, s / np.where(total[inv] > 0, total[inv], 1.0), 1.0 / count[inv])
    contrib = np.where(np.isfinite(price), price, 0.0) * CONVERSION_RATE * share
    return float(contrib.sum())


def build_campaign(
    store_path: str | Path,
    model_dir: str | Path,
    out: str | Path,
    *,
    segment: str = "all",
    theme: str | None = None,
    k: int = 10,
    recent_days: int = 30,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int = 1,
    engine: str = "local",
    address: str | None = None,
    progress: bool = False,
    after_chunk: Callable[[int], None] | None = None,
    as_of: AsOf = None,
) -> CampaignSummary:
    """Build the campaign into ``out`` (see the module docstring); returns its summary.

    ``workers`` > 1 processes chunks in that many processes (each loads the model once and opens
    the store read-only), of this machine (``engine`` "local") or of a Ray instance (``engine``
    "ray", at ``address``; :mod:`retailgan.engines`); the output is the same as with one.
    ``after_chunk(i)`` is called after chunk ``i`` (0-based) is recorded as finished (with
    several workers, in completion order).
    ``as_of`` sets the reference time ``recent:N`` and ``recent_days`` count back from
    (:mod:`retailgan.data.reftime`; default: the latest ingested event). Raises
    :class:`ConfigError` for bad queries, before anything is written.
    """
    store_path, model_dir, out = Path(store_path), Path(model_dir), Path(out)
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be >= 1, got {chunk_size}")
    runner = make_engine(engine, workers, address)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    seg = parse_segment(segment)
    if not store_path.is_file():
        raise FileNotFoundError(2, "no such file", str(store_path))
    b = load_bundle(model_dir, store_path)  # with the catalogue's unsold products, as the service loads it
    ctx = CampaignContext.create(b, theme, k, recent_days)
    params = {"segment": seg.text, "theme": ctx.theme, "k": k, "recent_days": recent_days,
              "chunk_size": chunk_size}
    work = work_dir(out)
    store = Store.open(store_path, create=False, read_only=True)
    try:
        # One resolved "now" for the whole build (every worker, every chunk, a resumed run).
        ref = store.reference_time(as_of)
        ctx.now = ref.ts
        params.update(reference_time=None if ref.ts is None else ref.ts.isoformat(), ignored_events=ref.ignored)
        if b.trend_days:  # a model that follows recent sales gets the store's, as the service does
            b.set_recent_sales(store.recent_buyers(b.trend_days, ref.ts))
        chunks = Chunks(segment_customers(store, seg, ref.ts), chunk_size)
        out.parent.mkdir(parents=True, exist_ok=True)
        # The output format is part of the fingerprint: work left by an older version is started afresh.
        fp = fingerprint({**params, "model": b.label, "format": OUTPUT_FORMAT}, chunks.items, [store_path])
        finished = prepare_work(work, fp, len(chunks), ("parts", "emails", "banners"))
        if not runner.in_process:
            store.close()  # the workers open their own read-only connections
        bar = JobProgress("campaign", "customers", len(chunks.items), sum(len(chunks[c]) for c in finished),
                          len(chunks), enabled=progress)
        try:
            run_chunks(chunks, work, fp, finished,
                       _Workers(str(store_path), str(model_dir), b.label, theme, k, recent_days, ref.ts, str(work)),
                       engine=runner, local=functools.partial(_write_chunk, ctx, store, work), progress=bar,
                       after_chunk=after_chunk)
        finally:
            bar.close()
    finally:
        store.close()
    summary = _finish(work, len(chunks), len(chunks.items), b, params)
    replace_directory(work, out)
    return summary


def _finish(work: Path, n_chunks: int, n_customers: int, b: ModelBundle, params: dict[str, Any]) -> CampaignSummary:
    """Merge the parts (one at a time) into campaign.parquet; write summary.json and the report."""
    with_products = 0
    revenue = 0.0
    sent: Counter[str] = Counter()
    kinds: Counter[str | None] = Counter()
    titles: dict[str, str | None] = {}

    def add(table: pa.Table) -> None:
        nonlocal with_products, revenue
        with_products += len(set(table.column("customer_id").to_pylist()))
        pids = table.column("product_id").to_pylist()
        sent.update(pids)
        titles.update(zip(pids, table.column("title").to_pylist(), strict=True))
        kinds.update(table.column("image").to_pylist())
        revenue += _expected_revenue(table)

    rows = merge_parts(work, n_chunks, SCHEMA, work / "campaign.parquet", add)
    n_items = int(b.model.n_items)

    def share(n: int) -> float | None:
        return round(n / rows, 6) if rows else None

    summary = CampaignSummary(
        segment=params["segment"], theme=params["theme"], k=params["k"], recent_days=params["recent_days"],
        reference_time=params["reference_time"], ignored_events=params["ignored_events"],
        model_version=b.label, customers=n_customers, customers_with_products=with_products, rows=rows,
        distinct_products=len(sent), catalogue_size=n_items,
        catalogue_coverage=len(sent) / n_items if n_items else 0.0,
        diversity=len(sent) / rows if rows else None,
        conversion_rate=CONVERSION_RATE, expected_revenue=round(revenue, 2),
        photo_share=share(kinds["photo"]), generated_image_share=share(kinds["generated"]),
        no_image_share=share(kinds[None]),
    )
    write_json(work / "summary.json", summary.to_dict())
    write_report(work, summary.to_dict(), sent, titles)
    finish_work(work)
    return summary
