"""Erasing customers on request (``retailgan forget``, ``POST /admin/customers/forget``).

Where a customer's data lives, and what erasing does there:

* the store: their ``events`` and ``users`` rows are deleted, and every ``rejects`` row whose
  source record names them (a field equal to the id, ``17850.0`` matching ``17850``; erring
  towards erasure, a rejected row with any other field equal to the id goes too). DuckDB keeps
  deleted rows' bytes in the file, so the store is then rewritten into a new file that replaces
  it in one rename: nothing of them remains on disk;
* model directories: :meth:`retailgan.models.base.Recommender.forget_users` empties their
  history, blanks their per-customer parameters and replaces their id with a random tombstone;
  the directory is replaced atomically. Parameters shared by all customers keep what they learned
  from their data until the next retraining (the audit record says which models were touched);
* campaign outputs (``campaign build --out``): their rows of ``campaign.parquet`` and their
  e-mail and banner files;
* the service: its fold-in view and its loaded model (the endpoint calls the same functions).

An audit record goes to the store's ``erasures`` table: when, the operator's reference (a ticket
number), and how many rows each place lost; never the customer id. A customer erased from the
store comes back if a source log that still holds them is ingested again: erase them from the
sources too. Everything is checked before anything changes; every step is atomic, and running
the same request again is harmless.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from retailgan.data.schemas import PADDING
from retailgan.data.store import Store
from retailgan.errors import ConfigError

ERASURES_DDL = (
    "CREATE TABLE IF NOT EXISTS erasures (erasure_id VARCHAR PRIMARY KEY, erased_at TIMESTAMP NOT NULL, "
    "reference VARCHAR, customers INTEGER NOT NULL, report JSON NOT NULL)"
)
_FIELD_SPLIT = re.compile(r"[,;\t|]|::")


@dataclass
class ForgetReport:
    """What one erasure removed (no customer ids: this is the audit record)."""

    erasure_id: str
    at: str
    reference: str | None
    customers: int
    """Customer ids in the request."""
    store: dict[str, int] = field(default_factory=dict)
    """Rows deleted per table."""
    models: dict[str, int] = field(default_factory=dict)
    """Model directory -> customers it knew (their rows blanked)."""
    campaigns: dict[str, int] = field(default_factory=dict)
    """Campaign directory -> rows deleted from campaign.parquet."""
    service: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_report(customer_ids: Sequence[str], reference: str | None) -> ForgetReport:
    return ForgetReport(erasure_id=uuid.uuid4().hex, at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        reference=reference, customers=len(customer_ids))


def check_ids(customer_ids: Iterable[object]) -> list[str]:
    """The request's ids, stripped and deduplicated; an empty or blank id is an error."""
    ids = sorted({str(c).strip(PADDING) for c in customer_ids})
    if not ids or "" in ids:
        raise ConfigError("forget: give at least one non-empty customer id")
    return ids


def _normal(value: object) -> str:
    text = str(value).strip()
    return text[:-2] if text.endswith(".0") else text


def _names_customer(raw: str | None, ids: set[str]) -> bool:
    """Whether a rejected source record (JSON object or delimited line) has a field equal to an id."""
    if not raw:
        return False
    try:
        record = json.loads(raw)
        values = record.values() if isinstance(record, dict) else record if isinstance(record, list) else [record]
    except (json.JSONDecodeError, TypeError):
        values = _FIELD_SPLIT.split(raw)
    return any(v is not None and _normal(v) in ids for v in values)


