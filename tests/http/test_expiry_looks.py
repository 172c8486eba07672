"""ExpiryLooks: one scheduled read per followed context, and none left once nobody follows."""

from __future__ import annotations

import asyncio

import pytest

from fastctx.backends.memory import MemoryBackend
from fastctx.clock import now_ms
from fastctx.http.events import ExpiryLooks

pytestmark = pytest.mark.anyio
HOUR_MS = 3_600_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_streams_of_one_context_share_its_read() -> None:
    looks = ExpiryLooks(MemoryBackend())
    expires = now_ms() + HOUR_MS
    for _ in range(3):
        looks.follow("t", "a", expires)
    looks.follow("t", "b", expires)
    assert looks.scheduled == 2
    for _ in range(3):
        looks.leave("t", "a")
    looks.leave("t", "b")
    assert looks.scheduled == 0


async def test_the_heap_stays_the_size_of_what_is_followed() -> None:
    looks = ExpiryLooks(MemoryBackend())
    looks.follow("t", "kept", now_ms() + HOUR_MS)
    # Streams that come and go on contexts that expire in an hour: their reads must not pile up.
    for n in range(10_000):
        looks.follow("t", f"gone{n}", now_ms() + HOUR_MS)
        looks.leave("t", f"gone{n}")
    assert looks.scheduled <= 2 + 64


async def test_an_expired_context_is_read_once_however_many_follow_it() -> None:
    backend = MemoryBackend()
    looks = ExpiryLooks(backend)
    looks.follow("t", "x", now_ms())
    looks.follow("t", "x", now_ms())
    await asyncio.sleep(0.2)
    assert looks.scheduled == 0  # read, and not scheduled again while followed
    looks.leave("t", "x")
    looks.leave("t", "x")
    looks.follow("t", "x", now_ms() - 1000)  # an expiry already past: read at once
    assert looks.scheduled == 1
    await asyncio.sleep(0.2)
    assert looks.scheduled == 0
