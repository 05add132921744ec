"""Rate-limit buckets in Redis (`serve --rate-limit-redis`): shared by every limiter of one
namespace, and a per-process fallback when Redis stops answering."""

from __future__ import annotations

import uuid

import pytest

from retailgan.errors import ConfigError

pytest.importorskip("redis", reason="the 'redis' extra is not installed")

from retailgan.serving.shared_limits import TAKE, RedisRateLimiter


def test_limiters_of_one_namespace_share_buckets(redis_url):
    space = f"test-{uuid.uuid4().hex}"
    a = RedisRateLimiter(redis_url, 0.01, 3, space)
    b = RedisRateLimiter(redis_url, 0.01, 3, space)  # another process, same service
    other = RedisRateLimiter(redis_url, 0.01, 3, f"{space}-other")  # another service
    try:
        assert [a.check("k"), b.check("k"), a.check("k")] == [0, 0, 0]
        wait = b.check("k")
        assert wait >= 1  # the 4th request, whichever process takes it
        assert a.check("k2") == 0 and other.check("k") == 0  # other names and namespaces are apart
    finally:
        for lim in (a, b, other):
            for name in lim.client.scan_iter(f"{lim.prefix}*"):
                lim.client.delete(name)
            lim.close()


def test_falls_back_to_the_process_when_redis_stops_answering(redis_url):
    import redis

    lim = RedisRateLimiter(redis_url, 0.01, 2, f"test-{uuid.uuid4().hex}")
    lim.client.close()
    lim.client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # nothing listens there
    lim._take = lim.client.register_script(TAKE)
    assert [lim.check("k"), lim.check("k")] == [0, 0]
    assert lim.check("k") >= 1  # the in-process bucket limits meanwhile


def test_unreachable_redis_at_start_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot reach Redis"):
        RedisRateLimiter("redis://127.0.0.1:1/0", 1, 1, "x", timeout_s=0.2)
    with pytest.raises(ConfigError, match="redis:// URL"):
        RedisRateLimiter("http://127.0.0.1:6379", 1, 1, "x")
