"""Progress of long steps as plain lines on stderr: what runs, how far it is, time spent and left.

Lines, not a redrawn bar, so that a log file or a pipe gets them as a terminal does::

    tune featgan: trial 3/20 done, validation ndcg@20 0.0812 (best 0.0850); 1 min 02 s elapsed, ~5 min 51 s left
      fit featgan: epoch 4/50 done, validation ndcg@20 0.0790; 12 s elapsed, ~2 min 18 s left at most

Library code wraps its loops in :func:`steps`; nothing is printed unless the program switched
reporting on with :func:`enable` (the ``retailgan`` command does) or the caller asks for it
(``enabled=True``). Steps inside steps (the epochs of each tuning trial) are indented.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_enabled = False
_depth = 0


def enable(on: bool = True) -> None:
    """Switch progress lines on (or off) for this process."""
    global _enabled
    _enabled = on


def duration(seconds: float) -> str:
    """``45 s``, ``2 min 05 s``, ``1 h 02 min``."""
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Steps:
    """``total`` steps of one job; :meth:`done` after each prints a line (at most every ``every_s``)."""

    def __init__(self, label: str, total: int, unit: str, *, every_s: float, active: bool, depth: int,
                 upper_bound: bool, estimate: bool) -> None:
        self.label, self.total, self.unit = label, max(int(total), 1), unit
        self.every_s, self.active, self.depth, self.upper_bound = every_s, active, depth, upper_bound
        self.estimate = estimate
        self.start = time.perf_counter()
        self._last = -float("inf")

    def _print(self, text: str) -> None:
        print(f"{'  ' * self.depth}{self.label}: {text}", file=sys.stderr, flush=True)

    def begin(self, i: int, what: str) -> None:
        """Say what step ``i`` is about to do (for steps long enough to want a heading)."""
        if self.active:
            self._print(f"{self.unit} {i}/{self.total}, {what}")

    def done(self, i: int, note: str = "") -> None:
        """Step ``i`` (1-based) finished; ``note`` (e.g. the validation score) goes in the line."""
        if not self.active:
            return
        now = time.perf_counter()
        if now - self._last < self.every_s and i not in (1, self.total):
            return
        self._last = now
        elapsed = now - self.start
        left = elapsed / i * (self.total - i)
        when = f"{duration(elapsed)} elapsed"
        if i < self.total and self.estimate:
            when += f", ~{duration(left)} left" + (" at most" if self.upper_bound else "")
        self._print(f"{self.unit} {i}/{self.total} done{', ' + note if note else ''}; {when}")

    def stop(self, i: int, why: str) -> None:
        """The job ended at step ``i`` before ``total`` (early stopping, a time budget)."""
        if self.active and i < self.total:
            elapsed = duration(time.perf_counter() - self.start)
            self._print(f"{why} after {self.unit} {i}/{self.total}; {elapsed} elapsed")


@contextmanager
def steps(label: str, total: int, unit: str = "step", *, every_s: float = 0.0, enabled: bool | None = None,
          upper_bound: bool = False, estimate: bool = True) -> Iterator[Steps]:
    """A :class:`Steps` for a loop of ``total`` steps; ``enabled=None`` follows :func:`enable`.

    ``every_s`` thins the lines of fast loops (the first and last step are always shown);
    ``upper_bound``: the job may end early (early stopping), so the time left is at most the estimate;
    ``estimate=False`` for steps too unlike each other for the mean to predict the rest.
    """
    global _depth
    active = _enabled if enabled is None else enabled
    tracker = Steps(label, total, unit, every_s=every_s, active=active, depth=_depth, upper_bound=upper_bound,
                    estimate=estimate)
    _depth += 1
    try:
        yield tracker
    finally:
        _depth -= 1


def note(label: str, text: str, *, enabled: bool | None = None) -> None:
    """One line about a job before its steps run (e.g. its estimated cost); ``enabled=None``
    follows :func:`enable`."""
    if _enabled if enabled is None else enabled:
        print(f"{'  ' * _depth}{label}: {text}", file=sys.stderr, flush=True)
