"""Group commit: writes that arrive while a commit is running share the next commit.

Each request's events must be durable before its response, and every DuckDB commit pays a WAL
write and flush. One writer thread takes everything queued, writes it in one transaction and
answers every waiting request after the commit, so N concurrent requests cost one commit instead
of N, and they no longer queue on the store lock one commit at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()


class GroupCommit(Generic[T]):
    """Runs ``write_many(items) -> counts`` on one thread for every group of queued items.

    ``write_many`` must be all-or-nothing (one transaction). When a group fails, each item is
    written again alone, so one bad request fails only its own caller.
    """

    def __init__(self, write_many: Callable[[list[T]], Sequence[int]], *, size: Callable[[T], int] = len,  # type: ignore[assignment]
                 max_group: int = 2_000, name: str = "group-commit") -> None:
        self._write_many = write_many
        self._size = size
        self._max_group = max_group
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> Future[int]:
        """Queue ``item``; the future resolves to its count once its group is committed."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        future: Future[int] = Future()
        self._queue.put((item, future))
        return future

    def write(self, item: T) -> int:
        """:meth:`submit` and wait for the commit (re-raises the write's error)."""
        return self.submit(item).result()

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            n = self._size(first[0])  # type: ignore[index]
            # Whatever arrived meanwhile joins this commit, up to max_group items' worth.
            while n < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                group.append(nxt)
                n += self._size(nxt[0])  # type: ignore[index]
            self._commit(group)  # type: ignore[arg-type]

    def _commit(self, group: list[tuple[T, Future[int]]]) -> None:
        try:
            counts = self._write_many([item for item, _ in group])
        except Exception as exc:
            if len(group) > 1:
                log.warning("a group of %d writes failed (%s); writing each alone", len(group), exc)
                for one in group:
                    self._commit([one])
            else:
                group[0][1].set_exception(exc)
            return
        for (_, future), count in zip(group, counts, strict=True):
            future.set_result(count)
