"""The backends' MCP session store: put, touch (which slides the idle expiry), delete, and
the sessions' subscriptions with their notification streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fastctx.backends import Backend, mcp_stream
from fastctx.backends.memory import MemoryBackend
from fastctx.backends.redis import RedisBackend
from fastctx.clock import now_ms
from support.redis import RedisServer

pytestmark = pytest.mark.anyio
IDLE_MS = 300


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
async def backend(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Backend]:
    store: Backend = (
        MemoryBackend() if request.param == "memory" else RedisBackend(redis_server.url(4))
    )
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_a_record_lives_while_used_and_ends_when_deleted(backend: Backend) -> None:
    await backend.mcp.put("t", "s1", b'{"version":"2025-11-25"}', IDLE_MS)
    for _ in range(4):  # each use slides the expiry: 4 x 100 ms outlives one idle period
        await asyncio.sleep(0.1)
        assert await backend.mcp.touch("t", "s1", IDLE_MS) == b'{"version":"2025-11-25"}'
    assert await backend.mcp.touch("other-tenant", "s1", IDLE_MS) is None
    assert await backend.mcp.delete("t", "s1") is True
    assert await backend.mcp.touch("t", "s1", IDLE_MS) is None
    assert await backend.mcp.delete("t", "s1") is False


async def test_an_idle_record_expires(backend: Backend) -> None:
    await backend.mcp.put("t", "s2", b"{}", 50)
    await asyncio.sleep(0.15)
    assert await backend.mcp.touch("t", "s2", IDLE_MS) is None
    assert await backend.mcp.delete("t", "s2") is False


async def test_the_memory_sweep_keeps_used_sessions_and_drops_idle_ones() -> None:
    store = MemoryBackend()
    await store.mcp.put("t", "used", b"{}", 50)
    await store.mcp.put("t", "idle", b"{}", 50)
    for _ in range(100):  # many uses leave one deadline each in the heap, not one per use
        assert await store.mcp.touch("t", "used", 10_000) == b"{}"
    assert len(store.store.deadlines) == 2
    await asyncio.sleep(0.1)
    store.sweep(now_ms())
    assert await store.mcp.touch("t", "used", 10_000) == b"{}"
    assert await store.mcp.delete("t", "idle") is False
    assert len(store.store.deadlines) == 1


async def test_subscriptions_keep_their_cursor_and_end_with_the_session(backend: Backend) -> None:
    notes = mcp_stream("t", "sub1")
    assert await backend.mcp.subscribe("t", "sub1", "tok", "5-0", b"{}", IDLE_MS) is False
    assert await backend.mcp.touch("t", "sub1", IDLE_MS) is None  # not brought back
    await backend.mcp.put("t", "sub1", b"{}", 10_000)
    record = b'{"subscribed":true}'
    assert await backend.mcp.subscribe("t", "sub1", "tok", "5-0", record, 10_000) is True
    assert await backend.mcp.touch("t", "sub1", 10_000) == record
    # Subscribing again keeps the place it had.
    assert await backend.mcp.subscribe("t", "sub1", "tok", "9-0", record, 10_000) is True
    assert await backend.mcp.subscriptions("t", "sub1") == {"tok": "5-0"}
    steering = [fields["type"] for _, fields in await backend.changes.since(notes, "0-0")]
    assert steering == ["subscribe"]

    # The cursor moves only from where the caller read it, and with one notification.
    assert await backend.mcp.notify("t", "sub1", "tok", "1-0", "7-0", "updated", "2", 10_000) == (
        "5-0"
    )
    assert await backend.mcp.notify("t", "sub1", "tok", "5-0", "7-0", "updated", "2", 10_000) == (
        "7-0"
    )
    assert await backend.mcp.notify("t", "sub1", "x", "0-0", "7-0", "updated", "1", 10_000) is None
    assert await backend.mcp.subscriptions("t", "sub1") == {"tok": "7-0"}
    entries = await backend.changes.since(notes, "0-0")
    assert [(f["type"], f["version"], f["token"]) for _, f in entries] == [
        ("subscribe", "5-0", "tok"),
        ("updated", "2", "tok"),
    ]

    assert await backend.mcp.unsubscribe("t", "sub1", "tok") is True
    assert await backend.mcp.unsubscribe("t", "sub1", "tok") is False
    assert await backend.mcp.subscriptions("t", "sub1") == {}
    assert (await backend.changes.since(notes, entries[-1][0]))[0][1]["type"] == "unsubscribe"

    assert await backend.mcp.subscribe("t", "sub1", "tok", "8-0", record, 10_000) is True
    assert await backend.mcp.delete("t", "sub1") is True
    assert await backend.mcp.subscriptions("t", "sub1") == {}
    assert (
        await backend.mcp.notify("t", "sub1", "tok", "8-0", "9-0", "updated", "3", 10_000) is None
    )


async def test_subscriptions_slide_with_the_session(backend: Backend) -> None:
    await backend.mcp.put("t", "sub2", b"{}", IDLE_MS)
    assert await backend.mcp.subscribe("t", "sub2", "tok", "5-0", b"{}", IDLE_MS) is True
    for _ in range(4):  # 4 x 100 ms outlives one idle period
        await asyncio.sleep(0.1)
        assert await backend.mcp.touch("t", "sub2", IDLE_MS) is not None
        await backend.mcp.keep("t", "sub2", IDLE_MS)
    assert await backend.mcp.subscriptions("t", "sub2") == {"tok": "5-0"}
    assert await backend.changes.last_id(mcp_stream("t", "sub2")) != "0-0"
