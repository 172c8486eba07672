"""Cache: byte-bounded LRU with per-entry expiry, thread-safe, no copies."""

import random
import threading
import time

import pytest

from fastctx import _core


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def lookup(cache: _core.Cache, key: str) -> tuple[bytes, int, int, int]:
    found = cache.get(key)
    assert found is not None, key
    return found


def entry_size(key: str, payload: bytes) -> int:
    probe = _core.Cache(1 << 20)
    probe.put(key, payload, 1, 0)
    return probe.bytes_used


def test_entry_size_is_payload_plus_key_plus_fixed_overhead() -> None:
    overhead = entry_size("k", b"x") - 2
    assert overhead > 0
    assert entry_size("key", b"x" * 1000) == 1003 + overhead


def test_get_returns_the_same_object() -> None:
    cache = _core.Cache(1 << 20)
    payload = b'{"a": 1}' * 10
    before = now_ms()
    cache.put("k", payload, 3, 0)
    found = cache.get("k")
    assert found is not None
    assert found[0] is payload
    assert found[1:3] == (3, 0)
    assert before <= found[3] <= now_ms()
    assert lookup(cache, "k")[0] is payload


def test_miss_and_counters() -> None:
    cache = _core.Cache(1 << 20)
    assert cache.get("nope") is None
    cache.put("k", b"1", 1, 0)
    cache.get("k")
    cache.get("k")
    assert (cache.hits, cache.misses, cache.evictions, len(cache)) == (2, 1, 0, 1)
    assert cache.max_bytes == 1 << 20


def test_lru_eviction_by_bytes() -> None:
    payload = b"x" * 100
    size = entry_size("a", payload)
    cache = _core.Cache(3 * size)
    for key in "abc":
        cache.put(key, payload, 1, 0)
    assert (len(cache), cache.bytes_used) == (3, 3 * size)
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("d", payload, 1, 0)
    assert cache.get("b") is None
    assert {k for k in "acd" if cache.get(k) is not None} == set("acd")
    assert cache.evictions == 1
    # one entry as big as two evicts the two least recently used ("a", then "c")
    cache.get("d")
    big = b"x" * (2 * size - len("e") - (size - 101))
    cache.put("e", big, 1, 0)
    assert cache.bytes_used <= cache.max_bytes
    assert [k for k in "acde" if cache.get(k) is not None] == ["d", "e"]
    assert cache.evictions == 3


def test_entry_larger_than_the_cache_is_not_kept() -> None:
    cache = _core.Cache(1000)
    cache.put("k", b"small", 1, 0)
    cache.put("k", b"x" * 1000, 2, 0)
    assert cache.get("k") is None  # and the old version is gone too
    assert (len(cache), cache.bytes_used) == (0, 0)
    empty = _core.Cache(0)
    empty.put("k", b"", 1, 0)
    assert len(empty) == 0


def test_expiry() -> None:
    cache = _core.Cache(1 << 20)
    cache.put("soon", b"1", 1, now_ms() + 50)
    cache.put("later", b"2", 1, now_ms() + 60_000)
    cache.put("never", b"3", 1, 0)
    cache.put("past", b"4", 1, now_ms() - 1)
    assert len(cache) == 3  # an already expired entry is not stored
    assert cache.get("soon") is not None
    time.sleep(0.1)
    assert cache.get("soon") is None
    assert len(cache) == 2  # the expired entry was removed on lookup
    assert cache.get("later") is not None
    assert cache.get("never") is not None
    assert cache.get("past") is None


def test_invalidate_and_clear() -> None:
    cache = _core.Cache(1 << 20)
    for i in range(10):
        cache.put(str(i), b"x", 1, 0)
    assert cache.invalidate("3")
    assert not cache.invalidate("3")
    assert not cache.invalidate("missing")
    assert cache.get("3") is None
    assert len(cache) == 9
    cache.get("4")
    cache.clear()
    assert (len(cache), cache.bytes_used) == (0, 0)
    assert cache.get("4") is None
    assert cache.hits == 1  # counters survive a clear
    cache.put("4", b"y", 2, 0)
    assert lookup(cache, "4")[:3] == (b"y", 2, 0)


def test_never_replaces_a_newer_version() -> None:
    cache = _core.Cache(1 << 20)
    v5, v4, v5b, v6 = b"five", b"four", b"five again", b"six"
    cache.put("k", v5, 5, 0)
    cache.put("k", v4, 4, 0)
    assert lookup(cache, "k")[0] is v5
    cache.put("k", v5b, 5, 0)  # the same version refreshes
    assert lookup(cache, "k")[0] is v5b
    cache.put("k", v6, 6, 0)
    assert lookup(cache, "k")[0] is v6
    # an older version is refused even when it is bigger than the cache
    cache.put("k", b"x" * (2 << 20), 1, 0)
    assert lookup(cache, "k")[0] is v6


def test_an_expired_newer_version_does_not_block() -> None:
    cache = _core.Cache(1 << 20)
    cache.put("k", b"new", 9, now_ms() + 30)
    time.sleep(0.06)
    cache.put("k", b"old", 3, 0)
    assert lookup(cache, "k")[:3] == (b"old", 3, 0)


def test_threads_hammering() -> None:
    cache = _core.Cache(40 * 300)
    keys = [f"key{i}" for i in range(60)]
    gets = [0] * 8
    errors: list[str] = []

    def work(worker: int) -> None:
        rng = random.Random(worker)
        for step in range(5000):
            key = rng.choice(keys)
            action = rng.random()
            if action < 0.45:
                version = rng.randrange(1, 1000)
                cache.put(key, f"{key}:{version}:".encode() * rng.randrange(1, 8), version, 0)
            elif action < 0.9:
                gets[worker] += 1
                found = cache.get(key)
                if found is not None and not found[0].startswith(f"{key}:{found[1]}:".encode()):
                    errors.append(f"{key} -> {found[0][:30]!r} at version {found[1]}")
            elif action < 0.97:
                cache.invalidate(key)
            elif step % 50 == 0:
                cache.clear()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.hits + cache.misses == sum(gets)
    assert 0 <= cache.bytes_used <= cache.max_bytes
    left = [(key, cache.get(key)) for key in keys]
    total = sum(entry_size(key, found[0]) for key, found in left if found is not None)
    assert total == cache.bytes_used


def test_argument_checks() -> None:
    with pytest.raises(OverflowError):
        _core.Cache(-1)
    cache = _core.Cache(100)
    with pytest.raises(TypeError):
        cache.put("k", "not bytes", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        cache.put("k", b"", -1, 0)
    with pytest.raises(AttributeError):
        cache.max_bytes = 5  # type: ignore[misc]
