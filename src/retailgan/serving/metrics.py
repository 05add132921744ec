"""Prometheus metrics (one registry per app, so several apps can live in one process)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "retailgan_http_requests", "HTTP requests by route and status.", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "retailgan_http_request_duration_seconds", "Time from request start to the end of the response.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.model_info = Gauge(
            "retailgan_model_info", "The model being served (value 1).", ["model", "version"], registry=self.registry
        )
        self.reloads = Counter(
            "retailgan_model_reloads", "Model reloads by outcome.", ["outcome"], registry=self.registry
        )
        self.events = Counter("retailgan_events_written", "Events written to the store.", registry=self.registry)
        self.in_flight = Gauge("retailgan_http_requests_in_flight", "Requests being served.", registry=self.registry)
        ProcessCollector(registry=self.registry)  # CPU seconds, resident memory, open files

    def set_model(self, name: str, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model=name, version=version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests and times them, labelled by route template (not raw path: bounded labels)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path", None)
            if path is None:
                path = "/ui" if scope.get("path", "").startswith("/ui") else "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status["code"])).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)
