"""Execution engines for chunked batch jobs (:mod:`retailgan.jobs`): where the chunks run.

A job hands an engine the chunks still to do, a picklable :class:`~retailgan.jobs.WorkerFactory`
(called once per worker process: load the model, open the store) and a ``record`` callback; the
engine runs each chunk on some worker and calls ``record(c)`` in the job's process once chunk
``c``'s files are in place. Everything else (fingerprint, resume, merge, the atomic commit) stays
in the job, so the output does not depend on the engine.

* ``local`` (the default): this process (``workers`` = 1), or a pool of ``workers`` local processes.
* ``ray``: ``workers`` Ray actors, on a local Ray instance or a cluster (``address``). Each actor
  loads the model once (memory-mapped, :func:`retailgan.persistence.load_model`) and writes its
  parts into the job's work directory, which must therefore be on a file system every node sees,
  as must the model directory and the store. Chunks go to whichever actor is free, at most two in
  flight per actor (bounded memory). A chunk rewrites its files atomically, so Ray may retry it on
  another actor after a worker dies. Ray Data is not used: the customer blocks are already cut by
  the job and each one's result is a set of files, not rows, so a dataset pipeline would add its
  start-up, a pandas dependency and its own batching to what is here a queue of chunk numbers.
  Ray is the optional extra ``ray``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retailgan.errors import ConfigError, extra_needed

if TYPE_CHECKING:
    from retailgan.jobs import ChunkWorker, WorkerFactory

ENGINES = ("local", "ray")
IN_FLIGHT_PER_WORKER = 2
"""Chunks queued per worker: one running, one ready, so a worker never waits and memory stays bounded."""

Record = Callable[[int], None]


class Engine(ABC):
    """Runs chunk ``c`` (items ``chunks[c]``) for each ``c`` in ``todo`` and calls ``record(c)``
    in this process after each (in completion order)."""

    name: str

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        self.workers = workers

    @property
    def in_process(self) -> bool:
        """Whether chunks run in this process (the job's own store connection and model are used)."""
        return False

    @abstractmethod
    def run(self, todo: Sequence[int], chunks: Sequence[list[str]], factory: WorkerFactory, record: Record,
            *, work: Path, local: ChunkWorker | None = None) -> None:
        """``local``: a worker already built in this process (used where chunks run here)."""


class LocalEngine(Engine):
    """This process (``workers`` = 1) or a pool of local processes."""

    name = "local"

    @property
    def in_process(self) -> bool:
        return self.workers == 1

    def run(self, todo: Sequence[int], chunks: Sequence[list[str]], factory: WorkerFactory, record: Record,
            *, work: Path, local: ChunkWorker | None = None) -> None:
        if self.workers == 1 or len(todo) <= 1:
            # ``local`` only where the job kept its own connections open for it (one worker).
            worker = local if local is not None and self.in_process else factory()
            for c in todo:
                with chunk_threads():
                    worker(c, chunks[c])
                record(c)
        else:
            _run_pool(min(self.workers, len(todo)), todo, chunks, record, factory)


# -- local worker processes -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}
"""This pool process's worker and thread limits (the pool's state, not the worker function's)."""


def _exit_with_parent(interval_s: float = 0.5) -> None:
    """End this worker when the job's process is gone (e.g. SIGKILLed): a pool worker waits on a queue whose
    pipe it holds both ends of, so it would otherwise never notice, and would keep the job's outputs open."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(workers: int) -> Any:
    """Give this worker process its share of the CPUs for BLAS / OpenMP (at least one thread):
    N workers each running a pool of all CPUs' threads slow each other down, the more so on a
    busy machine. Ray does the same for its actors (one thread per CPU they ask for). The
    environment covers libraries loaded later; returns the limiter of those loaded already
    (kept for the life of the process)."""
    from threadpoolctl import threadpool_limits

    n = max(1, (os.cpu_count() or 1) // workers)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    return threadpool_limits(n)


def _init_worker(factory: WorkerFactory, workers: int) -> None:
    _exit_with_parent()
    limit_threads(workers)
    _WORKER["run"] = factory()
    _WORKER["limits"] = limit_threads(workers)  # again, for what loading the model brought in (torch)


def chunk_threads() -> contextlib.AbstractContextManager[None]:
    """One torch intra-op thread while a chunk is scored, in every engine and at every worker count:
    torch's float reductions round differently with another thread count, and a job's output must
    not depend on how many workers wrote it (workers are the parallelism). Nothing where the model
    did not bring torch in."""
    if "torch" not in sys.modules:
        return contextlib.nullcontext()
    from retailgan.models.base import torch_threads

    return torch_threads(1)


def _worker_chunk(c: int, items: list[str]) -> int:
    with chunk_threads():
        _WORKER["run"](c, items)
    return c


def _run_pool(workers: int, todo: Sequence[int], chunks: Sequence[list[str]], record: Record,
              factory: WorkerFactory) -> None:
    """Run the chunks in ``todo`` on ``workers`` processes, at most two chunks in flight per worker
    (memory stays bounded), recording each as it finishes."""
    ctx = multiprocessing.get_context("spawn")  # no fork: DuckDB and BLAS threads do not survive fork
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(factory, workers)) as pool:
        pending: set[Future[int]] = set()
        queue = iter(todo)
        try:
            while True:
                while len(pending) < IN_FLIGHT_PER_WORKER * workers and (c := next(queue, None)) is not None:
                    pending.add(pool.submit(_worker_chunk, c, chunks[c]))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in sorted(done, key=lambda f: f.result()):
                    record(f.result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise


# -- Ray ------------------------------------------------------------------------------------------


def import_ray() -> Any:
    """The ``ray`` module, or the error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise extra_needed("--engine ray", "ray") from None
    return ray


class ChunkActor:
    """A Ray actor's state: its worker, built on the first chunk (so a failure to load the model
    reaches the job as that chunk's error)."""

    def __init__(self, factory: WorkerFactory, work: str) -> None:
        self.factory, self.work = factory, work
        self.worker: ChunkWorker | None = None

    def chunk(self, c: int, items: list[str]) -> int:
        if self.worker is None:
            if not Path(self.work).is_dir():
                import socket

                raise ConfigError(f"{self.work}: not found on Ray node {socket.gethostname()}; the output, "
                                  "the model and the store must be on a file system every node mounts")
            self.worker = self.factory()
        with chunk_threads():
            self.worker(c, items)
        return c


class RayEngine(Engine):
    """``workers`` Ray actors on the Ray instance this process is connected to, else the one at
    ``address``, else at ``RAY_ADDRESS``, else a new local instance (shut down at the end)."""

    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None) -> None:
        super().__init__(workers)
        self.address = address
        import_ray()  # fail before any work is done

    def run(self, todo: Sequence[int], chunks: Sequence[list[str]], factory: WorkerFactory, record: Record,
            *, work: Path, local: ChunkWorker | None = None) -> None:
        if not todo:
            return
        ray = import_ray()
        if self.address is not None:
            check_reachable(self.address)
        started = not ray.is_initialized()
        if started:
            try:
                if self.address is None and not os.environ.get("RAY_ADDRESS"):
                    # "local": a new instance, never one that `ray start` left running here (Ray's
                    # default); it gets at least one CPU per worker, so that every actor is placed.
                    ray.init(address="local", num_cpus=max(self.workers, os.cpu_count() or 1),
                             include_dashboard=False)
                else:
                    ray.init(address=self.address, include_dashboard=False)
            except ConnectionError as exc:
                raise ConfigError(f"--address {self.address}: no Ray cluster there ({exc})") from None
        actors: list[Any] = []
        try:
            # Chunks rewrite their files atomically, so a chunk cut short by a dead worker is safe to retry.
            remote = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(ChunkActor)
            actors = [remote.remote(factory, str(work)) for _ in range(min(self.workers, len(todo)))]
            _run_actors(ray, actors, todo, chunks, record)
        finally:
            for a in actors:
                ray.kill(a)
            if started:
                ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) address nothing listens on: Ray itself
    would retry the connection for minutes. ``auto`` and other forms are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def _run_actors(ray: Any, actors: list[Any], todo: Sequence[int], chunks: Sequence[list[str]],
                record: Record) -> None:
    """Feed chunks to the actors, each kept at most :data:`IN_FLIGHT_PER_WORKER` deep; record
    each finished chunk. A chunk's error is raised as itself (not wrapped in Ray's)."""
    queue = iter(todo)
    pending: dict[Any, Any] = {}  # object ref -> actor
    load = dict.fromkeys(range(len(actors)), 0)

    def submit(i: int) -> bool:
        c = next(queue, None)
        if c is None:
            return False
        pending[actors[i].chunk.remote(c, chunks[c])] = i
        load[i] += 1
        return True

    for _ in range(IN_FLIGHT_PER_WORKER):
        for i in range(len(actors)):
            submit(i)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            i = pending.pop(ref)
            load[i] -= 1
            try:
                c = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BaseException):
                    raise cause from None
                raise
            record(c)
            submit(i)


def make_engine(name: str = "local", workers: int = 1, address: str | None = None) -> Engine:
    """The engine called ``name`` (``--engine``); ``address`` only for ``ray``. Raises
    :class:`ConfigError` for an unknown name, a misplaced address or a missing extra."""
    if name == "local":
        if address is not None:
            raise ConfigError("--address goes with --engine ray")
        return LocalEngine(workers)
    if name == "ray":
        return RayEngine(workers, address)
    raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
