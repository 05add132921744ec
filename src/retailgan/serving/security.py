"""API keys (stored hashed, compared in constant time) and token-bucket rate limits (per key, and
per client address for requests without a valid key).

Keys are random tokens made by :func:`new_key` (32 random bytes, url-safe base64), so a single
sha256 is enough to store them: unlike passwords they cannot be guessed from a dictionary, and a
slow hash (scrypt) would add tens of milliseconds to every request. The server keeps only
``sha256(key)`` hex digests.

Key entries are lines ``name:role:sha256hex`` (role ``user`` or ``admin``; blank lines and
``#`` comments ignored), read from a keys file (``retailgan serve --keys FILE``) and/or the
environment variable ``RETAILGAN_API_KEYS`` (entries separated by commas or newlines). Make one
with::

    python -m retailgan.serving.security --name shop --role user --keys-file keys.txt

which prints the key and appends its entry to ``keys.txt`` (created with mode 0600). A line
pasted from the command's output with its ``entry:`` label is accepted too.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from retailgan.errors import ConfigError

ROLES = ("user", "admin")
ENV_KEYS = "RETAILGAN_API_KEYS"


def hash_key(key: str) -> str:
    """The stored form of an API key: its sha256 hex digest."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    digest: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def parse_entries(lines: Iterable[str], source: str) -> list[ApiKey]:
    """Parse ``name:role:sha256hex`` entries; errors name the source and line."""
    keys: list[ApiKey] = []
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) == 4 and parts[0].strip() == "entry":  # pasted with the key maker's label
            parts = parts[1:]
        if len(parts) != 3:
            raise ConfigError(f"{source}: line {n}: expected name:role:sha256hex, got {len(parts)} field(s)")
        name, role, digest = (p.strip() for p in parts)
        if not name:
            raise ConfigError(f"{source}: line {n}: empty key name")
        if role not in ROLES:
            raise ConfigError(f"{source}: line {n}: role must be one of {ROLES}, got {role!r}")
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(f"{source}: line {n}: the hash must be 64 hex digits (sha256 of the key)")
        keys.append(ApiKey(name, role, digest))
    names = [k.name for k in keys]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ConfigError(f"{source}: duplicate key name(s) {dup}")
    return keys


def load_keys(keys_file: Path | None, env_value: str | None) -> list[ApiKey]:
    """Keys from a keys file and the ``RETAILGAN_API_KEYS`` value (either may be absent)."""
    keys: list[ApiKey] = []
    if keys_file is not None:
        try:
            text = Path(keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{keys_file}: cannot read keys file ({exc.strerror or exc})") from None
        keys += parse_entries(text.splitlines(), str(keys_file))
    if env_value:
        keys += parse_entries(env_value.replace(",", "\n").splitlines(), ENV_KEYS)
    names = [k.name for k in keys]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ConfigError(f"key name(s) {dup} defined both in the keys file and in {ENV_KEYS}")
    return keys


class KeyRing:
    """Looks a presented key up among the stored digests in constant time."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def identify(self, presented: str) -> ApiKey | None:
        """The key whose digest matches ``presented``, or None.

        Every stored digest is compared with ``hmac.compare_digest`` and the loop never exits
        early, so the time taken does not tell which digest (or how much of one) matched.
        """
        digest = hash_key(presented).encode("ascii")
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest.encode("ascii")):
                found = key
        return found


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; thread-safe."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError(f"rate limit needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
            self._t = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """One token bucket per name (a key name, or a client address); at most ``max_names`` buckets,
    the oldest dropped first (a dropped name starts again with a full bucket)."""

    def __init__(self, rate: float, burst: float, max_names: int | None = None) -> None:
        TokenBucket(rate, burst)  # validate now, not on the first request
        self.rate, self.burst, self.max_names = rate, burst, max_names
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, name: str) -> int:
        """0 when the request may go on, else the Retry-After value in whole seconds (>= 1)."""
        bucket = self._buckets.get(name)
        if bucket is None:
            with self._lock:
                if self.max_names is not None and len(self._buckets) >= self.max_names:
                    self._buckets.pop(next(iter(self._buckets)))
                bucket = self._buckets.setdefault(name, TokenBucket(self.rate, self.burst))
        wait = bucket.take()
        return 0 if wait == 0.0 else max(1, math.ceil(wait))


def append_entry(keys_file: Path, entry: str) -> None:
    """Add one ``name:role:sha256hex`` line to a keys file, refusing a name already in it.

    The file is rewritten whole through a temporary file and a rename (never half-written); a new
    file gets mode 0600, an existing one keeps its mode.
    """
    keys_file = Path(keys_file)
    try:
        old = keys_file.read_text(encoding="utf-8")
        mode = keys_file.stat().st_mode & 0o777
    except FileNotFoundError:
        old, mode = "", 0o600
    except OSError as exc:
        raise ConfigError(f"{keys_file}: cannot read keys file ({exc.strerror or exc})") from None
    name = parse_entries([entry], "new entry")[0].name
    if name in {k.name for k in parse_entries(old.splitlines(), str(keys_file))}:
        raise ConfigError(f"{keys_file}: a key named {name!r} is already there (pick another --name)")
    text = old + ("\n" if old and not old.endswith("\n") else "") + entry + "\n"
    tmp = keys_file.with_name(f".{keys_file.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
        os.replace(tmp, keys_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    """Print a new key and its entry; with --keys-file, add the entry to that file (the key itself is not stored)."""
    parser = argparse.ArgumentParser(prog="python -m retailgan.serving.security", description=main.__doc__)
    parser.add_argument("--name", required=True, help="Key name (rate limits and logs use it).")
    parser.add_argument("--role", choices=ROLES, default="user")
    parser.add_argument("--keys-file", type=Path, help="Append the entry to this keys file (created with mode 0600).")
    args = parser.parse_args(argv)
    if ":" in args.name:
        parser.error("the name must not contain ':'")
    key = new_key()
    entry = f"{args.name}:{args.role}:{hash_key(key)}"
    if args.keys_file is not None:
        try:
            append_entry(args.keys_file, entry)
        except ConfigError as exc:
            parser.exit(2, f"error: {exc}\n")
    print(f"key:   {key}")
    print(f"entry: {entry}")
    if args.keys_file is not None:
        print(f"added to {args.keys_file}")


if __name__ == "__main__":  # pragma: no cover
    main()
