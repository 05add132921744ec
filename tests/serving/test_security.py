"""API keys (hashed, constant-time lookup), key files, token buckets and the body-size limit."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from retailgan.errors import ConfigError
from retailgan.serving import Settings, create_app
from retailgan.serving.security import KeyRing, RateLimiter, TokenBucket, hash_key, load_keys, main, parse_entries
from tests.serving.conftest import USER_KEY


def test_keys_are_stored_hashed_and_identified():
    ring = KeyRing(parse_entries([f"a:user:{hash_key('k1')}", f"b:admin:{hash_key('k2')}"], "test"))
    assert ring.identify("k1").name == "a" and not ring.identify("k1").is_admin
    assert ring.identify("k2").is_admin
    assert ring.identify("k3") is None and ring.identify("") is None
    assert all("k1" not in k.digest and len(k.digest) == 64 for k in ring.keys)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("a:user", "line 1: expected name:role:sha256hex"),
        (f"a:root:{'0' * 64}", "role must be one of"),
        ("a:user:xyz", "64 hex digits"),
        (f":user:{'0' * 64}", "empty key name"),
    ],
)
def test_bad_key_entries_name_the_line(line, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_entries([line], "keys.txt")


def test_keys_from_file_and_env(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text(f"# ops\nops:admin:{hash_key('x')}\n")
    keys = load_keys(f, f"shop:user:{hash_key('y')},web:user:{hash_key('z')}")
    assert [k.name for k in keys] == ["ops", "shop", "web"]
    with pytest.raises(ConfigError, match="both in the keys file"):
        load_keys(f, f"ops:user:{hash_key('y')}")
    with pytest.raises(ConfigError, match="cannot read keys file"):
        load_keys(tmp_path / "missing.txt", None)


def test_new_key_command_prints_key_and_matching_entry(capsys):
    main(["--name", "shop", "--role", "user"])
    out = capsys.readouterr().out.splitlines()
    key = out[0].split()[-1]
    assert out[1].split()[-1] == f"shop:user:{hash_key(key)}"
    assert len(key) >= 40


def test_key_maker_appends_to_a_private_keys_file_and_refuses_a_duplicate_name(tmp_path, capsys):
    keys = tmp_path / "keys.txt"
    main(["--name", "ops", "--role", "admin", "--keys-file", str(keys)])
    main(["--name", "shop", "--keys-file", str(keys)])
    printed = [line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith("key:")]
    assert keys.stat().st_mode & 0o777 == 0o600
    ring = KeyRing(load_keys(keys, None))
    assert [ring.identify(k).name for k in printed] == ["ops", "shop"] and ring.identify(printed[0]).is_admin
    before = keys.read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["--name", "ops", "--keys-file", str(keys)])
    assert exc.value.code == 2 and "'ops' is already there" in capsys.readouterr().err
    assert keys.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["keys.txt"]


def test_a_pasted_entry_label_is_accepted():
    (key,) = parse_entries([f"entry: shop:user:{hash_key('k')}"], "keys.txt")
    assert (key.name, key.role, key.digest) == ("shop", "user", hash_key("k"))


def test_token_bucket_refills_and_limits():
    bucket = TokenBucket(rate=1000.0, burst=2)
    assert bucket.take() == 0.0 and bucket.take() == 0.0
    wait = bucket.take()
    assert 0 < wait <= 0.001 + 1e-9
    limiter = RateLimiter(rate=0.5, burst=1)
    assert limiter.check("a") == 0
    assert limiter.check("a") == 2  # 1 token at 0.5/s: 2 s, rounded up to whole seconds
    assert limiter.check("b") == 0  # per key
    with pytest.raises(ConfigError):
        RateLimiter(rate=0, burst=1)


def test_streamed_body_over_the_limit_is_413(built, tmp_path):
    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    app = create_app(Settings(model_dir=built["models"]["ease"], store=store, keys_file=built["keys"],
                              max_body_bytes=1024))

    def chunks():
        yield b'{"customer_id": "C0", "exclude": ['
        for _ in range(200):
            yield b'"P000",'
        yield b'"P001"]}'

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/recommendations", content=chunks(),
                   headers={"X-API-Key": USER_KEY, "Content-Type": "application/json"})
        assert r.status_code == 413 and "larger than 1024 bytes" in r.json()["detail"]
        small = c.post("/v1/recommendations", json={"customer_id": "C0"}, headers={"X-API-Key": USER_KEY})
        assert small.status_code == 200
