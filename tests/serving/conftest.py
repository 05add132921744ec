"""A small store (two customer groups, two product blocks) and models fitted on it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from retailgan.data.dataset import load_dataset
from retailgan.data.ingest import ingest
from retailgan.models.base import TrainingOptions
from retailgan.models.registry import get_model_class
from retailgan.serving.security import hash_key
from tests.conftest import write_shop_logs

USER_KEY = "user-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"


def make_store(root: Path) -> Path:
    """60 customers; even ones buy products P0xx, odd ones P1xx; 30 products with titles and prices."""
    events, products = write_shop_logs(root, customers=60, events=1500, products=15, catalogue_only=True)
    path = root / "shop.duckdb"
    ingest(path, events, "events",
           mapping={"user": "customer", "item": "sku", "timestamp": "ts", "event_type": "action"},
           catalogue=products,
           catalogue_mapping={"item": "sku", "title": "name", "category": "dept", "price": "price"})
    return path


def fit(store: Path, name: str, out: Path, **params) -> Path:
    ds = load_dataset(store)
    model = get_model_class(name)(**params).fit(ds, TrainingOptions(seed=0))
    return model.save(out)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    store = make_store(root)
    models = {
        "ease": fit(store, "ease", root / "models" / "ease", l2=10.0),
        "ials": fit(store, "ials", root / "models" / "ials", factors=8, epochs=3),
    }
    keys = root / "keys.txt"
    keys.write_text(f"# test keys\nshop:user:{hash_key(USER_KEY)}\nops:admin:{hash_key(ADMIN_KEY)}\n")
    return {"root": root, "store": store, "models": models, "keys": keys}


PG_ADMIN_URLS = ("postgresql://root@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres")
"""Where the tests look for a PostgreSQL server (trust authentication); $RETAILGAN_TEST_PG overrides."""


def _pg_admin() -> str:
    psycopg = pytest.importorskip("psycopg", reason="the 'postgres' extra is not installed")
    import os

    urls = [os.environ["RETAILGAN_TEST_PG"]] if os.environ.get("RETAILGAN_TEST_PG") else list(PG_ADMIN_URLS)
    errors = []
    for url in urls:
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error as exc:
            errors.append(f"{url}: {' '.join(str(exc).split())}")
    pytest.skip("no PostgreSQL server reachable (" + "; ".join(errors) + ")")


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for this test (dropped after it), as a URL."""
    import uuid

    import psycopg

    admin = _pg_admin()
    name = f"retailgan_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def redis_url():
    """Redis at 127.0.0.1:6379 (tests keep their keys apart by their own database names)."""
    redis = pytest.importorskip("redis", reason="the 'redis' extra is not installed")
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server reachable at {url} ({exc})")
    return url
