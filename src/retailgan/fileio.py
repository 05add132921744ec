"""Output files written whole: a temporary sibling, then one rename; with the modes of a plain write.

``tempfile`` creates files 0600 and folders 0700, which would make some outputs private and others
not; every file written here gets the mode ``open()`` would give (0666 less the umask, usually
0644) and every folder the mode ``mkdir()`` would (0777 less the umask, usually 0755).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    # /proc gives it without changing it; os.umask() has to set it to read it, which another thread
    # creating a file at that moment would see.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode ``mkdir()`` gives a new folder: 0777 less the umask."""
    return 0o777 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[str], None], *, suffix: str = ".tmp") -> Path:
    """Call ``write(temporary path)``, then give the file :func:`file_mode` and rename it to ``path``.

    Readers see the old file or the whole new one, never part of it; on error ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``path.write_text(text)`` through :func:`atomic_write` (UTF-8)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new private-named folder in ``parent`` with :func:`dir_mode` (``mkdtemp`` makes it 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, dir_mode())
    return tmp
