"""The service's use of the DuckDB store: catalogue, customer histories, durable event writes.

Events posted to ``POST /v1/events`` go to the ``events`` table with ``ingest_id`` =
:data:`API_INGEST_ID` (0; file ingests number from 1), committed before the response is sent: a
crash after a 2xx loses nothing. Requests that arrive while a commit runs share the next one
(:mod:`retailgan.serving.groupcommit`). Their ``event_key`` is the md5 of
the JSON list [``api``, customer, ``event_id``] (client-supplied, else generated), so a retried
request with the same event ids writes nothing twice.

DuckDB lets one process open a store for writing; the service therefore runs as one process
and serialises its store access with a lock (reads are a few milliseconds on Online Retail).
With ``--events-db`` the events go to PostgreSQL (:mod:`retailgan.serving.pgevents`) and every
process opens the store read-only, which DuckDB allows to many processes at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retailgan.data.images import ItemImage, get_image
from retailgan.data.reftime import API_INGEST_ID, AsOf
from retailgan.data.store import Store, fetch1
from retailgan.serving.engine import ModelBundle, Product
from retailgan.serving.groupcommit import GroupCommit

if TYPE_CHECKING:
    from retailgan.campaign.customer import CustomerCampaign
    from retailgan.forget import ForgetReport

API_SOURCE = "api"


def api_event_key(customer_id: str, event_id: str) -> int:
    """The stored ``event_key`` of an API event: DuckDB's ``md5_number`` of the JSON list
    [``api``, customer, event id], i.e. the md5 digest read as a little-endian integer."""
    payload = json.dumps([API_SOURCE, customer_id, event_id]).encode("utf-8")
    return int.from_bytes(hashlib.md5(payload).digest(), "little")


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    customer_id: str
    product_id: str
    event_type: str
    ts: datetime
    quantity: float | None
    price: float | None


def store_catalogue(store: Store) -> dict[str, Product]:
    """``product id -> Product`` for every product of the store's catalogue."""
    rows = store.con.execute("SELECT item_id, title, category, price FROM items").fetchall()
    return {str(i): Product(str(i), t, c, None if p is None or p != p else float(p)) for i, t, c, p in rows}


