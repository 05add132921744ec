"""Memory checks before a model allocates arrays that grow with the square of the catalogue.

EASE^R and ResGAN hold dense items x items matrices; at 100,000 products one float64 copy is
80 GB. :func:`require_memory` compares an estimate with the memory the machine has available and
refuses, in one line, before anything is allocated. ``RETAILGAN_MEMORY_CHECK=off`` skips the check
(e.g. where /proc/meminfo under-reports what a container may use); ``RETAILGAN_MEMORY_LIMIT``
(bytes, or with a K/M/G/T suffix) replaces the available-memory figure.
"""

from __future__ import annotations

import os
import re

from retailgan.errors import ConfigError

ENV_CHECK = "RETAILGAN_MEMORY_CHECK"
ENV_LIMIT = "RETAILGAN_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"`` or plain bytes as an integer byte count."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ConfigError(f"{ENV_LIMIT}: expected bytes such as 8G or 512M, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def available_memory() -> int | None:
    """Bytes this process may still allocate: ``RETAILGAN_MEMORY_LIMIT`` if set, else Linux's
    MemAvailable, else free physical pages (``os.sysconf``); ``None`` when unknown."""
    override = os.environ.get(ENV_LIMIT)
    if override:
        return parse_bytes(override)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def require_memory(model: str, estimate: int, what: str, alternative: str) -> None:
    """Raise :class:`ConfigError` when ``estimate`` bytes exceed the available memory."""
    if os.environ.get(ENV_CHECK, "").strip().lower() in ("0", "off", "false", "no"):
        return
    available = available_memory()
    if available is None or estimate <= available:
        return
    raise ConfigError(
        f"{model}: needs about {_gib(estimate)} for {what} but {_gib(available)} is available; "
        f"use {alternative} for a catalogue this size (or set {ENV_CHECK}=off to try anyway)"
    )
