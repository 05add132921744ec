"""Resumable all-customer jobs: customer blocks -> one worker function per block -> part files ->
one atomic commit. Shared by batch recommendations (:mod:`retailgan.batch`) and campaigns
(:mod:`retailgan.campaign.build`).

A job's items (customer ids, sorted) are cut into fixed-size chunks. Each finished chunk leaves
its files in a work directory next to the output (``.<out>.work``) and only then is recorded in
``progress.json`` there, together with a fingerprint of everything the output depends on (inputs'
sizes and times, model version, parameters, the item list). A run started again with the same
fingerprint redoes only the chunks not recorded (they may have finished out of order with several
workers); another fingerprint starts the work directory afresh. The caller then merges the parts
in chunk order and moves the result into place in one rename, so the output is either absent, the
previous one, or complete, and never depends on timing or on the number of workers.

The worker function gets ``(chunk number, its items)`` and writes that chunk's files; it is built
once per process by a picklable factory (:class:`WorkerFactory`), so any engine that can call a
function on a block can run a job. Where the chunks run is the engine's business
(:mod:`retailgan.engines`: this process, a pool of local processes, or Ray actors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from retailgan.engines import Engine, LocalEngine
from retailgan.progress import duration

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"

ChunkWorker = Callable[[int, list[str]], None]
"""Writes the files of chunk ``c`` (its items given) into the work directory."""


class WorkerFactory(Protocol):
    """Picklable: called once in every process that runs chunks, returns that process's worker."""

    def __call__(self) -> ChunkWorker: ...


def work_dir(out: Path) -> Path:
    """The work directory of output ``out``: hidden, next to it (same file system, so one rename)."""
    return out.parent / f".{out.name}.work"


def fingerprint(params: dict[str, Any], items: Sequence[str], files: Sequence[Path] = ()) -> str:
    """Hash of the parameters, the item list and the size and modification time of ``files``."""
    h = hashlib.sha256()
    stats = {str(f.resolve()): [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
    h.update(json.dumps({**params, "files": stats}, sort_keys=True, default=str).encode())
    for item in items:
        h.update(item.encode("utf-8") + b"\0")
    return h.hexdigest()


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_part(table: pa.Table, path: Path) -> None:
    """Write one part file atomically (a reader never sees half a part)."""
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def part_path(work: Path, c: int) -> Path:
    return work / "parts" / f"part-{c:06d}.parquet"


def merge_parts(work: Path, n_chunks: int, schema: pa.Schema, dest: Path,
                each: Callable[[pa.Table], None] | None = None) -> int:
    """Concatenate the parts in chunk order into ``dest`` (read one at a time); returns the rows.
    ``each`` sees every part's table (for summaries)."""
    rows = 0
    tmp = dest.with_name(dest.name + ".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for c in range(n_chunks):
            table = pq.read_table(part_path(work, c), schema=schema)
            writer.write_table(table)
            rows += table.num_rows
            if each is not None:
                each(table)
    os.replace(tmp, dest)
    return rows


@dataclass(frozen=True)
class Chunks:
    """Items cut into chunks of ``size`` (the last may be shorter)."""

    items: list[str]
    size: int

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.size)

    def __getitem__(self, c: int) -> list[str]:
        return self.items[c * self.size : (c + 1) * self.size]


def prepare_work(work: Path, fp: str, n_chunks: int, subdirs: Sequence[str] = ("parts",)) -> set[int]:
    """The chunks already finished in ``work`` (none after starting it afresh)."""
    prog = work / PROGRESS_FILE
    if prog.is_file():
        try:
            state = json.loads(prog.read_text(encoding="utf-8"))
            if state.get("fingerprint") == fp and int(state.get("chunks", -1)) == n_chunks:
                finished = {int(c) for c in state.get("finished", range(int(state.get("done", 0))))}
                if all(0 <= c < n_chunks for c in finished):
                    log.info("resuming %s: %d of %d chunks finished", work, len(finished), n_chunks)
                    return finished
        except (ValueError, TypeError, OSError):
            pass  # an unreadable progress file means: start again
    if work.exists():
        shutil.rmtree(work)
    for sub in subdirs:
        (work / sub).mkdir(parents=True)
    write_json(prog, _progress(fp, n_chunks, set()))
    return set()


def _progress(fp: str, n_chunks: int, finished: set[int]) -> dict[str, Any]:
    return {"fingerprint": fp, "chunks": n_chunks, "done": len(finished), "finished": sorted(finished)}


def finish_work(work: Path) -> None:
    """Remove the parts and the progress file once they are merged."""
    shutil.rmtree(work / "parts", ignore_errors=True)
    (work / PROGRESS_FILE).unlink(missing_ok=True)


class JobProgress:
    """Progress of a chunked job as lines on stderr (the format of :mod:`retailgan.progress`, in a
    terminal and in a log alike): a line every few chunks (about 20 a run) and at the end."""

    def __init__(self, label: str, unit: str, total: int, done: int, n_chunks: int, *, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.label, self.unit, self.total, self.done = label, unit, total, done
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._start, self._done0, self._chunks = time.monotonic(), done, 0
        self._every = max(1, n_chunks // 20)

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = (self.done - self._done0) / elapsed if elapsed > 0 else 0.0
        left = f", ~{duration((self.total - self.done) / rate)} left" if rate > 0 and self.done < self.total else ""
        share = self.done / self.total if self.total else 1.0
        return f"{self.label}: {self.done}/{self.total} {self.unit} ({share:.0%}); {duration(elapsed)} elapsed{left}"

    def advance(self, n: int) -> None:
        self.done += n
        self._chunks += 1
        if self.enabled and (self._chunks % self._every == 0 or self.done >= self.total):
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Nothing to release (kept for callers that close what they open)."""


def run_chunks(
    chunks: Chunks,
    work: Path,
    fp: str,
    finished: set[int],
    factory: WorkerFactory,
    *,
    engine: Engine | None = None,
    workers: int = 1,
    local: ChunkWorker | None = None,
    progress: JobProgress | None = None,
    after_chunk: Callable[[int], None] | None = None,
) -> None:
    """Run the chunks not in ``finished`` on ``engine`` (default: ``workers`` local processes, this
    one where ``workers`` is 1), recording each in ``progress.json`` once its files are in place.
    ``local``: a worker already built in this process (used where the engine runs chunks here,
    else ``factory()`` is called once per worker process); ``after_chunk(c)`` is called after chunk
    ``c`` is recorded (with several workers, in completion order)."""
    n_chunks = len(chunks)
    todo = [c for c in range(n_chunks) if c not in finished]

    def record(c: int) -> None:
        finished.add(c)
        write_json(work / PROGRESS_FILE, _progress(fp, n_chunks, finished))
        if progress is not None:
            progress.advance(len(chunks[c]))
        if after_chunk is not None:
            after_chunk(c)

    (engine or LocalEngine(workers)).run(todo, chunks, factory, record, work=work, local=local)
