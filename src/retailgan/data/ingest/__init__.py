"""Ingestion: raw behaviour logs -> cleaned events, items and users in the DuckDB store.

``ingest(store, source, fmt)`` reads a CSV / CSV.gz / TSV / Parquet / JSONL(.gz) file with
DuckDB, validates and cleans it with set-based SQL, and writes, in one transaction:
``events`` (new ones only), ``items`` and ``users`` (upserted), one ``rejects`` row per dropped
source row (with its reason and line) and one ``ingests`` row holding the
:class:`IngestReport` as JSON. Any error rolls the whole ingest back.

Line numbers
    CSV files are read with every column as VARCHAR and cast afterwards, so a row with a value
    of the wrong type goes to ``rejects`` with its line and the column (``invalid_value:<column>``;
    when most rows have one, the file is refused naming the first). Line ``n`` is the ``n-1``-th
    data record (header = line 1, or line ``n`` = record ``n`` for files without a header); this
    is the physical line unless the file has blank lines or quoted line breaks (DuckDB skips the
    former, the latter span lines): the report then carries a note. Parquet: the 1-based row
    number. JSONL: the 1-based record number.

Idempotency
    Every event gets ``event_key`` = the 128-bit md5 of its content (user, item, ts, type, quantity,
    price, rating and, for Online Retail, the invoice number; see ``sql._EVENT_KEY``), so
    re-ingesting rows that are already in the store inserts nothing, whatever file they come
    from. A source whose sha256 (and format, mapping, catalogue and
    options) matches an earlier ingest is not read again: the report says ``skipped``.

Limits
    Only regular files are read (a device or FIFO may never end); a header line is at most
    :data:`MAX_HEADER_BYTES`, a column name :data:`MAX_COLUMN_NAME` characters, a CSV line
    DuckDB's 2,000,000 bytes. A UTF-8 byte-order mark is skipped.

Formats (``fmt``): see :data:`FORMATS` and each ``_prepare_*`` function of ``prepare``.

Modules: ``formats`` (columns and cleaning rules), ``report`` (options and report), ``sources``
(which files), ``readers`` (files into DuckDB), ``sql`` (typed conversions, event key),
``prepare`` (per-format staging), ``write`` (validation and the one transaction), ``pipeline``
(:func:`ingest`).
"""

from __future__ import annotations

from retailgan.data.ingest.formats import (
    CATALOGUE_KEYS,
    FORMATS,
    MAPPING_KEYS,
    MOVIELENS_GENRES,
    NON_PRODUCT_CODES,
    NON_PRODUCT_PREFIXES,
    ONLINE_RETAIL_COLUMNS,
    REASONS,
    is_non_product_code,
)
from retailgan.data.ingest.pipeline import ingest
from retailgan.data.ingest.readers import MAX_COLUMN_NAME, MAX_HEADER_BYTES
from retailgan.data.ingest.report import Counts, IngestOptions, IngestReport, InputFile
from retailgan.data.ingest.sources import guess_format

__all__ = [
    "CATALOGUE_KEYS",
    "FORMATS",
    "MAPPING_KEYS",
    "MAX_COLUMN_NAME",
    "MAX_HEADER_BYTES",
    "MOVIELENS_GENRES",
    "NON_PRODUCT_CODES",
    "NON_PRODUCT_PREFIXES",
    "ONLINE_RETAIL_COLUMNS",
    "REASONS",
    "Counts",
    "IngestOptions",
    "IngestReport",
    "InputFile",
    "guess_format",
    "ingest",
    "is_non_product_code",
]
