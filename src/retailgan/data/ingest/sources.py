"""Which files an ingest reads: folders resolved per format, regular files only, digests, mappings checked."""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from retailgan.data.ingest.formats import _DEFAULT_NAMES, CATALOGUE_KEYS, MAPPING_KEYS, ONLINE_RETAIL_COLUMNS
from retailgan.data.ingest.readers import _first_line, _kind
from retailgan.data.ingest.report import IngestOptions, InputFile
from retailgan.errors import ConfigError, IngestError


@dataclass
class _Spec:
    """The files one ingest reads."""

    main: Path
    catalogue: Path | None = None
    extra: dict[str, Path] = field(default_factory=dict)

    def files(self) -> list[tuple[str, Path]]:
        out = [("source", self.main)]
        if self.catalogue is not None:
            out.append(("catalogue", self.catalogue))
        out += list(self.extra.items())
        return out


def _exists(path: Path, what: str = "") -> Path:
    if not path.exists():
        raise IngestError(f"no such file or directory{what}", path=path)
    return path


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _resolve_inputs(fmt: str, source: Path, catalogue: str | Path | None) -> _Spec:
    """Which files to read; checks that they exist before anything is opened."""
    _exists(source)
    cat = _exists(Path(catalogue), " (catalogue)") if catalogue is not None else None
    if cat is not None and cat.is_dir():
        raise IngestError("the catalogue must be a file, not a folder", path=cat)
    folder = source if source.is_dir() else source.parent
    if fmt == "movielens-100k":
        main = _find(source, ("u.data",)) if source.is_dir() else source
        if main is None:
            raise IngestError("folder has no u.data (MovieLens 100K ratings)", path=source)
        return _Spec(main, cat or _find(folder, ("u.item",)))
    if fmt == "amazon-s3rec":
        if source.is_dir():
            seqs = sorted(p for p in source.iterdir() if re.search(r"\.txt(\.gz)?$", p.name))
            if len(seqs) != 1:
                raise IngestError("expected exactly one <Name>.txt(.gz) sequence file in the "
                                  f"folder, found {len(seqs)}", path=source)
            source = seqs[0]
        stem = re.sub(r"\.txt(\.gz)?$", "", source.name)
        return _Spec(source, cat or _find(folder, (f"{stem}_item2attributes.json",)))
    if fmt == "rechorus":
        main = _find(source, ("train.csv", "train.csv.gz")) if source.is_dir() else source
        if main is None:
            raise IngestError("folder has no train.csv(.gz)", path=source)
        return _Spec(main, cat or _find(folder, ("item_meta.csv", "item_meta.csv.gz")))
    if source.is_dir():
        raise IngestError(f"the {fmt} format reads one file, not a folder", path=source)
    return _Spec(source, cat)


_NOT_REGULAR: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(path: Path) -> None:
    """Refuse anything but a regular file (after symlinks) before opening it.

    A device such as /dev/zero never ends and a FIFO blocks until a writer comes: reading one
    would hang with no output. A regular file's size bounds every read of it.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise IngestError(f"cannot read file ({exc.strerror or exc})", path=path) from exc
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
        raise IngestError(f"{what}, not a regular file: ingest reads only regular files "
                          "(whose size is known)", path=path)


def guess_format(first_line: str) -> str | None:
    """The format whose files start like ``first_line`` (a header or first record), if any."""
    line = first_line.strip()
    fields = [f.strip().strip('"').lower() for f in re.split(r"[,;\t|]", line)]
    if {"invoiceno", "stockcode"} <= set(fields):
        return "online-retail"
    if line.split("\t")[:3] == ["user_id", "item_id", "time"]:
        return "rechorus"
    if re.fullmatch(r"\d+\t\d+\t\d+(\.\d+)?\t\d+", line):
        return "movielens-100k"
    if re.fullmatch(r"\d+( \d+)+", line):
        return "amazon-s3rec"
    names = {key: set(_DEFAULT_NAMES[key]) for key in ("user", "item")}
    if all(names[key] & set(fields) for key in names):
        return "events"
    return None


@contextmanager
def _format_hint(path: Path, fmt: str, opts: IngestOptions) -> Iterator[None]:
    """Add "looks like FORMAT" to a read error when the file starts like another format's files."""
    try:
        yield
    except IngestError as exc:
        try:
            guess = guess_format(_first_line(path, _kind(path)[1], opts.encoding))
        except IngestError:
            guess = None
        if guess is None or guess == fmt:
            raise
        hinted = IngestError(f"{exc} (the file looks like {guess} data: try --format {guess})")
        hinted.path, hinted.line, hinted.column = exc.path, exc.line, exc.column
        raise hinted from exc


def _digest(path: Path, role: str) -> InputFile:
    _check_regular(path)
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise IngestError(f"cannot read file ({exc.strerror or exc})", path=path) from exc
    return InputFile(role=role, path=str(path.absolute()), sha256=h.hexdigest(), bytes=size)


def _check_mapping(
    fmt: str,
    mapping: Mapping[str, str] | None,
    catalogue_mapping: Mapping[str, str] | None,
    spec: _Spec,
) -> dict[str, str]:
    mapping = dict(mapping or {})
    allowed = {"events": MAPPING_KEYS, "online-retail": ONLINE_RETAIL_COLUMNS}.get(fmt, ())
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        if not allowed:
            raise ConfigError(f"the {fmt} format takes no column mapping (got {sorted(mapping)})")
        raise ConfigError(f"unknown mapping key(s) {unknown} for {fmt}; allowed: {list(allowed)}")
    bad = sorted(set(catalogue_mapping or {}) - set(CATALOGUE_KEYS))
    if bad:
        raise ConfigError(f"unknown catalogue mapping key(s) {bad}; allowed: {list(CATALOGUE_KEYS)}")
    if catalogue_mapping and spec.catalogue is None:
        raise ConfigError("catalogue_mapping given without a catalogue file")
    if fmt == "online-retail" and spec.catalogue is not None:
        raise ConfigError("the online-retail format takes no catalogue: titles and prices come "
                          "from the invoice lines")
    for k, v in {**mapping, **(catalogue_mapping or {})}.items():
        if not isinstance(v, str) or not v:
            raise ConfigError(f"mapping for {k!r} must be a non-empty column name, got {v!r}")
    return mapping
