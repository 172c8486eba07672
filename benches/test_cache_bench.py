"""Micro benchmarks: the Rust in-process cache against an OrderedDict LRU bounded by bytes."""

from __future__ import annotations

import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fastctx import _core

KIB = 1024

ENTRY_OVERHEAD = 128  # what _core.Cache charges per entry beside its payload and key


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class PyCache:
    """_core.Cache's contract on an OrderedDict; no lock, as the event loop is its only user."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self.hits = self.misses = self.evictions = 0
        # key -> (payload, version, expires_at, cached_at); the end is the most recent.
        self._entries: OrderedDict[str, tuple[bytes, int, int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        self.bytes_used -= len(self._entries.pop(key)[0]) + len(key) + ENTRY_OVERHEAD

    def get(self, key: str) -> tuple[bytes, int, int, int] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[2] and entry[2] <= now_ms():
            self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: str, payload: bytes, version: int, expires_at: int) -> None:
        now = now_ms()
        old = self._entries.get(key)
        if old is not None:
            if (not old[2] or now < old[2]) and old[1] > version:
                return
            self._drop(key)
        size = len(payload) + len(key) + ENTRY_OVERHEAD
        if size > self.max_bytes or (expires_at and expires_at <= now):
            return
        while self.bytes_used + size > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1
        self._entries[key] = (payload, version, expires_at, now)
        self.bytes_used += size


CacheLike = _core.Cache | PyCache
CACHES: dict[str, Callable[[int], CacheLike]] = {"rust": _core.Cache, "python": PyCache}
# 4096 tenant:token keys of 1 KiB payloads in a cache with room for 3000 of them.
N_KEYS, OPS = 4096, 1000
KEYS = [f"acme:{_core.new_token()}" for _ in range(N_KEYS)]
PAYLOADS = [secrets.token_bytes(KIB) for _ in range(64)]
CACHE_BYTES = 3000 * (KIB + len(KEYS[0]) + ENTRY_OVERHEAD)
_rng = random.Random(3)
# The most recently filled keys are the hot ones (the rest were evicted); one read in ten is of
# any key, which misses about a quarter of the time.
READ_KEYS = [
    KEYS[_rng.randrange(N_KEYS)]
    if _rng.random() < 0.1
    else KEYS[N_KEYS - 1 - min(int(_rng.expovariate(1 / 500)), N_KEYS - 1)]
    for _ in range(OPS)
]
# One version throughout, so that repeated rounds replace entries instead of being refused.
WRITES = [(KEYS[_rng.randrange(N_KEYS)], PAYLOADS[i % 64], 2) for i in range(OPS)]
EXPIRES = now_ms() + 86_400_000


def filled(impl: str) -> CacheLike:
    cache = CACHES[impl](CACHE_BYTES)
    for i, key in enumerate(KEYS):
        cache.put(key, PAYLOADS[i % 64], 1, EXPIRES)
    return cache


def read_all(cache: CacheLike) -> int:
    found = 0
    for key in READ_KEYS:
        if cache.get(key) is not None:
            found += 1
    return found


def write_all(cache: CacheLike) -> None:
    for key, payload, version in WRITES:
        cache.put(key, payload, version, EXPIRES)


def test_caches_are_equivalent() -> None:
    caches = {impl: filled(impl) for impl in CACHES}
    for cache in caches.values():
        write_all(cache)
        cache.put(KEYS[0], b"x", 0, EXPIRES)  # an older version never replaces a newer one
        cache.put(KEYS[1], b"x", 5, 1)  # expired on arrival: dropped, not kept
    rust, python = caches["rust"], caches["python"]
    for key in [*KEYS, "acme:absent"]:
        a, b = rust.get(key), python.get(key)
        assert (a is None) == (b is None), key
        if a is not None and b is not None:
            assert a[0] is b[0], "both hand back the very payload object that was put"
            assert a[1:3] == b[1:3]
    for attr in ("bytes_used", "hits", "misses", "evictions"):
        assert getattr(rust, attr) == getattr(python, attr), attr
    assert len(rust) == len(python) < N_KEYS
    assert read_all(filled("rust")) == read_all(filled("python"))


@pytest.mark.benchmark(group="cache-get-x1000")
@pytest.mark.parametrize("impl", list(CACHES))
def test_cache_get(benchmark: BenchmarkFixture, impl: str) -> None:
    benchmark.extra_info["ops"] = OPS
    assert benchmark(read_all, filled(impl)) > OPS // 2


@pytest.mark.benchmark(group="cache-put-x1000")
@pytest.mark.parametrize("impl", list(CACHES))
def test_cache_put(benchmark: BenchmarkFixture, impl: str) -> None:
    benchmark.extra_info["ops"] = OPS
    cache = filled(impl)
    benchmark(write_all, cache)
    assert cache.evictions > 0
