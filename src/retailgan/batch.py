"""Batch recommendations: every customer's top-k into one Parquet table (``retailgan recommend --all``).

The job is "customer blocks -> :class:`BlockScorer` (the model loaded once per worker) -> one
Parquet part per block -> one atomic commit", run by the chunk machinery of :mod:`retailgan.jobs`
(resumable, progress with an estimate) on an engine of :mod:`retailgan.engines` (local processes
or Ray actors). :class:`BlockScorer` holds no global state and needs no store after loading, so
any engine that can call a function on a list of customer ids can run it.

Customers: with a store, the segment's (campaign syntax, :func:`retailgan.campaign.query.parse_segment`;
``all`` by default) as of the reference time (:mod:`retailgan.data.reftime`); without one, the
model's own customers. Sorted by id, so blocks, parts and the output do not depend on the number
of workers or on a resume. Customers the model cannot personalise for get the popularity ranking,
as in ``recommend``. Lists come from :meth:`retailgan.models.base.Recommender.top_k` (the lists
of ``recommend`` without its dense float64 matrix); memory is bounded by the block size (plus
the model and the list of customer ids).

Output columns: ``customer_id``, ``rank`` (1 = best), ``product_id``, ``score`` (float32),
``reason`` (with ``explain``: the reasons of :mod:`retailgan.explanations`, joined by "; "),
``model_version``; one row per recommended product, customers in id order.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from retailgan.data.reftime import AsOf
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
    write_part,
)
from retailgan.models.base import FORGOTTEN_PREFIX
from retailgan.serving.engine import ModelBundle

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 2000
"""Customers per block (one model call, one Parquet part, one resumable unit)."""
OUTPUT_FORMAT = 1
"""Bumped when the part files change (part of the fingerprint)."""
DEFAULT_MIN_RECALL = 0.9
"""An approximate index whose recall@k against exact is below this refuses the job."""
RECALL_SAMPLE = 2000
"""Customers the recall gate compares (seeded)."""


def schema(explain: bool) -> pa.Schema:
    """The output table's columns (``reason`` only with ``explain``)."""
    cols = [("customer_id", pa.string()), ("rank", pa.int32()), ("product_id", pa.string()),
            ("score", pa.float32())]
    if explain:
        cols.append(("reason", pa.string()))
    cols.append(("model_version", pa.string()))
    return pa.schema(cols)


@dataclass(frozen=True)
class BatchOptions:
    """What a worker needs to score blocks (picklable)."""

    model_dir: str
    k: int = 10
    exclude_seen: bool = True
    explain: bool = False
    store: str | None = None
    """Read once at load, for the recent sales of a model that follows them (``trend_days``)."""
    now: datetime | None = None
    """The reference time of those recent sales."""
    label: str | None = None
    """The model version the job started with (a worker refuses another)."""
    index: str = "exact"
    """Product index the lists are ranked through (:meth:`Recommender.use_index`)."""
    index_params: tuple[tuple[str, Any], ...] = ()


class BlockScorer:
    """Scores blocks of customers with one loaded model: ``scorer(customer_ids) -> pa.Table``."""

    def __init__(self, bundle: ModelBundle, options: BatchOptions) -> None:
        self.bundle, self.options = bundle, options
        self.schema = schema(options.explain)
        info = bundle.model.item_info
        self._titles = {str(i): (None if t is None else str(t))
                        for i, t in zip(bundle.model.items.ids, info.titles, strict=True)}

    @classmethod
    def load(cls, options: BatchOptions) -> BlockScorer:
        """Load the model (and, with a store, its catalogue products without sales for a model
        with ``add_products``, and recent sales for a ``trend_days`` model)."""
        b = load_bundle(options.model_dir, options.store)
        if b.trend_days and options.store is not None:
            from retailgan.data.store import Store

            with Store.open(options.store, create=False, read_only=True, threads=1) as store:
                b.set_recent_sales(store.recent_buyers(b.trend_days, options.now))
        if options.label is not None and b.label != options.label:
            raise ModelFileError(f"{options.model_dir}: the model changed during the batch job "
                                 f"({options.label} -> {b.label})")
        if options.index != "exact":
            b.model.use_index(options.index, **dict(options.index_params))
        return cls(b, options)

    def __call__(self, customers: Sequence[str]) -> pa.Table:
        b, opts = self.bundle, self.options
        model = b.model
        recs = model.top_k(list(customers), opts.k, exclude_seen=opts.exclude_seen)
        valid = recs.item_idx >= 0
        counts = valid.sum(axis=1)
        cols: dict[str, Any] = {
            "customer_id": np.repeat(np.asarray(customers, dtype=object), counts),
            "rank": np.nonzero(valid)[1].astype(np.int32) + 1,
            "product_id": recs.item_ids[valid],
            "score": recs.scores[valid].astype(np.float32),
        }
        if opts.explain:
            reasons = explain_lists(b, recs.user_ids, recs.item_idx, recs.known, self._titles.get)
            cols["reason"] = [text for texts in reasons for text in texts]
        cols["model_version"] = [b.label] * int(counts.sum())
        return pa.table(cols, schema=self.schema)


