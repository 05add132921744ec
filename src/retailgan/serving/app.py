"""The FastAPI application: recommendations, products, customers, events, health, metrics, reloads.

``create_app(settings)`` builds the app; its lifespan starts the :class:`ServiceState`
(:mod:`retailgan.serving.state`: store, keys, model, fold-in view, and with ``--events-db`` the
follower of the other replicas). See :mod:`retailgan.serving.engine` for the scoring strategies and
:mod:`retailgan.serving.security` for keys and rate limits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote
from uuid import uuid4

import anyio
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from retailgan import __version__
from retailgan.data.reftime import parse_as_of
from retailgan.errors import ConfigError, UnknownIdError
from retailgan.explanations import explain_items
from retailgan.models.diversify import dpp, mmr
from retailgan.serving import schemas as S
from retailgan.serving.engine import ModelBundle, RequestError
from retailgan.serving.metrics import MetricsMiddleware
from retailgan.serving.security import ApiKey
from retailgan.serving.settings import Settings
from retailgan.serving.state import ServiceState
from retailgan.serving.storage import NewEvent

log = logging.getLogger("retailgan.serving")
STATIC = Path(__file__).resolve().parent / "static"
ANONYMOUS = ApiKey("anonymous", "admin", "")


# -- security (module level: FastAPI resolves these annotations in the module namespace) ---------

KEY_NAME = "X-API-Key"
KEY_HEADER = APIKeyHeader(name=KEY_NAME, auto_error=False,
                          description="API key (see retailgan.serving.security)")


def check_key(request: Request) -> ApiKey:
    """401 without a key, 403 for a wrong one, 429 (with Retry-After) over the key's rate limit.

    Requests without a valid key take a token from their client address's bucket first, so a
    flood of them is refused with 429 before any key is hashed again.
    """
    state: ServiceState = request.app.state.service
    if not state.settings.auth:
        found = ANONYMOUS
    else:
        presented = request.headers.get(KEY_NAME)
        found = state.keys.identify(presented) if presented else None
        if found is None:
            client = request.client.host if request.client else "unknown"
            retry = state.anon_limiter.check(client)
            if retry:
                raise HTTPException(429, f"too many requests without a valid API key from {client}; "
                                    f"retry in {retry} s", headers={"Retry-After": str(retry)})
            if not presented:
                raise HTTPException(401, "missing API key (send it in the X-API-Key header)",
                                    headers={"WWW-Authenticate": "ApiKey"})
            raise HTTPException(403, "invalid API key")
    retry = state.limiter.check(found.name)
    if retry:
        raise HTTPException(429, f"rate limit exceeded for key {found.name!r}; retry in {retry} s",
                            headers={"Retry-After": str(retry)})
    return found


async def authenticate(request: Request, key: Annotated[str | None, Security(KEY_HEADER)]) -> ApiKey:
    """The key :class:`KeyedRoute` checked (declared as a dependency so that OpenAPI shows the scheme)."""
    found: ApiKey = request.state.api_key
    return found


async def require_admin(key: Annotated[ApiKey, Depends(authenticate)]) -> ApiKey:
    if not key.is_admin:
        raise HTTPException(403, f"key {key.name!r} is not an admin key")
    return key


IdPath = Annotated[S.Id, PathParam()]
User = Annotated[ApiKey, Depends(authenticate)]
Admin = Annotated[ApiKey, Depends(require_admin)]


def _needs_key(dependant: Any) -> bool:
    return any(d.call is authenticate or _needs_key(d) for d in dependant.dependencies)


class KeyedRoute(APIRoute):
    """A route whose endpoint depends on :func:`authenticate` checks the key before the body is
    read or parsed (FastAPI reads and parses the body before it runs any dependency)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not _needs_key(self.dependant):
            return handler

        async def checked(request: Request) -> Response:
            request.state.api_key = check_key(request)
            return await handler(request)

        return checked


