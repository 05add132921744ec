"""schemathesis against the published OpenAPI spec: generated requests (valid and invalid) never
get a 5xx, and every response is JSON that matches its documented schema where one is given."""

from __future__ import annotations

import shutil

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from retailgan.serving import Settings, create_app  # noqa: E402
from tests.serving.conftest import ADMIN_KEY  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_app(built, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    store = root / "shop.duckdb"
    shutil.copy(built["store"], store)
    model_dir = root / "model"
    shutil.copytree(built["models"]["ease"], model_dir)
    app = create_app(Settings(model_dir=model_dir, store=store, keys_file=built["keys"], rate_limit=1e6,
                              rate_burst=1_000_000))
    # schemathesis runs the app's lifespan itself (once, kept until the interpreter exits).
    return app


def operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 10
    return ops


def fuzz(op, mode, seen: dict[str, set[int]]) -> None:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        case.headers = {**(case.headers or {}), "X-API-Key": ADMIN_KEY}
        response = case.call()
        seen.setdefault(op.label, set()).add(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, f"{op.label}: {response.status_code} {response.text}"

    try:
        run()
    except Unsatisfiable:
        # Negative mode on an operation without inputs (e.g. /healthz): nothing to make invalid.
        assert mode == GenerationMode.NEGATIVE, op.label


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(fuzz_app, mode):
    """Every operation, valid and invalid inputs (an admin key, so requests get past the auth)."""
    seen: dict[str, set[int]] = {}
    for op in operations(fuzz_app):
        fuzz(op, mode, seen)
    codes = {c for cs in seen.values() for c in cs}
    assert 422 in codes
    if mode == GenerationMode.POSITIVE:  # every operation ran, and valid requests reach the handlers
        assert len(seen) >= 10
        assert any(200 <= c < 300 for c in codes)


@st.composite
def event_batches(draw):
    events = []
    for _ in range(draw(st.integers(1, 4))):
        ev = {
            "customer_id": draw(st.text(min_size=0, max_size=70)),
            "product_id": draw(st.sampled_from(["P000", "P101", "P099", "ghost"])),
            "event_type": draw(st.sampled_from(["view", "cart", "purchase", "rating"])),
        }
        if draw(st.booleans()):
            ev["event_id"] = draw(st.text(max_size=70))
        if draw(st.booleans()):
            ev["ts"] = draw(st.datetimes(timezones=st.none() | st.timezones())).isoformat()
        if draw(st.booleans()):
            ev["quantity"] = draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10, 10**7))
        if draw(st.booleans()):
            ev["price"] = draw(st.floats(allow_nan=False, allow_infinity=False))
        events.append(ev)
    return {"events": events}


def test_event_writes_with_valid_products_never_fail(built, tmp_path):
    """The store write path with real product ids (random schema cases rarely reach it)."""
    from fastapi.testclient import TestClient

    store = tmp_path / "shop.duckdb"
    shutil.copy(built["store"], store)
    app = create_app(Settings(model_dir=built["models"]["ease"], store=store, keys_file=built["keys"],
                              rate_limit=1e6, rate_burst=1_000_000))
    codes: set[int] = set()
    with TestClient(app, raise_server_exceptions=False) as client:

        @given(batch=event_batches())
        @example(batch={"events": [{"customer_id": "x", "product_id": "P000", "event_type": "view"}]})
        @example(batch={"events": [{"customer_id": "x", "product_id": "ghost", "event_type": "view"}]})
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(batch):
            r = client.post("/v1/events", json=batch, headers={"X-API-Key": ADMIN_KEY})
            codes.add(r.status_code)
            assert r.status_code in (201, 422), r.text

        run()
    assert codes == {201, 422}
