"""Rate limits shared by every process and host of a service: token buckets in Redis.

``retailgan serve --rate-limit-redis redis://HOST:6379/0`` keeps each bucket (per key, and per
client address without a valid key) in Redis instead of the process. One Lua script per request
refills and takes a token atomically, on Redis's clock, so N workers on M hosts together admit
what one process would: the limit is exact across them (no per-process share, no clock skew
between hosts). A bucket unused for longer than it takes to refill expires.

If Redis does not answer, the process falls back to its own in-process bucket for that request
(logged once a minute): the service stays up, and the limit is then per process, i.e. up to the
number of processes times the limit. Without ``--rate-limit-redis`` the in-process limiter of
:mod:`retailgan.serving.security` is used, per process.
"""

from __future__ import annotations

import logging
import math
import time

from retailgan.errors import ConfigError, extra_needed
from retailgan.serving.security import RateLimiter, TokenBucket

log = logging.getLogger("retailgan.serving")

# KEYS[1] bucket; ARGV rate, burst. Returns the seconds to wait as a string (0 = allowed): Redis
# turns a Lua number into an integer reply, which would lose the fraction.
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1]) or burst
local ts = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""


def check_redis_extra() -> None:
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise extra_needed("--rate-limit-redis", "redis", str(exc)) from None


class RedisRateLimiter:
    """:class:`~retailgan.serving.security.RateLimiter`'s ``check`` on buckets kept in Redis."""

    def __init__(self, url: str, rate: float, burst: float, namespace: str, *, timeout_s: float = 0.5) -> None:
        check_redis_extra()
        import redis

        TokenBucket(rate, burst)  # the same validation as the in-process limiter
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--rate-limit-redis must be a redis:// URL, got {url.split('://')[0]!r}://...")
        self.rate, self.burst, self.prefix = float(rate), float(burst), f"retailgan:ratelimit:{namespace}:"
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._take = self.client.register_script(TAKE)
        self.fallback = RateLimiter(rate, burst, max_names=10_000)
        self._warned = 0.0
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ConfigError(f"--rate-limit-redis: cannot reach Redis ({exc})") from None

    def check(self, name: str) -> int:
        """0 when the request may go on, else the Retry-After value in whole seconds (>= 1)."""
        import redis

        try:
            wait = float(self._take(keys=[self.prefix + name], args=[self.rate, self.burst]))
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning("rate limits: Redis unavailable (%s); limiting per process meanwhile", exc)
            return self.fallback.check(name)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))

    def close(self) -> None:
        self.client.close()
