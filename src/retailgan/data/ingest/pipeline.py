"""The ingest entry point: resolve and digest the inputs, skip a known source, stage, validate, write."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from retailgan.data.ingest.formats import FORMATS
from retailgan.data.ingest.prepare import _PREPARE
from retailgan.data.ingest.readers import _kind
from retailgan.data.ingest.report import Counts, IngestOptions, IngestReport, _options
from retailgan.data.ingest.sources import _check_mapping, _digest, _format_hint, _resolve_inputs, _Spec
from retailgan.data.ingest.write import _refuse_if_mostly_bad, _session, _step, _write
from retailgan.data.store import Store, check_writable, fetch1, write_failure
from retailgan.errors import IngestError


def ingest(
    store_path: str | Path,
    source_path: str | Path,
    fmt: str = "online-retail",
    *,
    mapping: Mapping[str, str] | None = None,
    catalogue: str | Path | None = None,
    catalogue_mapping: Mapping[str, str] | None = None,
    options: IngestOptions | Mapping[str, Any] | None = None,
) -> IngestReport:
    """Clean ``source_path`` (format ``fmt``) into the store at ``store_path`` (created if absent).

    ``mapping``: for ``events``, store field -> source column (keys :data:`MAPPING_KEYS`); for
    ``online-retail``, canonical column (:data:`ONLINE_RETAIL_COLUMNS`) -> source column, for
    variants with other header names. ``catalogue``: a product file (``events``), or a replacement
    for the format's own (``u.item``, ``item_meta.csv.gz``, ``*_item2attributes.json``);
    ``catalogue_mapping``: item/title/category/price -> catalogue column.

    Raises :class:`IngestError` for bad input (nothing is written), :class:`StoreError` when the
    store cannot be opened, :class:`ConfigError` for invalid arguments.
    """
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    opts = _options(options)
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}",
                          path=source_path)
    store_file = Path(store_path)
    check_writable(store_file)  # before reading a possibly large source
    spec = _resolve_inputs(fmt, Path(source_path), catalogue)
    mapping = _check_mapping(fmt, mapping, catalogue_mapping, spec)
    inputs = [_digest(p, role) for role, p in spec.files()]
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "format": fmt,
                "inputs": [[i.role, i.sha256] for i in inputs],
                "mapping": mapping,
                "catalogue_mapping": dict(catalogue_mapping or {}),
                "options": opts.model_dump(mode="json", exclude={"force", "dataset_name"}),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    base = {
        "source": str(spec.main.absolute()),
        "format": fmt,
        "sha256": inputs[0].sha256,
        "fingerprint": fingerprint,
        "inputs": [i.model_dump() for i in inputs],
        "started_at": started.isoformat(sep=" ", timespec="seconds"),
        "mapping": dict(mapping) if mapping else None,
        "catalogue_mapping": dict(catalogue_mapping) if catalogue_mapping else None,
        "options": opts.model_dump(mode="json", exclude_defaults=True),
    }

    created = not store_file.exists()
    try:
        with _store_failures(store_file), Store.open(store_file, create=True) as store:
            con = store.con
            before = Counts(**store.counts())
            if not opts.force:
                prev = fetch1(con.execute(
                    "SELECT ingest_id FROM ingests WHERE format = ? AND sha256 = ? "
                    "AND json_extract_string(report, '$.fingerprint') = ? ORDER BY ingest_id LIMIT 1",
                    [fmt, inputs[0].sha256, fingerprint],
                ))
                if prev is not None:
                    return IngestReport(
                        ingest_id=None,
                        skipped=True,
                        skipped_reason=f"identical input already ingested (ingest #{prev[0]}); "
                        "nothing was read or written (--force re-reads it)",
                        before=before,
                        after=before,
                        duration_s=round(time.perf_counter() - t0, 3),
                        **base,
                    )
            with _session(con), _lazy_read_errors(spec), _format_hint(spec.main, fmt, opts):
                with _step(f"read and stage {spec.main.name}"):
                    prep = _PREPARE[fmt](con, spec, mapping, catalogue_mapping or {}, opts)
                with _step("validate types"):
                    _refuse_if_mostly_bad(con, prep)
                report = _write(store, prep, fmt, spec, opts, before, base, t0)
    except BaseException:
        if created:  # leave no half-made store behind for a failed first ingest
            for p in (store_file, Path(f"{store_file}.wal")):
                with suppress(OSError):  # e.g. a read-only folder: keep the original error
                    p.unlink(missing_ok=True)
        raise
    return report


@contextmanager
def _lazy_read_errors(spec: _Spec) -> Iterator[None]:
    """Name the Parquet input in a DuckDB error raised while staging or writing.

    A Parquet source is a view that DuckDB decodes lazily (an extra full scan to validate it
    up front would cost ~10 % of a large ingest), so a corrupt page ("Snappy decompression
    failure", "Out of buffer") fails whichever statement first reads it. With a Parquet input,
    any DuckDB error that is not a store write failure is taken as that file's.
    """
    try:
        yield
    except duckdb.Error as exc:
        parquet = [p for _, p in spec.files() if _kind(p)[0] == "parquet"]
        if not parquet or write_failure(spec.main, exc) is not None:
            raise
        msg = str(exc)
        path = next((p for p in parquet if str(p) in msg), parquet[0])
        first = re.sub(r"^([A-Za-z]+ )*Error: ", "", msg.splitlines()[0] if msg else "")
        first = re.sub(r'^Failed to read file "[^"]*": ', "", first).replace(f' "{path}"', "")
        raise IngestError(f"corrupt Parquet data ({first or type(exc).__name__})",
                          path=path) from exc


@contextmanager
def _store_failures(path: Path) -> Iterator[None]:
    """Turn a DuckDB error caused by the file system (a folder that is not writable, a full
    disk) into a one-line StoreError; the transaction has rolled back."""
    try:
        yield
    except duckdb.Error as exc:
        failure = write_failure(path, exc)
        if failure is None:
            raise
        raise failure from exc