class ServiceStore:
    """A store connection shared by the service's threads (access is serialised)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = Path(path)
        # Read-only when events go to PostgreSQL: then any number of processes may open the file.
        self.read_only = read_only
        self.store = Store.open(self.path, create=False, read_only=read_only)
        self._lock = threading.Lock()
        self._writer = None if read_only else GroupCommit(self._write_groups, name="event-writer")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # what is queued is committed first
        with self._lock:
            self.store.close()

    def catalogue(self) -> dict[str, Product]:
        with self._lock:
            return store_catalogue(self.store)

    def image_flags(self) -> dict[str, bool]:
        """``product -> generated`` for catalogue products that have an image."""
        from retailgan.data.images import image_flags

        with self._lock:
            return image_flags(self.store)

    def image(self, product_id: str) -> ItemImage | None:
        with self._lock:
            return get_image(self.store, product_id)

    def campaign(self, bundle: ModelBundle, customer_id: str, **options: Any) -> CustomerCampaign:
        """One customer's campaign, exactly as ``retailgan campaign build`` makes it (same code)."""
        from retailgan.campaign.customer import customer_campaign

        with self._lock:
            return customer_campaign(bundle, self.store, customer_id, **options)

    def api_events(self) -> list[tuple[str, str, str]]:
        """(customer, product, event type) of every event written by the service."""
        with self._lock:
            return [
                (str(u), str(i), str(t))
                for u, i, t in self.store.con.execute(
                    "SELECT user_id, item_id, event_type FROM events WHERE ingest_id = ? ORDER BY ts",
                    [API_INGEST_ID],
                ).fetchall()
            ]

    def recent_buyers(self, days: int, as_of: AsOf = None) -> dict[str, int]:
        """:meth:`Store.recent_buyers` under the service's lock."""
        with self._lock:
            return self.store.recent_buyers(days, as_of)

    def has_customer(self, customer_id: str) -> bool:
        with self._lock:
            row = fetch1(self.store.con.execute("SELECT 1 FROM users WHERE user_id = ?", [customer_id]))
        return row is not None

    def history(self, customer_id: str, limit: int) -> list[tuple[str, str, datetime | None, float | None]]:
        """The customer's latest events (product, type, time, quantity), newest first."""
        with self._lock:
            rows = self.store.con.execute(
                "SELECT item_id, event_type, ts, quantity FROM events WHERE user_id = ? "
                "ORDER BY ts DESC NULLS LAST, item_id LIMIT ?",
                [customer_id, int(limit)],
            ).fetchall()
        return [(str(i), str(t), ts, q) for i, t, ts, q in rows]

    def top_customers(self, limit: int) -> list[tuple[str, int]]:
        """Customers with the most distinct products (for the merchandiser page)."""
        with self._lock:
            rows = self.store.con.execute(
                "SELECT user_id, count(DISTINCT item_id) AS n FROM events GROUP BY user_id "
                "ORDER BY n DESC, user_id LIMIT ?",
                [int(limit)],
            ).fetchall()
        return [(str(u), int(n)) for u, n in rows]

    def erase(self, customer_ids: Sequence[str], report: ForgetReport) -> None:
        """Delete the customers' rows and write the audit record in one transaction, then rewrite
        the store file (nothing of them stays on disk) and reopen it; requests wait meanwhile."""
        from retailgan.forget import delete_customer_rows, record, rewrite_store

        with self._lock:
            with self.store.transaction() as con:
                report.store = delete_customer_rows(con, customer_ids)
                record(con, report)
            self.store.close()
            try:
                rewrite_store(self.path)
            finally:
                self.store = Store.open(self.path, create=False)

    def write_events(self, events: Sequence[NewEvent]) -> int:
        """Commit the events (with whatever other requests queued meanwhile); returns how many were new."""
        if self._writer is None:
            raise RuntimeError(f"{self.path} is open read-only: events cannot be written to it")
        return self._writer.write(events)

    def _write_groups(self, groups: list[Sequence[NewEvent]]) -> list[int]:
        """Insert several requests' events in one committed transaction; per request, how many were new."""
        owner: dict[int, int] = {}  # event key -> the request that writes it (the first one in the group)
        rows: list[tuple[Any, ...]] = []
        for g, events in enumerate(groups):
            for e in events:
                key = api_event_key(e.customer_id, e.event_id)
                if key in owner:
                    continue  # the same event twice in one commit (a retry racing its original)
                owner[key] = g
                ts = e.ts.astimezone(timezone.utc).replace(tzinfo=None) if e.ts.tzinfo else e.ts
                rows.append((str(key), e.customer_id, e.product_id, ts, e.event_type, e.quantity, e.price))
        written = [0] * len(groups)
        if not rows:
            return written
        customers = sorted({r[1] for r in rows})
        values = ", ".join(["(?::UHUGEINT, ?, ?, ?::TIMESTAMP, ?, ?::DOUBLE, ?::DOUBLE)"] * len(rows))
        with self._lock, self.store.transaction() as con:
            # The key depends on the event id only, so a retry (even with another timestamp) writes nothing.
            new = con.execute(
                f"""
                INSERT INTO events
                SELECT k, u, i, ts, t, q, p, NULL, ? FROM (VALUES {values}) v(k, u, i, ts, t, q, p)
                WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.ingest_id = ? AND e.event_key = v.k)
                RETURNING event_key
                """,
                [API_INGEST_ID, *(x for r in rows for x in r), API_INGEST_ID],
            ).fetchall()
            con.execute(f"INSERT INTO users VALUES {', '.join(['(?, NULL)'] * len(customers))} ON CONFLICT DO NOTHING",
                        customers)
        for (key,) in new:
            written[owner[int(key)]] += 1
        return written
