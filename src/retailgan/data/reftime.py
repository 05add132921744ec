"""What "now" is: the reference time every recency rule measures back from.

Segments (``recent:N``), ``--recent-days``, recent sales (the ``recent`` model, featgan
``trend_days``, the service's sales windows) and the datasets models are trained on all use one
reference time:

* by default, the latest event of the ingested logs (``retailgan ingest``). Events the service
  wrote (``POST /v1/events``) count up to it but never move it: one event stamped with today's
  date in a store of last year's log does not redefine "now" for every customer;
* with ``as_of``, the time given (``--as-of 2011-12-01`` or ``2011-12-01T12:00``, UTC), or
  ``now``: the wall clock at the moment it is used (a production service or a nightly job whose
  events arrive through the service).

Events dated after the reference time are ignored everywhere (not trusted) and counted, so the
commands can report them. A store whose only events came from the service uses its latest
event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import duckdb

from retailgan.errors import ConfigError

FUTURE_SLACK = timedelta(days=1)
"""Ingest rejects rows (``future_timestamp``) and the service refuses events dated later than
the wall clock plus this: a shop's local "today" is within it in every time zone."""

API_INGEST_ID = 0
"""``events.ingest_id`` of events written by the service (file ingests number from 1)."""

AsOf = datetime | Literal["now"] | None
"""A reference-time setting: a naive UTC time, ``"now"`` (the wall clock when used), or ``None``
(the latest ingested event)."""


def parse_as_of(text: str | None) -> AsOf:
    """``--as-of``: ``None`` / empty -> default rule, ``now``, or an ISO date / time (UTC)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.lower() == "now":
        return "now"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--as-of must be 'now' or an ISO date / time such as 2011-12-01 or 2011-12-01T12:00, got {text!r}"
        ) from None
    return to_utc(ts)


def to_utc(ts: datetime) -> datetime:
    """A naive UTC time (the store's TIMESTAMP columns hold naive UTC)."""
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


@dataclass(frozen=True)
class ReferenceTime:
    """The resolved "now" of a store and how many events lie beyond it."""

    ts: datetime | None
    """Naive UTC; ``None`` when the store has no timestamped events."""
    rule: str
    """How it was chosen: ``as-of``, ``now``, ``latest ingested event`` or ``latest event``."""
    ignored: int
    """Events dated after :attr:`ts` (ignored by every recency rule and every dataset)."""

    def notice(self) -> str | None:
        """One line for the user when events were ignored, else ``None``."""
        if not self.ignored or self.ts is None:
            return None
        return (
            f"{self.ignored} event(s) dated after the reference time {self.ts:%Y-%m-%d %H:%M} "
            f"({self.rule}) are ignored; pass --as-of to move it"
        )


def reference_time(con: duckdb.DuckDBPyConnection, as_of: AsOf = None) -> ReferenceTime:
    """Resolve ``as_of`` against the store open on ``con`` (module docstring)."""
    if as_of == "now":
        ts, rule = datetime.now(timezone.utc).replace(tzinfo=None), "now"
    elif isinstance(as_of, datetime):
        ts, rule = to_utc(as_of), "as-of"
    else:
        row = con.execute(
            "SELECT max(ts) FILTER (WHERE ingest_id <> ?), max(ts) FROM events", [API_INGEST_ID]
        ).fetchall()[0]
        ts, rule = (row[0], "latest ingested event") if row[0] is not None else (row[1], "latest event")
    if ts is None:
        return ReferenceTime(None, rule, 0)
    ignored = con.execute("SELECT count(*) FROM events WHERE ts > ?", [ts]).fetchall()[0][0]
    return ReferenceTime(ts, rule, int(ignored))