def load_bundle(model_dir: str | Path, store: str | Path | None) -> ModelBundle:
    """The model, with the store's catalogue products without sales when it embeds products from
    content (``add_products``), as the service loads it."""
    if store is None:
        return ModelBundle.load(model_dir)
    from retailgan.data.store import Store
    from retailgan.serving.storage import store_catalogue

    with Store.open(store, create=False, read_only=True, threads=1) as st:
        catalogue = store_catalogue(st)
    return ModelBundle.load(model_dir, catalogue)


def write_block(scorer: BlockScorer, work: Path, c: int, customers: list[str]) -> None:
    """Score block ``c`` and write its part file (atomically)."""
    write_part(scorer(customers), part_path(work, c))


@dataclass(frozen=True)
class _Workers:
    """A worker process's block function (:class:`retailgan.jobs.WorkerFactory`)."""

    options: BatchOptions
    work: str

    def __call__(self) -> Callable[[int, list[str]], None]:
        return functools.partial(write_block, BlockScorer.load(self.options), Path(self.work))


@dataclass(frozen=True)
class BatchSummary:
    """What a finished batch job reports."""

    out: str
    customers: int
    rows: int
    k: int
    model_version: str
    segment: str | None
    reference_time: str | None
    ignored_events: int
    index: str = "exact"
    recall: float | None = None
    """Recall@k of the index's lists against the exact ones on ``recall_customers`` sampled
    customers (None with the exact index)."""
    recall_customers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recommend_all(
    model_dir: str | Path,
    out: str | Path,
    *,
    store: str | Path | None = None,
    segment: str = "all",
    k: int = 10,
    exclude_seen: bool = True,
    explain: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
    engine: str = "local",
    address: str | None = None,
    progress: bool = False,
    after_block: Callable[[int], None] | None = None,
    as_of: AsOf = None,
    index: str = "exact",
    index_params: dict[str, Any] | None = None,
    min_recall: float = DEFAULT_MIN_RECALL,
    recall_sample: int = RECALL_SAMPLE,
) -> BatchSummary:
    """Write every customer's top-``k`` to the Parquet file ``out`` (module docstring).

    ``workers`` > 1 scores blocks in that many processes, of this machine (``engine`` "local")
    or of a Ray instance (``engine`` "ray", at ``address``; :mod:`retailgan.engines`); the output
    is the same whatever the engine and the number of workers. ``after_block(i)`` is
    called after block ``i`` is recorded as finished. Raises :class:`ConfigError` for bad
    arguments before anything is written.

    ``index`` "ivf" or "hnsw" ranks through an approximate faiss index (models with a retrieval
    space: ials, bpr, featgan; ``index_params`` go to :class:`retailgan.index.FaissIndex`). Its
    recall gate runs before any block: recall@k of its lists against the exact ones on a seeded
    sample of ``recall_sample`` of the job's customers (:func:`index_recall`); below
    ``min_recall`` the job refuses with :class:`ConfigError`. The recall is in the summary and
    in the Parquet file's metadata (``retailgan.index``, ``retailgan.recall``).
    """
    model_dir, out = Path(model_dir), Path(out)
    store_path = None if store is None else Path(store)
    for name, value in (("--k", k), ("--block-size", block_size), ("--workers", workers),
                        ("--recall-sample", recall_sample)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if not 0.0 <= min_recall <= 1.0:
        raise ConfigError(f"--min-recall must be in [0, 1], got {min_recall}")
    if out.is_dir():
        raise ConfigError(f"{out}: is a directory (give the Parquet file to write)")
    if store_path is None and (segment.strip() != "all" or as_of is not None):
        raise ConfigError("--segment and --as-of need --store (the customers and their purchase dates)")
    if store_path is not None and not store_path.is_file():
        raise FileNotFoundError(2, "no such file", str(store_path))
    runner = make_engine(engine, workers, address)
    b = load_bundle(model_dir, None if store_path is None else str(store_path))
    seg_text, ref_ts, ignored = None, None, 0
    if store_path is None:
        customers = sorted(str(u) for u in b.model.users.ids if not str(u).startswith(FORGOTTEN_PREFIX))
    else:
        from retailgan.campaign.query import parse_segment, segment_customers
        from retailgan.data.store import Store

        seg = parse_segment(segment)
        seg_text = seg.text
        with Store.open(store_path, create=False, read_only=True) as st:
            ref = st.reference_time(as_of)
            ref_ts, ignored = ref.ts, ref.ignored
            customers = segment_customers(st, seg, ref.ts)
            if b.trend_days:  # a model that follows recent sales gets the store's, as the service does
                b.set_recent_sales(st.recent_buyers(b.trend_days, ref.ts))
    params_items = tuple(sorted((index_params or {}).items()))
    recall, recall_n = None, 0
    if index != "exact":
        recall, recall_n = index_recall(b.model, customers, k, exclude_seen, index, dict(params_items),
                                        recall_sample)
        log.info("recall@%d of the %s index against exact: %.4f (%d customers)", k, index, recall, recall_n)
        if recall < min_recall:
            raise ConfigError(f"{model_dir}: recall@{k} of the {index} index against the exact lists is "
                              f"{recall:.4f} on {recall_n} sampled customers, below --min-recall {min_recall}: "
                              "search more of it (nprobe / ef_search) or use --index exact")
    options = BatchOptions(model_dir=str(model_dir), k=k, exclude_seen=exclude_seen, explain=explain,
                           store=None if store_path is None else str(store_path), now=ref_ts, label=b.label,
                           index=index, index_params=params_items)
    chunks = Chunks(customers, block_size)
    work = work_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"model": b.label, "k": k, "exclude_seen": exclude_seen, "explain": explain, "block_size": block_size,
              "segment": seg_text, "reference_time": None if ref_ts is None else ref_ts.isoformat(),
              "format": OUTPUT_FORMAT, "index": [index, [list(p) for p in params_items]]}
    fp = fingerprint(params, customers, [] if store_path is None else [store_path])
    finished = prepare_work(work, fp, len(chunks))
    bar = JobProgress("recommend", "customers", len(customers), sum(len(chunks[c]) for c in finished),
                      len(chunks), enabled=progress)
    local = functools.partial(write_block, BlockScorer(b, options), work)
    try:
        run_chunks(chunks, work, fp, finished, _Workers(options, str(work)), engine=runner, local=local,
                   progress=bar, after_chunk=after_block)
    finally:
        bar.close()
    tmp = work / out.name
    meta = {"retailgan.index": index, "retailgan.index_params": json.dumps(dict(params_items)),
            "retailgan.recall": "" if recall is None else f"{recall:.6f}",
            "retailgan.recall_customers": str(recall_n)}
    rows = merge_parts(work, len(chunks), schema(explain).with_metadata(meta), tmp)
    tmp.replace(out)  # the commit: the output appears complete, in one rename
    finish_work(work)
    shutil.rmtree(work, ignore_errors=True)
    return BatchSummary(out=str(out), customers=len(customers), rows=rows, k=k, model_version=b.label,
                        segment=seg_text, reference_time=params["reference_time"], ignored_events=ignored,
                        index=index, recall=recall, recall_customers=recall_n)


def index_recall(model: Any, customers: Sequence[str], k: int, exclude_seen: bool, index: str,
                 params: dict[str, Any], sample: int = RECALL_SAMPLE, seed: int = 0) -> tuple[float, int]:
    """Recall@k of ``index``'s lists against the exact lists on a seeded sample of ``sample``
    customers (the share of each exact list the index found, averaged over customers with a
    list); leaves ``model`` ranking through ``index``. Returns (recall, customers measured)."""
    pick = np.sort(np.random.default_rng(seed).permutation(len(customers))[:sample])
    users = [customers[i] for i in pick]
    model.use_index("exact")
    exact = model.top_k(users, k, exclude_seen=exclude_seen).item_idx
    model.use_index(index, **params)
    approx = model.top_k(users, k, exclude_seen=exclude_seen).item_idx
    hits, sizes = [], []
    for e, a in zip(exact, approx, strict=True):
        e = e[e >= 0]
        if len(e):
            hits.append(len(np.intersect1d(e, a[a >= 0])))
            sizes.append(len(e))
    if not sizes:
        return 1.0, 0
    return float(np.mean(np.asarray(hits) / np.asarray(sizes))), len(sizes)