ERROR_TEXT = {
    400: "Malformed request (an invalid Content-Length).",
    401: "No API key (X-API-Key header).",
    403: "Invalid API key, or a user key on an admin endpoint.",
    404: "Unknown id.",
    409: "A model reload is already running.",
    413: "Request body over the size limit.",
    422: "Invalid request: `errors` lists the fields that are wrong; unknown product, category or theme "
         "names are refused with `detail` alone.",
    429: "Rate limit exceeded (per key, or per client address without a valid key); `Retry-After` says when "
         "to try again.",
    503: "The events database is unavailable (`--events-db`); nothing was written, retry.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 1}}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (all answer :class:`~retailgan.serving.schemas.ErrorOut`)."""
    return {c: {"model": S.ErrorOut, "description": ERROR_TEXT[c],
                **({"headers": RETRY_AFTER} if c in (429, 503) else {})} for c in codes}


KEYED = error_responses(401, 403, 429)
"""What any endpoint that needs a key may answer besides its own statuses."""
BODY = error_responses(400, 413, 422)
"""What an endpoint that reads a JSON body may answer besides its own statuses."""


class BodyLimit:
    """Rejects request bodies over ``max_bytes`` with 413 (declared length or bytes received)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    response = JSONResponse(
                        {"detail": f"request body larger than {self.max_bytes} bytes" if declared > 0
                         else "invalid Content-Length"},
                        status_code=413 if declared > 0 else 400,
                    )
                    await response(scope, receive, send)
                    return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        errors.append({"field": loc, "message": e.get("msg", "invalid"), "type": e.get("type", "")})
    text = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return f"invalid request: {text}", errors


def create_app(settings: Settings) -> FastAPI:
    """The service app. The model loads in the lifespan (on start-up, or entering a TestClient)."""
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not state.started:  # `retailgan serve` starts it before binding, to exit 2 on a bad model
            await anyio.to_thread.run_sync(state.start)
        state.follow(asyncio.get_running_loop())
        try:
            yield
        finally:
            task = state.reload_task
            if task is not None and not task.done():
                await asyncio.wait([task], timeout=30)
            state.stop()

    app = FastAPI(
        title="retailgan recommendation service",
        version=__version__,
        description="Real-time product recommendations from any fitted retailgan model. "
        "Send the API key in the `X-API-Key` header.",
        lifespan=lifespan,
    )
    app.router.route_class = KeyedRoute
    app.state.service = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    # -- errors: clear 4xx messages, never a stack trace -------------------------------------

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, errors = _validation_message(exc)
        return JSONResponse({"detail": message, "errors": errors}, status_code=422)

    @app.exception_handler(RequestError)
    async def _bad(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(UnknownIdError)
    async def _unknown(request: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, status_code=500)


    # -- health -----------------------------------------------------------------------------

    @app.get("/healthz", response_model=S.Health, tags=["health"])
    async def healthz() -> S.Health:
        """The process is up."""
        return S.Health(status="ok")

    @app.get("/readyz", response_model=S.Health, tags=["health"], responses={503: {"model": S.Health}})
    async def readyz() -> Any:
        """Ready when a model is loaded and the store is open."""
        b = state.bundle
        if b is None or state.store is None:
            return JSONResponse(S.Health(status="not ready").model_dump(), status_code=503)
        return S.Health(status="ready", model_version=b.label)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- recommendations --------------------------------------------------------------------

    # In-memory endpoints are coroutines: their work (about a millisecond) runs on the event loop,
    # because a hop to the thread pool cost more CPU than the work itself on a busy 2-core machine
    # (docs/benchmarks.md, serving). Endpoints that touch the store stay in the thread pool.
    @app.post("/v1/recommendations", response_model=S.RecommendationResponse, tags=["recommendations"],
              responses={**KEYED, **BODY})
    async def recommendations(req: S.RecommendationRequest, key: User) -> Response:
        """Top-k products for a customer id, or for an ad-hoc list of product ids."""
        # Serialised here: FastAPI would validate the (already typed) response a second time.
        return _json(_recommend(state, state.current(), req))

    @app.get("/v1/products", response_model=S.ProductList, tags=["products"],
             responses={**KEYED, **error_responses(422)})
    async def products(
        key: User,
        query: Annotated[str | None, Query(max_length=100, description="Case-insensitive title search.")] = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> S.ProductList:
        """Products of the model, most bought first (title search and category filter)."""
        b = state.current()
        order = np.lexsort((np.arange(len(b.popularity)), -b.popularity))
        q = query.lower() if query else None
        out = []
        for j in order:
            title = b.titles[j]
            if category is not None and b.categories[j] != category:
                continue
            if q is not None and (title is None or q not in str(title).lower()):
                continue
            out.append(_product_out(state, b, str(b.model.items.ids[j])))
            if len(out) >= limit:
                break
        return S.ProductList(items=out)

    @app.get("/v1/products/{product_id}", response_model=S.ProductOut, tags=["products"],
             responses={**KEYED, **error_responses(404, 422)})
    async def product(product_id: IdPath, key: User) -> S.ProductOut:
        """One product: title, category, price, and whether the model can recommend it."""
        b = state.current()
        if product_id not in state.catalogue and product_id not in b.model.items:
            raise HTTPException(404, f"unknown product id {product_id!r}")
        return _product_out(state, b, product_id)

    # No key: <img> tags cannot send one, and product images are what a shop shows anyone.
    @app.get("/v1/products/{product_id}/image", tags=["products"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}, **error_responses(404, 422)})
    def product_image(product_id: IdPath) -> Response:
        """The product's image as PNG. Generated images carry a visible "generated" label and the header
        ``X-Image-Generated: true`` (their PNG text chunks say ``synthetic: true``); photos come as stored."""
        png = state.image_png(product_id)
        if png is None:
            raise HTTPException(404, f"no image for product id {product_id!r}")
        generated = state.images.get(product_id, False)
        return Response(png, media_type="image/png", headers={
            "X-Image-Generated": "true" if generated else "false", "Cache-Control": "public, max-age=3600"})

    @app.get("/v1/products/{product_id}/similar", response_model=S.SimilarResponse, tags=["products"],
             responses={**KEYED, **error_responses(404, 422)})
    async def similar(
        product_id: IdPath,
        key: User,
        k: Annotated[int, Query(ge=1, le=S.MAX_K)] = 10,
    ) -> S.SimilarResponse:
        """Products most like this one (the model's item-item scores where it has them)."""
        b = state.current()
        if product_id not in state.catalogue and product_id not in b.model.items:
            raise HTTPException(404, f"unknown product id {product_id!r}")
        j = int(b.item_index([product_id])[0])
        if j < 0:
            return S.SimilarResponse(product_id=product_id, method="none: not in the model's training data",
                                     model_version=b.label, items=[])
        scores, method = b.similar(j)
        scores = np.array(scores, dtype=np.float64)
        scores[j] = -np.inf
        top, sc = b.top_k(scores, k)
        items = [_rec_item(state, b, r, int(i), float(s)) for r, (i, s) in enumerate(zip(top, sc, strict=True), 1)]
        return S.SimilarResponse(product_id=product_id, method=method, model_version=b.label, items=items)

    # -- customers and events ---------------------------------------------------------------

    @app.get("/v1/customers", response_model=S.CustomerList, tags=["customers"],
             responses={**KEYED, **error_responses(422)})
    def customers(key: User, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> S.CustomerList:
        """The customers with the most distinct products (for picking one to look at)."""
        assert state.store is not None
        rows = state.store.top_customers(limit)
        return S.CustomerList(items=[S.CustomerOut(customer_id=c, products=n) for c, n in rows])

    @app.get("/v1/customers/{customer_id}/history", response_model=S.HistoryResponse, tags=["customers"],
             responses={**KEYED, **error_responses(404, 422)})
    def history(
        customer_id: IdPath,
        key: User,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> S.HistoryResponse:
        """The customer's latest events in the store, newest first."""
        b = state.current()
        assert state.store is not None
        known = b.user_index(customer_id) >= 0
        rows = state.history(customer_id, limit)
        if not rows and not known and not state.has_customer(customer_id):
            raise HTTPException(404, f"unknown customer id {customer_id!r}")
        events = [
            S.HistoryEvent(product_id=i, title=_title(state, b, i), event_type=t, ts=ts, quantity=q)
            for i, t, ts, q in rows
        ]
        return S.HistoryResponse(customer_id=customer_id, known_to_model=known, events=events)

    @app.get("/v1/customers/{customer_id}/campaign", response_model=S.CampaignResponse, tags=["customers"],
             responses={200: {"content": {"text/html": {}}}, **KEYED, **error_responses(404, 422)})
    def campaign(
        customer_id: IdPath,
        key: User,
        theme: Annotated[str | None, Query(max_length=200, description="e.g. category:NAME;keyword:WORD;max_price:P")]
        = None,
        k: Annotated[int, Query(ge=1, le=50)] = 10,
        recent_days: Annotated[int, Query(ge=0, le=3650)] = 30,
        banner: bool = True,
        format: Annotated[Literal["json", "html"], Query()] = "json",
        as_of: Annotated[str | None, Query(
            max_length=40, description="Reference time recent_days counts back from: 'now' or an ISO date / time "
            "(UTC); default: the service's --as-of, else the store's latest ingested event")] = None,
    ) -> Response:
        """The customer's campaign, the same as ``retailgan campaign build`` writes for them: products, reasons,
        the HTML and text e-mail and the banner (JSON), or the HTML e-mail alone with ``format=html``."""
        b = state.current()
        assert state.store is not None
        try:
            c = state.store.campaign(b, customer_id, theme=theme, k=k, recent_days=recent_days, banner=banner,
                                     as_of=parse_as_of(as_of or state.settings.as_of))
        except UnknownIdError:
            raise HTTPException(404, f"unknown customer id {customer_id!r}") from None
        except ConfigError as exc:
            raise RequestError(str(exc)) from None
        if format == "html":
            return Response(c.html, media_type="text/html; charset=utf-8")
        return _json(S.CampaignResponse.model_validate(c.to_dict(banner=banner)))

    @app.post("/v1/events", response_model=S.EventsAccepted, status_code=201, tags=["customers"],
              responses={**KEYED, **BODY, **error_responses(503)})
    def events(batch: S.EventBatch, key: User) -> S.EventsAccepted:
        """Store events durably (committed before the response) and fold them in at once."""
        b = state.current()
        assert state.store is not None
        unknown = sorted({e.product_id for e in batch.events
                          if e.product_id not in state.catalogue and e.product_id not in b.model.items})
        if unknown:
            raise RequestError(f"unknown product id(s): {', '.join(repr(u) for u in unknown[:10])}")
        now = datetime.now(timezone.utc)
        new = [
            NewEvent(
                event_id=e.event_id or uuid4().hex,
                customer_id=e.customer_id,
                product_id=e.product_id,
                event_type=e.event_type,
                ts=e.ts or now,
                quantity=e.quantity,
                price=e.price,
            )
            for e in batch.events
        ]
        written = state.write_events(new)
        state.metrics.events.inc(written)
        return S.EventsAccepted(accepted=len(new), written=written)

    # -- admin ------------------------------------------------------------------------------

    @app.get("/admin/models", response_model=S.ModelStatus, tags=["admin"], responses=KEYED)
    async def model_status(key: Admin) -> S.ModelStatus:
        """The model being served and the state of the last reload."""
        return state.status()

    @app.post("/admin/models/reload", response_model=S.ModelStatus, status_code=202, tags=["admin"],
              responses={200: {"model": S.ModelStatus}, **KEYED, **BODY, **error_responses(409),
                         422: {"model": S.ModelStatus | S.ErrorOut,
                               "description": "Invalid request, or (with wait) the new model was refused: "
                               "the old one keeps serving."}})
    async def reload(key: Admin, body: S.ReloadRequest | None = None) -> Any:
        """Load the model directory again in the background, validate it, swap it in atomically.

        Requests already running finish on the old model. A model that fails to load or to score
        is refused and the old one keeps serving (``reload_state`` = failed, ``last_error`` says why).
        """
        if state.reload_task is not None and not state.reload_task.done():
            raise HTTPException(409, "a model reload is already running")
        state.reload_task = asyncio.create_task(state.reload())
        if body is not None and body.wait:
            await state.reload_task
            code = 200 if state.reload_state == "succeeded" else 422
            return JSONResponse(state.status().model_dump(mode="json"), status_code=code)
        return JSONResponse(state.status().model_dump(mode="json"), status_code=202)

    @app.post("/admin/customers/forget", response_model=S.ForgetResponse, tags=["admin"],
              responses={**KEYED, **BODY, **error_responses(409)})
    async def forget(body: S.ForgetRequest, key: Admin) -> Any:
        """Erase customers (a request to be forgotten): their events, customer and rejected rows (the
        store file is rewritten), their rows in the served model directory (reloaded at once) and the
        fold-in view. Answers with the audit record, which holds no customer id."""
        if state.reload_task is not None and not state.reload_task.done():
            raise HTTPException(409, "a model reload is running; retry when it has finished")
        if state.events is not None:
            raise HTTPException(409, "with --events-db every process holds the store open read-only and "
                                "erasure rewrites it: stop the service and run `retailgan forget` with --events-db")
        try:
            report = await anyio.to_thread.run_sync(state.forget, body.customer_ids, body.reference)
        except ConfigError as exc:  # an id that is blank once stripped
            raise RequestError(str(exc)) from None
        log.info("erased %d customer(s), audit record %s", report.customers, report.erasure_id)
        return S.ForgetResponse(**report.to_dict())

    # -- the merchandiser page ---------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
    return app


# -- helpers ----------------------------------------------------------------------------------


def _json(model: S.Strict) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _title(state: ServiceState, b: ModelBundle, product_id: str) -> str | None:
    p = state.catalogue.get(product_id)
    if p is not None and p.title is not None:
        return p.title
    j = int(b.item_index([product_id])[0])
    return None if j < 0 or b.titles[j] is None else str(b.titles[j])


def _price(x: float) -> float | None:
    return None if x != x else float(x)


def _image(state: ServiceState, product_id: str) -> dict[str, Any]:
    generated = state.images.get(product_id)
    if generated is None:
        return {}
    return {"image_url": f"/v1/products/{quote(product_id, safe='')}/image", "image_generated": generated}


def _product_out(state: ServiceState, b: ModelBundle, product_id: str) -> S.ProductOut:
    j = int(b.item_index([product_id])[0])
    p = state.catalogue.get(product_id)
    if j >= 0:
        return S.ProductOut(
            product_id=product_id,
            title=p.title if p and p.title is not None else (None if b.titles[j] is None else str(b.titles[j])),
            category=p.category if p and p.category is not None else (b.categories[j] or None),
            price=p.price if p and p.price is not None else _price(float(b.prices[j])),
            in_model=True,
            customers=int(b.popularity[j]),
            **_image(state, product_id),
        )
    assert p is not None
    return S.ProductOut(product_id=product_id, title=p.title, category=p.category, price=p.price,
                        in_model=False, customers=None, **_image(state, product_id))


def _rec_item(state: ServiceState, b: ModelBundle, rank: int, j: int, score: float) -> S.RecommendedProduct:
    pid = str(b.model.items.ids[j])
    return S.RecommendedProduct(
        rank=rank,
        product_id=pid,
        title=_title(state, b, pid),
        category=b.categories[j] or None,
        price=_price(float(b.prices[j])),
        score=score,
        **_image(state, pid),
    )


def _check_known(state: ServiceState, b: ModelBundle, ids: list[str], what: str) -> None:
    unknown = [p for p in ids if p not in state.catalogue and p not in b.model.items]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10])
        raise RequestError(f"unknown product id(s) in {what}: {shown}")


def _recommend(state: ServiceState, b: ModelBundle, req: S.RecommendationRequest) -> S.RecommendationResponse:
    notes: list[str] = []
    known = False
    empty = np.zeros(0, dtype=np.int64)
    scores: np.ndarray | None = None
    query: np.ndarray | None = None  # an ad-hoc history to score (fold-in, session)
    u = -1
    if req.customer_id is not None:
        u = b.user_index(req.customer_id)
        known = u >= 0
        new_idx = b.item_index(state.overlay(req.customer_id))
        new_idx = new_idx[new_idx >= 0]
        hist = np.union1d(b.seen_items(u) if known else empty, new_idx)
        if len(new_idx) and b.foldin:
            query, strategy = hist, "fold-in"
        elif known:
            strategy = "model"  # scored below: the model's top-k path where it has one
            if len(new_idx):
                notes.append(f"the {b.name} model cannot fold in new events: products from them are left out "
                             "of the list, and the scores change once the model is retrained")
        else:
            scores, strategy = b.popularity.copy(), "popular"
            if len(new_idx):
                notes.append(f"the {b.name} model cannot fold in new events: popular products shown")
    else:
        ids = list(req.product_ids or [])
        _check_known(state, b, ids, "product_ids")
        idx = b.item_index(ids)
        if (idx < 0).any():
            notes.append(f"{int((idx < 0).sum())} product(s) of the session are not in the model and were ignored")
        hist = np.unique(idx[idx >= 0])
        if len(hist) and b.foldin:
            query, strategy = hist, "session"
        else:
            scores, strategy = b.popularity.copy(), "popular"
            if len(hist):
                notes.append(f"the {b.name} model cannot score ad-hoc sessions: popular products shown")
    banned = hist if req.exclude_seen else empty
    if req.exclude:
        ex = b.item_index(req.exclude)
        banned = np.union1d(banned, ex[ex >= 0])
    allowed = _allowed(state, b, req)
    pool_k = 3 * req.k if req.diversity > 0 else req.k  # diversity re-ranks the best 3 k
    if query is not None and b.index_ranks_histories():
        # A history searched in the model's retrieval index: no dense row over the catalogue.
        top, sc = b.rank_history(query, pool_k, banned, allowed)
    elif scores is None and query is None and b.fast_top_k(u):
        # No dense row over the catalogue: the model's exact top-k (factor models score a
        # norm-ordered prefix of the products for most customers, docs/benchmarks.md, Scale).
        top, sc = b.rank_known(u, pool_k, banned, allowed)
    else:
        if scores is None:
            scores = b.score_user(u) if query is None else b.score_history(query)
        scores = np.array(scores, dtype=np.float64)
        scores[banned] = -np.inf
        if allowed is not None:
            scores[~allowed] = -np.inf
        top, sc = b.top_k(scores, pool_k)
    if req.diversity > 0:
        top, sc = diverse_top_k(b, top, sc, req)
    items = [_rec_item(state, b, r, int(i), float(s)) for r, (i, s) in enumerate(zip(top, sc, strict=True), 1)]
    if req.explain:
        _explain(state, b, items, top, hist, strategy)
    return S.RecommendationResponse(
        customer_id=req.customer_id,
        known_customer=known,
        strategy=strategy,  # type: ignore[arg-type]
        history_size=len(hist),
        model_version=b.label,
        items=items,
        notes=notes,
    )


def _allowed(state: ServiceState, b: ModelBundle, req: S.RecommendationRequest) -> np.ndarray | None:
    """The products a request's candidates and filters allow (a mask), or None: all of them."""
    f = req.filters
    by_category = f is not None and f.categories is not None
    by_price = f is not None and f.max_price is not None
    if req.candidates is None and not by_category and not by_price:
        return None
    allowed = np.ones(b.model.n_items, dtype=bool)
    if req.candidates is not None:
        _check_known(state, b, req.candidates, "candidates")
        cidx = b.item_index(req.candidates)
        allowed[:] = False
        allowed[cidx[cidx >= 0]] = True
    if by_category:
        assert f is not None and f.categories is not None
        unknown = [c for c in f.categories if c not in b.category_index]
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise RequestError(f"unknown categor(ies) in filters.categories: {shown}")
        in_cat = np.zeros(len(allowed), dtype=bool)
        for c in f.categories:
            in_cat[b.category_index[c]] = True
        allowed &= in_cat
    if by_price:
        assert f is not None
        with np.errstate(invalid="ignore"):
            allowed &= b.prices <= f.max_price  # unknown prices (NaN) never pass a price filter
    return allowed


def diverse_top_k(
    b: ModelBundle, pool: np.ndarray, pool_scores: np.ndarray, req: S.RecommendationRequest
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank the model's best ``3 k`` allowed products (``pool``, best first) into ``k``:
    relevance is the score min-max scaled over that pool (so one ``diversity`` means the same for
    every model); similarity is :meth:`ModelBundle.similarity`. The DPP reads that relevance at
    temperature 1, so each pick maximises ``(1 - d) / d * rel + log(residual)`` (the part of its
    vector the list does not span yet), weighing relevance against variety as MMR's
    ``(1 - d) * rel - d * sim``."""
    if len(pool) < 2:
        return pool, pool_scores
    span = float(pool_scores[0] - pool_scores[-1])
    rel = (pool_scores - pool_scores[-1]) / span if span > 0 else np.zeros(len(pool))
    sim, _ = b.similarity(pool)
    k = min(req.k, len(pool))
    if req.diversify == "dpp":
        chosen = dpp(rel, sim, k, req.diversity, temperature=1.0)
    else:
        chosen = mmr(rel, sim, k, req.diversity)
    return pool[chosen], pool_scores[chosen]


def _explain(
    state: ServiceState, b: ModelBundle, items: list[S.RecommendedProduct], top: np.ndarray, hist: np.ndarray,
    strategy: str,
) -> None:
    """Attach reasons (see :func:`retailgan.explanations.explain_items`) to each recommended product."""
    reasons = explain_items(b.model, b.name, b.popularity, top, hist, strategy, lambda pid: _title(state, b, pid))
    for item, rs in zip(items, reasons, strict=True):
        item.reasons = [S.Reason(kind=r.kind, text=r.text, product_id=r.product_id, title=r.title,  # type: ignore[arg-type]
                                 contribution=r.contribution) for r in rs]
