"""Prometheus metrics: requests and latency per route, context reads, and the cache's counters.

Counting happens in plain dicts on the event loop (one worker is one thread), which costs a
fraction of prometheus_client's locked metric objects on every request; a collector turns the
dicts into metric families only when /metrics is scraped.
"""

from __future__ import annotations

import bisect
import gc
import logging
from collections.abc import Iterator

from prometheus_client import GC_COLLECTOR, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fastctx.asgi.guard import Guard, StreamLimit
from fastctx.logs import ACCESS_LOGGER
from fastctx.registry import Registry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip
# Every request is observed here with its route template, so the access log is written here too.
access_log = logging.getLogger(ACCESS_LOGGER)


class RequestStats:
    """Request counts by (route, method, status), latency histograms by (route, method)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        # (route, method) -> [count per bucket ..., +Inf count, sum of seconds]
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.reads: dict[str, int] = {"hit": 0, "miss": 0, "stale": 0}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get((route, method))
        if histogram is None:
            histogram = self.latency[(route, method)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        histogram[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        histogram[-1] += seconds
        if access_log.isEnabledFor(logging.INFO):
            milliseconds = round(seconds * 1000, 3)
            access_log.info(
                "%s %s %d %.3fms",
                method,
                route,
                status,
                milliseconds,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": milliseconds,
                },
            )


class _Collector(Collector):
    def __init__(
        self,
        stats: RequestStats,
        registry: Registry,
        guard: Guard | None,
        streams: StreamLimit | None,
    ) -> None:
        self.stats = stats
        self.registry = registry
        self.guard = guard
        self.streams = streams

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "fastctx_requests",
            "HTTP requests by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in sorted(self.stats.requests.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "fastctx_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            labels=["route", "method"],
        )
        bounds = [*map(str, LATENCY_BUCKETS), "+Inf"]
        for (route, method), histogram in sorted(self.stats.latency.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, observed in zip(bounds, histogram, strict=False):  # the last item is the sum
                cumulative += observed
                buckets.append((bound, cumulative))
            latency.add_metric([route, method], buckets, sum_value=histogram[-1])
        yield latency
        yield GaugeMetricFamily(
            "fastctx_gc_frozen_objects",
            "Objects frozen out of the cyclic collector's work (`fastctx serve` freezes the heap "
            "a worker starts with).",
            value=gc.get_freeze_count(),
        )
        reads = CounterMetricFamily(
            "fastctx_context_reads", "Context reads by how the cache answered.", labels=["cache"]
        )
        for state, count in self.stats.reads.items():
            reads.add_metric([state], count)
        yield reads
        yield from self._degradation()
        cache = self.registry.cache
        if cache is None:
            return
        for name, value, doc in (
            ("hits", cache.hits, "Cache lookups that found an entry."),
            ("misses", cache.misses, "Cache lookups that found nothing usable."),
            ("evictions", cache.evictions, "Entries evicted to stay within the byte bound."),
        ):
            yield CounterMetricFamily(f"fastctx_cache_{name}", doc, value=value)
        yield GaugeMetricFamily("fastctx_cache_bytes", "Bytes held.", value=cache.bytes_used)
        yield GaugeMetricFamily("fastctx_cache_entries", "Entries held.", value=len(cache))

    def _degradation(self) -> Iterator[Metric]:
        """Load shedding, the bound on event streams, and the backend's circuit breaker."""
        if self.guard is not None:
            yield CounterMetricFamily(
                "fastctx_shed_requests",
                "Requests refused with 503 because too many were in flight.",
                value=self.guard.shed,
            )
            yield GaugeMetricFamily(
                "fastctx_inflight_requests", "Requests in flight.", value=self.guard.inflight
            )
        if self.streams is not None:
            yield GaugeMetricFamily(
                "fastctx_open_streams", "Event streams open (SSE, MCP).", value=self.streams.open
            )
            yield CounterMetricFamily(
                "fastctx_refused_streams",
                "Event streams refused with 503 because as many were open as allowed.",
                value=self.streams.refused,
            )
        health = self.registry.backend.health()
        if health is not None:
            yield GaugeMetricFamily(
                "fastctx_backend_circuit_open",
                "1 while backend calls fail fast after repeated failures.",
                value=1 if health.circuit_open else 0,
            )
            yield CounterMetricFamily(
                "fastctx_backend_circuit_opened",
                "Times the backend circuit breaker opened.",
                value=health.circuit_opened,
            )


class Metrics:
    def __init__(
        self,
        registry: Registry,
        guard: Guard | None = None,
        streams: StreamLimit | None = None,
    ) -> None:
        self.stats = RequestStats()
        self.collectors = CollectorRegistry(auto_describe=True)
        self.collectors.register(_Collector(self.stats, registry, guard, streams))
        # python_gc_*: collections and what they found, by generation.
        self.collectors.register(GC_COLLECTOR)