def delete_customer_rows(con: duckdb.DuckDBPyConnection, customer_ids: Sequence[str]) -> dict[str, int]:
    """Delete the customers' events, users and rejects rows (call inside a transaction)."""
    ids = list(customer_ids)
    counts = {}
    for table in ("events", "users"):
        row = con.execute(f"DELETE FROM {table} WHERE user_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()
        counts[table] = int(row[0][0]) if row else 0
    wanted = {_normal(i) for i in ids}
    pattern = "|".join(re.escape(i) for i in sorted(wanted))
    candidates = con.execute("SELECT rowid, raw FROM rejects WHERE regexp_matches(raw, ?)", [pattern]).fetchall()
    doomed = [int(r) for r, raw in candidates if _names_customer(raw, wanted)]
    if doomed:
        con.execute("DELETE FROM rejects WHERE rowid IN (SELECT unnest(?::BIGINT[]))", [doomed])
    counts["rejects"] = len(doomed)
    return counts


def record(con: duckdb.DuckDBPyConnection, report: ForgetReport) -> None:
    """Write the audit record (no customer ids) into the store's ``erasures`` table."""
    con.execute(ERASURES_DDL)
    con.execute("INSERT INTO erasures VALUES (?, ?, ?, ?, ?)",
                [report.erasure_id, datetime.fromisoformat(report.at).replace(tzinfo=None), report.reference,
                 report.customers, json.dumps(report.to_dict())])


def rewrite_store(path: Path) -> None:
    """Copy the store into a fresh file and rename it over the old one: deleted rows' bytes, which
    DuckDB leaves in place, are gone. The store must not be open anywhere (O(store size))."""
    tmp = path.with_name(f".{path.name}.rewrite-{os.getpid()}")
    for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
        stale.unlink(missing_ok=True)
    try:
        con = duckdb.connect(":memory:")
        try:
            con.execute("ATTACH ? AS old (READ_ONLY)", [str(path)])
            con.execute("ATTACH ? AS new", [str(tmp)])
            con.execute("COPY FROM DATABASE old TO new")
            con.execute("DETACH new")
            con.execute("DETACH old")
        finally:
            con.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        Path(str(path) + ".wal").unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)


def forget_in_model(model_dir: Path, customer_ids: Sequence[str]) -> int:
    """Erase the customers from a saved model directory (replaced atomically); returns how many it knew."""
    from retailgan.persistence import load_model

    model = load_model(model_dir)
    n = model.forget_users(customer_ids)
    if n:
        model.save(model_dir)
    return n


def forget_in_campaign(out: Path, customer_ids: Sequence[str]) -> int:
    """Remove the customers' rows from ``out/campaign.parquet`` (rewritten atomically) and their
    e-mail and banner files; returns the rows removed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from retailgan.campaign.render import email_stem

    path = out / "campaign.parquet"
    table = pq.read_table(path)
    drop = pc.is_in(table.column("customer_id"), value_set=pa.array(list(customer_ids)))
    removed = int(pc.sum(drop).as_py() or 0)
    if removed:
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table.filter(pc.invert(drop)), tmp)
        os.replace(tmp, path)
    for c in customer_ids:
        stem = email_stem(c)
        for f in (out / "emails" / f"{stem}.html", out / "emails" / f"{stem}.txt", out / "banners" / f"{stem}.png"):
            f.unlink(missing_ok=True)
    return removed


def forget(
    store_path: str | Path,
    customer_ids: Iterable[object],
    *,
    model_dirs: Sequence[str | Path] = (),
    campaign_dirs: Sequence[str | Path] = (),
    reference: str | None = None,
    events_db: str | None = None,
) -> ForgetReport:
    """Erase customers from the store, the named model directories and campaign outputs, and the
    events of a service's PostgreSQL database (``serve --events-db``) when given (module
    docstring); returns the audit record, also written to the store."""
    from retailgan.persistence import read_meta

    ids = check_ids(customer_ids)
    store_path = Path(store_path)
    models = [Path(m) for m in model_dirs]
    campaigns = [Path(c) for c in campaign_dirs]
    # Check everything first: nothing changes unless every place can be erased.
    for m in models:
        read_meta(m)
    for c in campaigns:
        if not (c / "campaign.parquet").is_file():
            raise ConfigError(f"{c}: not a campaign output (no campaign.parquet)")
    Store.open(store_path, create=False).close()  # exists, is a store, is not in use
    shared = None
    if events_db:
        from retailgan.serving.pgevents import PgEventStore

        shared = PgEventStore(events_db)
    report = new_report(ids, reference)
    if shared is not None:
        try:
            report.store["events_db_events"] = shared.erase(ids)
        finally:
            shared.close()
    for m in models:
        report.models[str(m)] = forget_in_model(m, ids)
    for c in campaigns:
        report.campaigns[str(c)] = forget_in_campaign(c, ids)
    with Store.open(store_path, create=False) as store, store.transaction() as con:
        report.store = {**delete_customer_rows(con, ids), **report.store}
        record(con, report)
    rewrite_store(store_path)
    return report

