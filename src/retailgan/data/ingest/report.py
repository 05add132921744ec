"""What an ingest is asked to do and what it reports: options, counts, input files, report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retailgan.errors import ConfigError


class IngestOptions(BaseModel):
    """Options of :func:`ingest` (pass an instance or a dict)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    force: bool = False
    """Read the source even when an identical file was ingested before (events still dedupe)."""
    delimiter: str | None = None
    """CSV field delimiter; default: guessed from the header line among , tab ; |."""
    encoding: str = "utf-8"
    """CSV text encoding (DuckDB supports utf-8, utf-16 and latin-1)."""
    timestamp_format: str | None = None
    """``strptime`` format for text timestamps; default: ISO 8601 (with optional offset, stored
    as UTC) or unix seconds."""
    default_event_type: str | None = None
    """events format without an event-type column: ``rating`` if ratings are mapped, else
    ``purchase``."""
    event_type_aliases: dict[str, str] = Field(default_factory=dict)
    """Source event type -> store event type, e.g. ``{"click": "view", "add_to_cart": "cart"}``
    (compared after trimming and lower-casing)."""
    dataset_name: str | None = None
    """Stored as ``meta.dataset_name`` when the store has none yet."""


class Counts(BaseModel):
    """Row counts of the store tables."""

    model_config = ConfigDict(frozen=True)

    users: int
    items: int
    events: int


class InputFile(BaseModel):
    """One file read by an ingest."""

    model_config = ConfigDict(frozen=True)

    role: str
    path: str
    sha256: str
    bytes: int


class IngestReport(BaseModel):
    """What an ingest read, dropped (per rule) and changed in the store. JSON-serialisable."""

    model_config = ConfigDict(frozen=True)

    ingest_id: int | None
    """Id in the ``ingests`` table (``None`` when skipped)."""
    source: str
    format: str
    sha256: str
    """sha256 of the source file (of ``u.data`` etc. for a dataset folder)."""
    fingerprint: str
    """sha256 over format, every input file's digest, mapping and options: equal fingerprints
    make the second ingest a no-op."""
    inputs: list[InputFile]
    started_at: str
    skipped: bool = False
    skipped_reason: str | None = None
    rows_in: int = 0
    rows_kept: int = 0
    rows_rejected: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    """Dropped rows per rule, in rule-priority order (a row counts under its first rule)."""
    info: dict[str, int] = Field(default_factory=dict)
    """Repairs and diagnostics that drop nothing, e.g. ``description_filled``."""
    before: Counts
    after: Counts
    new_events: int = 0
    already_present: int = 0
    """Kept rows whose event was already in the store."""
    new_users: int = 0
    new_items: int = 0
    updated_items: int = 0
    """Existing items that got a missing title / category / price from this source."""
    mapping: dict[str, str] | None = None
    catalogue_mapping: dict[str, str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    def to_markdown(self) -> str:
        """A short human-readable summary (Markdown)."""
        title = f"Ingest #{self.ingest_id}" if self.ingest_id is not None else "Ingest"
        lines = [f"## {title}: `{self.source}` ({self.format})", ""]
        if self.skipped:
            lines += [f"**Skipped**: {self.skipped_reason}", ""]
        lines += [
            "| | rows |",
            "| --- | ---: |",
            f"| read | {self.rows_in:,} |",
            f"| kept | {self.rows_kept:,} |",
            f"| rejected | {self.rows_rejected:,} |",
        ]
        lines += [f"| · {k} | {v:,} |" for k, v in self.rejected.items()]
        lines += [f"| ({k}) | {v:,} |" for k, v in self.info.items()]
        lines += [
            f"| new events | {self.new_events:,} |",
            f"| already in store | {self.already_present:,} |",
            "",
            "| store | before | after |",
            "| --- | ---: | ---: |",
        ]
        for k in ("users", "items", "events"):
            lines.append(f"| {k} | {getattr(self.before, k):,} | {getattr(self.after, k):,} |")
        lines += ["", f"{self.duration_s:.2f} s; sha256 `{self.sha256[:16]}…`"]
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_table(self) -> Any:
        """The same summary as a ``rich`` Table."""
        from rich.table import Table

        table = Table(title=f"{self.format}: {self.source}", show_header=True)
        table.add_column("")
        table.add_column("rows", justify="right")
        rows = [("read", self.rows_in), ("kept", self.rows_kept), ("rejected", self.rows_rejected)]
        rows += [(f"  {k}", v) for k, v in self.rejected.items()]
        rows += [(f"({k})", v) for k, v in self.info.items()]
        rows += [("new events", self.new_events), ("already in store", self.already_present)]
        rows += [(f"store {k}", f"{getattr(self.before, k):,} -> {getattr(self.after, k):,}")
                 for k in ("users", "items", "events")]
        for name, value in rows:
            table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
        return table


def _options(options: IngestOptions | Mapping[str, Any] | None) -> IngestOptions:
    if options is None:
        return IngestOptions()
    if isinstance(options, IngestOptions):
        return options
    try:
        return IngestOptions(**dict(options))
    except ValidationError as exc:
        raise ConfigError(f"invalid ingest options: {exc}") from exc
