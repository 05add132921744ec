"""What the ``retailgan`` commands share: one-line errors, JSON output, option parsing, loading a store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from retailgan.errors import ConfigError, RetailganError
from retailgan.fileio import write_text_atomic

if TYPE_CHECKING:
    from retailgan.data.dataset import InteractionDataset

T = TypeVar("T")

console = Console(stderr=True, soft_wrap=True)  # a line stays one line in a log (no wrap at 80 columns)

AS_OF_HELP = (
    "Reference time ('now' or an ISO date / time, UTC): events dated after it are ignored and every recency "
    "rule counts back from it; default: the store's latest ingested event."
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    # Escaped: a message may hold brackets ("pip install 'retailgan[serve]'") that rich reads as markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_guarded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` turning retailgan errors into one clear line on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except RetailganError as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(f"{exc.filename}: no such file or directory")


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def parse_ks(text: str) -> tuple[int, ...]:
    """``--k 10,20`` as sorted distinct cut-offs."""
    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError:
        raise ConfigError(f"--k must be comma-separated integers like 10,20, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise ConfigError(f"--k values must be >= 1, got {text!r}")
    return ks


def parse_weights(text: str | None) -> dict[str, float] | None:
    """``--event-weights view=1,cart=2`` as a dict (None when not given)."""
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"--event-weights must look like view=1,cart=2,purchase=3; got {part!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--event-weights: {value!r} for {name!r} is not a number") from None
    return out


def json_option(value: str | None, name: str) -> dict[str, Any]:
    """A JSON-object option (empty when not given); a clear error otherwise."""
    try:
        out = json.loads(value) if value else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(out, dict):
        raise ConfigError(f'{name} must be a JSON object, e.g. {{"l2": 300}}')
    return out


def load_store(store: Path, event_weights: str | None, rating_threshold: float | None, min_user: int,
               min_item: int, as_of: str | None = None) -> InteractionDataset:
    """The store's interactions under the loading options of ``compare``, ``tune`` and ``train``."""
    from retailgan.data.dataset import LoadOptions, load_dataset
    from retailgan.data.reftime import parse_as_of
    from retailgan.data.schemas import DEFAULT_EVENT_WEIGHTS

    weights = parse_weights(event_weights)
    opts = LoadOptions(
        event_weights={**DEFAULT_EVENT_WEIGHTS, **(weights or {})},
        rating_threshold=rating_threshold,
        min_user=min_user,
        min_item=min_item,
        as_of=parse_as_of(as_of),
    )
    ds = load_dataset(store, opts)
    if len(ds) == 0:
        raise ConfigError(f"{store}: the store has no events (run `retailgan ingest` first)")
    return ds
