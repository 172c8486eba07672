"""Prometheus metrics: requests and latency per route, and the in-process cache's counters."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastctx.registry import Registry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip


class _CacheCollector(Collector):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        cache = self.registry.cache
        if cache is None:
            return
        for name, value, doc in (
            ("hits", cache.hits, "Reads answered by the in-process cache."),
            ("misses", cache.misses, "Cache lookups that found nothing usable."),
            ("evictions", cache.evictions, "Entries evicted to stay within the byte bound."),
        ):
            yield CounterMetricFamily(f"fastctx_cache_{name}", doc, value=value)
        yield GaugeMetricFamily("fastctx_cache_bytes", "Bytes held.", value=cache.bytes_used)
        yield GaugeMetricFamily("fastctx_cache_entries", "Entries held.", value=len(cache))


class Metrics:
    def __init__(self, registry: Registry) -> None:
        self.collectors = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fastctx_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.collectors,
        )
        self.latency = Histogram(
            "fastctx_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.collectors,
        )
        self.reads = Counter(
            "fastctx_context_reads",
            "Context reads by how the cache answered (X-Cache).",
            ["cache"],
            registry=self.collectors,
        )
        self.collectors.register(_CacheCollector(registry))

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.collectors), media_type=CONTENT_TYPE)


def _route_label(route: BaseRoute | None) -> str:
    # Templates, not paths: one series per route however many tokens there are.
    return route.path if isinstance(route, Route) else "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if scope.get("route") is not None and scope["path"].startswith("/v1/contexts/"):
                    for name, value in message.get("headers", ()):
                        if name == b"x-cache":
                            self.metrics.reads.labels(value.decode()).inc()
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = _route_label(scope.get("route"))
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
