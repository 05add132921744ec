"""What a running service holds: the model, the store, the fold-in view, rate limiters, reloads.

One process serves from the embedded DuckDB store and writes its events there. With
``--events-db`` (:mod:`retailgan.serving.pgevents`) events go to PostgreSQL instead, the store is
opened read-only (DuckDB lets many processes read a file that no process writes), and a follower
thread folds in the events and model reloads of every other process and host.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import HTTPException

from retailgan.data.reftime import parse_as_of
from retailgan.errors import ConfigError, RetailganError
from retailgan.serving import schemas as S
from retailgan.serving.engine import ModelBundle, Product
from retailgan.serving.metrics import Metrics
from retailgan.serving.security import KeyRing, RateLimiter, load_keys
from retailgan.serving.settings import Settings
from retailgan.serving.storage import NewEvent, ServiceStore

if TYPE_CHECKING:
    from retailgan.forget import ForgetReport
    from retailgan.serving.pgevents import Follower, PgEventStore, StoredEvent

log = logging.getLogger("retailgan.serving")
IMAGE_CACHE = 1024
"""Product images kept in memory, ready to send (first in, first out)."""
ANON_CLIENTS = 10_000
"""Client addresses whose unauthenticated-request buckets are kept (the oldest is dropped first)."""


def labelled_png(png: bytes) -> bytes:
    """A generated image as shown to people: the visible "generated" label stamped on, provenance chunks kept."""
    import io

    from PIL import Image

    from retailgan.data.images import encode_png
    from retailgan.imagegen.provenance import label_generated

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        text = dict(getattr(im, "text", {}) or {})
        out, _, _ = encode_png(label_generated(im), text)
    return out


class ServiceState:
    """Everything a running app holds; ``bundle`` is swapped atomically on reload."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.bundle: ModelBundle | None = None
        self.store: ServiceStore | None = None
        self.events: PgEventStore | None = None
        """Shared events in PostgreSQL (``--events-db``), else None: events go to :attr:`store`."""
        self.follower: Follower | None = None
        self.catalogue: dict[str, Product] = {}
        self.images: dict[str, bool] = {}
        """Products with an image in the store -> whether it was generated (read at start-up)."""
        self._image_cache: dict[str, bytes] = {}
        self.keys = KeyRing([])
        self.limiter: Any = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.anon_limiter: Any = RateLimiter(settings.anon_rate_limit, settings.anon_rate_burst,
                                             max_names=ANON_CLIENTS)
        self.reload_state = "idle"
        self.last_error: str | None = None
        self.reload_task: asyncio.Task[None] | None = None
        self.generation = 0
        """The shared model generation this process has reloaded for (``--events-db``)."""
        self._generation_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._position: Any = None
        # Products each customer interacted with through POST /v1/events (fold-in input).
        self._overlay: dict[str, set[str]] = {}
        self._overlay_lock = threading.Lock()

    def start(self) -> None:
        s = self.settings
        if s.auth:
            self.keys = KeyRing(load_keys(s.keys_file, s.api_keys))
            if not len(self.keys):
                raise ConfigError(
                    "no API keys configured: pass --keys FILE or set RETAILGAN_API_KEYS "
                    "(make one with `python -m retailgan.serving.security --name NAME --role admin`), "
                    "or serve without keys with --no-auth"
                )
        try:
            if s.events_db:
                from retailgan.serving.pgevents import PgEventStore

                self.events = PgEventStore(s.events_db)
            if s.rate_limit_redis:
                self._shared_limiters(s.rate_limit_redis)
            self.store = ServiceStore(s.store, read_only=self.events is not None)
            self.catalogue = self.store.catalogue()
            self.images = self.store.image_flags()
            for customer, product, _ in self.store.api_events():
                self.add_overlay(customer, product)
            if self.events is not None:
                self.generation = self.events.model_generation()
                self._position = self._fold_in_shared()
            self.set_bundle(self.load_bundle(s.model_dir))
        except BaseException:
            self.stop()
            raise

    def _shared_limiters(self, url: str) -> None:
        from retailgan.serving.shared_limits import RedisRateLimiter

        s = self.settings
        # Replicas of one service share buckets; services on other event databases do not.
        space = self.events.database if self.events is not None else "local"
        self.limiter = RedisRateLimiter(url, s.rate_limit, s.rate_burst, f"{space}:key")
        self.anon_limiter = RedisRateLimiter(url, s.anon_rate_limit, s.anon_rate_burst, f"{space}:anon")

    def _fold_in_shared(self) -> Any:
        from retailgan.serving.pgevents import Position

        assert self.events is not None
        events, pos = self.events.read_since(Position())
        self._add_stored(events)
        return pos

    def _add_stored(self, events: list[StoredEvent]) -> None:
        with self._overlay_lock:
            for e in events:
                self._overlay.setdefault(e.customer_id, set()).add(e.product_id)

    def follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start following the other replicas' events and reloads (``--events-db`` only)."""
        if self.events is None or self.follower is not None:
            return
        from retailgan.serving.pgevents import Follower

        self._loop = loop
        self.follower = Follower(self.events, self._position, self._add_stored, self._on_generation,
                                 poll_s=self.settings.events_poll_s)
        self.follower.start()

    def _on_generation(self, generation: int) -> None:
        """(follower thread) Another replica published a validated model: reload ours."""
        with self._generation_lock:
            if generation <= self.generation:
                return
            self.generation = generation
        loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._reload_after_others(), loop)

    async def _reload_after_others(self) -> None:
        task = self.reload_task
        if task is not None and not task.done():
            await asyncio.wait([task])  # it may have read the directory before the change
        log.info("another replica reloaded the model; reloading %s", self.settings.model_dir)
        self.reload_task = asyncio.create_task(self.reload(publish=False))
        await self.reload_task
        if self.reload_state == "succeeded" and self.events is not None and self.bundle is not None:
            # Each host reads its own copy of the directory: say so when it holds another model.
            published = await anyio.to_thread.run_sync(self.events.published_version)
            if published is not None and published != self.bundle.version:
                self.last_error = (f"{self.settings.model_dir} holds model version {self.bundle.version}, the replica "
                                   f"that reloaded validated {published}: is the new model deployed here?")
                log.warning("%s", self.last_error)

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.events is not None:
            self.events.close()
            self.events = None
        for limiter in (self.limiter, self.anon_limiter):
            close = getattr(limiter, "close", None)
            if close is not None:
                close()

    @property
    def started(self) -> bool:
        """:meth:`start` succeeded (the model is loaded last) and :meth:`stop` has not run since."""
        return self.store is not None and self.bundle is not None

    def load_bundle(self, path: Path) -> ModelBundle:
        """Load a model directory and check it against the store's catalogue; a model that follows
        recent sales (featgan ``trend_days``) gets them from the store, as of its latest event,
        instead of the training snapshot."""
        bundle = ModelBundle.load(path, self.catalogue)
        bundle.check_catalogue(self.catalogue, self.settings.store)
        if bundle.trend_days and self.store is not None:
            bundle.set_recent_sales(self.store.recent_buyers(bundle.trend_days, parse_as_of(self.settings.as_of)))
        return bundle

    def set_bundle(self, bundle: ModelBundle) -> None:
        self.bundle = bundle  # one reference assignment: requests see the old or the new model
        self.metrics.set_model(bundle.name, bundle.version)

    # -- events ---------------------------------------------------------------------------------

    def write_events(self, events: Sequence[NewEvent]) -> int:
        """Commit the events (PostgreSQL with ``--events-db``, else the store), then fold them in here."""
        if self.events is not None:
            import psycopg

            try:
                written = self.events.write_events(events)
            except psycopg.OperationalError as exc:  # includes the pool's timeout: nothing was committed
                log.warning("events database unavailable: %s", exc)
                raise HTTPException(503, "the events database is unavailable; retry (the same event_id is "
                                    "written once)", headers={"Retry-After": "1"}) from None
        else:
            assert self.store is not None
            written = self.store.write_events(events)
        for e in events:
            self.add_overlay(e.customer_id, e.product_id)
        return written

    def history(self, customer_id: str, limit: int) -> list[tuple[str, str, datetime | None, float | None]]:
        """The customer's latest events, newest first: the store's, and the shared database's."""
        assert self.store is not None
        rows = self.store.history(customer_id, limit)
        if self.events is not None:
            rows += self.events.history(customer_id, limit)
            never = datetime.min
            rows.sort(key=lambda r: r[0])
            rows.sort(key=lambda r: r[2] if r[2] is not None else never, reverse=True)
            rows = rows[:limit]
        return rows

    def has_customer(self, customer_id: str) -> bool:
        assert self.store is not None
        return self.store.has_customer(customer_id) or (
            self.events is not None and self.events.has_customer(customer_id))

    def add_overlay(self, customer: str, product: str) -> None:
        with self._overlay_lock:
            self._overlay.setdefault(customer, set()).add(product)

    def overlay(self, customer: str) -> list[str]:
        with self._overlay_lock:
            return sorted(self._overlay.get(customer, ()))

    def forget(self, customer_ids: list[str], reference: str | None) -> ForgetReport:
        """Erase customers everywhere this service holds them (:mod:`retailgan.forget`): the served
        model directory (then reloaded), the fold-in view, the store (rewritten). Runs in a thread."""
        from retailgan.forget import check_ids, forget_in_model, new_report

        ids = check_ids(customer_ids)
        report = new_report(ids, reference)
        path = self.settings.model_dir
        report.models[str(path)] = forget_in_model(path, ids)
        self.set_bundle(self.load_bundle(path))
        with self._overlay_lock:
            report.service["foldin_customers"] = sum(self._overlay.pop(c, None) is not None for c in ids)
        assert self.store is not None
        self.store.erase(ids, report)
        return report

    def image_png(self, product_id: str) -> bytes | None:
        """The PNG shown for a product: the photo as stored, a generated image with its visible label stamped."""
        png = self._image_cache.get(product_id)
        if png is not None or product_id not in self.images:
            return png
        assert self.store is not None
        im = self.store.image(product_id)
        if im is None:
            return None
        png = im.png
        if im.generated:
            png = labelled_png(png)
        if len(self._image_cache) >= IMAGE_CACHE:
            self._image_cache.pop(next(iter(self._image_cache)))
        self._image_cache[product_id] = png
        return png

    # -- model ----------------------------------------------------------------------------------

    def current(self) -> ModelBundle:
        b = self.bundle
        if b is None:
            raise HTTPException(503, "no model loaded yet")
        return b

    async def reload(self, publish: bool = True) -> None:
        """Load, validate and swap in the model directory; with ``--events-db`` and ``publish``, a
        model that passed is announced to every other replica, which reload theirs."""
        self.reload_state, self.last_error = "loading", None
        path = self.settings.model_dir
        try:
            bundle = await anyio.to_thread.run_sync(self.load_bundle, path)
        except RetailganError as exc:
            self._reload_failed(str(exc))
        except Exception as exc:  # anything else a broken file can raise: refuse it, keep serving
            log.exception("model reload failed")
            self._reload_failed(f"{path}: cannot load model ({type(exc).__name__})")
        else:
            self.set_bundle(bundle)
            self.reload_state = "succeeded"
            self.metrics.reloads.labels("succeeded").inc()
            log.info("serving model %s from %s", bundle.label, path)
            if publish and self.events is not None:
                await anyio.to_thread.run_sync(self._publish, bundle.version)

    def _publish(self, version: str) -> None:
        assert self.events is not None
        try:
            with self._generation_lock:  # our own follower must not take this generation for another's
                self.generation = self.events.publish_model(version)
        except Exception as exc:
            self.last_error = f"reloaded here, but the other replicas were not told: {type(exc).__name__}: {exc}"
            log.warning("model reload not announced to the other replicas: %s", exc)

    def _reload_failed(self, message: str) -> None:
        self.reload_state, self.last_error = "failed", message
        self.metrics.reloads.labels("failed").inc()
        log.warning("model reload refused, still serving %s: %s", self.bundle.label if self.bundle else None, message)

    def status(self) -> S.ModelStatus:
        b = self.current()
        return S.ModelStatus(
            model=b.name,
            version=b.version,
            path=str(b.path),
            loaded_at=datetime.fromtimestamp(b.loaded_at, tz=timezone.utc),
            foldin=b.foldin,
            items=b.model.n_items,
            customers=b.model.n_users,
            reload_state=self.reload_state,  # type: ignore[arg-type]
            last_error=self.last_error,
        )
