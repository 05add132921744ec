"""Error types. Every message names what was wrong and where (file, line, column, field)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class RetailganError(Exception):
    """Base class of retailgan's user-facing errors (the CLI prints the message, exits non-zero)."""


class IngestError(RetailganError):
    """A source file could not be ingested; the store was left unchanged.

    Either pass the whole message, or pass ``path`` / ``line`` / ``column`` and let the message
    be prefixed with them: ``IngestError("'abc' is not a number", path=p, line=7,
    column="Quantity")`` reads ``p: line 7, column Quantity: 'abc' is not a number``. The parts
    stay available as attributes for programs.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        where = ", ".join(
            part
            for part in (
                f"line {line}" if line is not None else "",
                f"column {column}" if column is not None else "",
            )
            if part
        )
        prefix = ": ".join(part for part in (self.path or "", where) if part)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class StoreError(RetailganError):
    """The store file is missing, not a DuckDB database, or not a retailgan store."""


class ConfigError(RetailganError):
    """An invalid option or configuration value."""


def extra_needed(what: str, extra: str, detail: str = "") -> ConfigError:
    """The error for an optional dependency that is not installed, with the command that adds it."""
    more = f" ({detail})" if detail else ""
    return ConfigError(
        f"{what} needs the '{extra}' extra: pip install 'retailgan[{extra}]' "
        f"(in a source checkout: pip install -e '.[{extra}]'){more}"
    )


class ImageError(RetailganError):
    """A product image file is unreadable, too large, or names no catalogue product."""


class ModelFileError(RetailganError):
    """A model directory is missing, incomplete, corrupt or of an unknown version."""


class UnknownIdError(RetailganError, KeyError):
    """Raw ids that are not in a vocabulary."""

    def __init__(self, kind: str, ids: Sequence[str]) -> None:
        self.kind = kind
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:10])
        more = f" (and {len(self.ids) - 10} more)" if len(self.ids) > 10 else ""
        super().__init__(f"unknown {kind}(s): {shown}{more}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
