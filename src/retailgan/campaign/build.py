"""Build a campaign: segment -> per-customer top-K with reasons -> Parquet table, e-mails, summary.

Streaming and resumable: the segment's customers (sorted by id) are processed in fixed-size chunks;
each finished chunk leaves a Parquet part and its e-mails in a work directory next to the output
(``.<out>.work``) and is then recorded in ``progress.json`` there. A run that stops (killed, crash)
and is started again with the same arguments, store and model continues after the last recorded
chunk; other arguments start the work directory afresh. At the end the parts are merged one at a
time into ``campaign.parquet``, ``summary.json`` is written and the work directory is renamed to
the output directory in one step, so the output is either absent, the previous one, or complete.
Nothing in the output depends on timing, so a resumed run is byte-identical to an uninterrupted one.
Memory is bounded by the chunk size (plus the model and the list of segment customer ids).

Expected revenue (``summary.json``): each customer is assumed to buy at most one of the products
sent, with probability :data:`CONVERSION_RATE`, spread over the K products in proportion to their
positive model scores::

    p(u, i) = CONVERSION_RATE * max(s_ui, 0) / sum_j max(s_uj, 0)      (uniform 1/K if all <= 0)
    expected_revenue = sum over customers u and products i of price_i * p(u, i)

Products without a known price add nothing. This is a planning figure, not a calibrated forecast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from retailgan.campaign import DEFAULT_CHUNK_SIZE
from retailgan.campaign.query import (
    parse_segment,
    parse_theme,
    recent_purchases,
    segment_customers,
    theme_mask,
)
from retailgan.campaign.render import EmailProduct, email_stem, render_html, render_text
from retailgan.data.store import Store
from retailgan.errors import ConfigError
from retailgan.explanations import explain_items
from retailgan.serving.engine import ModelBundle

log = logging.getLogger(__name__)

CONVERSION_RATE = 0.02
"""Assumed probability that a customer buys one product of the campaign (see the module docstring)."""

PROGRESS_FILE = "progress.json"
SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("rank", pa.int32()),
    ("product_id", pa.string()),
    ("title", pa.string()),
    ("price", pa.float64()),
    ("score", pa.float64()),
    ("reason", pa.string()),
    ("model_version", pa.string()),
])


@dataclass(frozen=True)
class CampaignSummary:
    """What ``summary.json`` holds."""

    segment: str
    theme: str | None
    k: int
    recent_days: int
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fingerprint(store_path: Path, version: str, customers: list[str], params: dict[str, Any]) -> str:
    h = hashlib.sha256()
    st = store_path.stat()
    h.update(json.dumps({**params, "store": str(store_path.resolve()), "store_size": st.st_size,
                         "store_mtime_ns": st.st_mtime_ns, "model": version}, sort_keys=True).encode())
    for c in customers:
        h.update(c.encode("utf-8") + b"\0")
    return h.hexdigest()


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _prepare_work(work: Path, fingerprint: str, n_chunks: int) -> int:
    """Return the number of chunks already finished in ``work`` (0 after starting it afresh)."""
    prog = work / PROGRESS_FILE
    if prog.is_file():
        try:
            state = json.loads(prog.read_text(encoding="utf-8"))
            if state.get("fingerprint") == fingerprint and 0 <= int(state.get("done", -1)) <= n_chunks:
                log.info("resuming %s after chunk %d of %d", work, state["done"], n_chunks)
                return int(state["done"])
        except (ValueError, OSError):
            pass  # an unreadable progress file means: start again
    if work.exists():
        shutil.rmtree(work)
    (work / "parts").mkdir(parents=True)
    (work / "emails").mkdir()
    _write_json(prog, {"fingerprint": fingerprint, "done": 0, "chunks": n_chunks})
    return 0


def _price(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def _chunk_rows(
    b: ModelBundle, customers: list[str], k: int, recent: dict[str, list[str]], candidates: list[str] | None,
    titles: dict[str, str | None],
) -> tuple[dict[str, list[Any]], dict[str, list[EmailProduct]]]:
    model = b.model
    recs = model.recommend(customers, k, exclude_seen=False, exclude=[recent.get(u, []) for u in customers],
                           candidates=candidates)
    uidx = model.users.index(customers, missing="negative")
    cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    emails: dict[str, list[EmailProduct]] = {}
    for r, u in enumerate(customers):
        top = recs.item_idx[r][recs.item_idx[r] >= 0].astype(np.int64)
        known = bool(recs.known[r])
        hist = b.seen_items(int(uidx[r])) if known else np.zeros(0, dtype=np.int64)
        reasons = explain_items(model, b.name, b.popularity, top, hist, "model" if known else "popular",
                                titles.get)
        products = []
        for rank, (j, rs) in enumerate(zip(top, reasons, strict=True), 1):
            pid = str(model.items.ids[j])
            title = titles.get(pid)
            price = _price(float(b.prices[j]))
            reason = "; ".join(x.text for x in rs)
            cols["customer_id"].append(u)
            cols["rank"].append(rank)
            cols["product_id"].append(pid)
            cols["title"].append(title)
            cols["price"].append(price)
            cols["score"].append(float(recs.scores[r, rank - 1]))
            cols["reason"].append(reason)
            cols["model_version"].append(b.label)
            products.append(EmailProduct(rank=rank, product_id=pid, title=title, price=price, reason=reason))
        emails[u] = products
    return cols, emails


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
    progress: bool = False,
    after_chunk: Callable[[int], None] | None = None,
) -> CampaignSummary:
    """Build the campaign into ``out`` (see the module docstring); returns its summary.

    ``after_chunk(i)`` is called after chunk ``i`` (0-based) is recorded as finished.
    Raises :class:`ConfigError` for bad queries, before anything is written.
    """
    store_path, model_dir, out = Path(store_path), Path(model_dir), Path(out)
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    if recent_days < 0:
        raise ConfigError(f"--recent-days must be >= 0, got {recent_days}")
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be >= 1, got {chunk_size}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    seg = parse_segment(segment)
    th = parse_theme(theme)
    b = ModelBundle.load(model_dir)
    ids = b.model.items.ids
    titles: dict[str, str | None] = {
        str(i): (None if t is None else str(t)) for i, t in zip(ids, b.titles, strict=True)
    }
    candidates = None
    if not th.empty:
        mask = theme_mask(th, b.titles, b.categories, b.prices, str(theme))
        candidates = [str(x) for x in ids[mask]]
    if not store_path.is_file():
        raise FileNotFoundError(2, "no such file", str(store_path))
    theme_text = theme.strip() if theme and theme.strip() else None
    with Store.open(store_path, create=False, read_only=True) as store:
        customers = segment_customers(store, seg)
        n_chunks = math.ceil(len(customers) / chunk_size)
        params = {"segment": seg.text, "theme": theme_text, "k": k, "recent_days": recent_days,
                  "chunk_size": chunk_size}
        work = out.parent / f".{out.name}.work"
        out.parent.mkdir(parents=True, exist_ok=True)
        fingerprint = _fingerprint(store_path, b.label, customers, params)
        done = _prepare_work(work, fingerprint, n_chunks)
        with Progress(TextColumn("campaign"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), disable=not progress) as bar:
            task = bar.add_task("customers", total=len(customers), completed=min(done * chunk_size, len(customers)))
            for c in range(done, n_chunks):
                chunk = customers[c * chunk_size:(c + 1) * chunk_size]
                recent = recent_purchases(store, chunk, recent_days)
                cols, emails = _chunk_rows(b, chunk, k, recent, candidates, titles)
                for u, products in emails.items():
                    stem = email_stem(u)
                    (work / "emails" / f"{stem}.html").write_text(render_html(u, products, theme_text), "utf-8")
                    (work / "emails" / f"{stem}.txt").write_text(render_text(u, products, theme_text), "utf-8")
                part = work / "parts" / f"part-{c:06d}.parquet"
                pq.write_table(pa.table(cols, schema=SCHEMA), part.with_suffix(".tmp"))
                os.replace(part.with_suffix(".tmp"), part)
                _write_json(work / PROGRESS_FILE, {"fingerprint": fingerprint, "done": c + 1, "chunks": n_chunks})
                bar.update(task, advance=len(chunk))
                if after_chunk is not None:
                    after_chunk(c)
    summary = _finish(work, n_chunks, len(customers), b, params)
    _swap_into(work, out)
    return summary


def _finish(work: Path, n_chunks: int, n_customers: int, b: ModelBundle, params: dict[str, Any]) -> CampaignSummary:
    """Merge the parts (one at a time) into campaign.parquet and write summary.json."""
    rows = 0
    with_products = 0
    revenue = 0.0
    products: set[str] = set()
    tmp = work / "campaign.parquet.tmp"
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for c in range(n_chunks):
            table = pq.read_table(work / "parts" / f"part-{c:06d}.parquet", schema=SCHEMA)
            writer.write_table(table)
            rows += table.num_rows
            with_products += len(set(table.column("customer_id").to_pylist()))
            products.update(table.column("product_id").to_pylist())
            revenue += _expected_revenue(table)
    os.replace(tmp, work / "campaign.parquet")
    n_items = int(b.model.n_items)
    summary = CampaignSummary(
        segment=params["segment"], theme=params["theme"], k=params["k"], recent_days=params["recent_days"],
        model_version=b.label, customers=n_customers, customers_with_products=with_products, rows=rows,
        distinct_products=len(products), catalogue_size=n_items,
        catalogue_coverage=len(products) / n_items if n_items else 0.0,
        diversity=len(products) / rows if rows else None,
        conversion_rate=CONVERSION_RATE, expected_revenue=round(revenue, 2),
    )
    _write_json(work / "summary.json", summary.to_dict())
    shutil.rmtree(work / "parts")
    (work / PROGRESS_FILE).unlink()
    return summary


def _swap_into(work: Path, out: Path) -> None:
    """Rename the finished work directory to ``out`` (replacing a previous output in one rename)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out)
