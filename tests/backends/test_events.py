"""Change streams in every backend: each write appends its event atomically, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastctx.backends import (
    EVENTS_KEPT,
    EVENTS_MAX_AGE_MS,
    TRIM_AGE_MS,
    TRIM_LENGTH,
    Backend,
    context_stream,
    event_order,
    open_backend,
    session_stream,
)
from fastctx.backends.eventlog import EventLog
from fastctx.backends.pipeline import Address, Pipeline
from fastctx.config import Settings
from fastctx.registry import Registry
from fastctx.sessions import SessionManager
from fastctx.streams import ChangeStream

pytestmark = pytest.mark.anyio

EVENTS_DB = 8  # a DB no other test uses


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[Backend]:
    url = "memory://" if request.param == "memory" else redis_server.url(EVENTS_DB)
    opened = open_backend(Settings(backend=url))
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


def kinds(events: list[tuple[str, dict[str, str]]]) -> list[tuple[str, str]]:
    return [(fields["type"], fields["version"]) for _, fields in events]


async def test_every_write_appends_an_event(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b'{"a": 1}')
    await registry.patch("t", created.token, b'{"b": 2}', "merge")
    await registry.replace("t", created.token, b"{}")
    await registry.delete("t", created.token)
    events = await backend.events_since(context_stream("t", created.token), "0-0")
    assert kinds(events) == [("updated", "1"), ("updated", "2"), ("updated", "3"), ("deleted", "3")]
    assert all(f["token"] == created.token and f["session"] == "" for _, f in events)
    ids = [event_order(i) for i, _ in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert await backend.last_event_id(context_stream("t", created.token)) == events[-1][0]
    assert (
        await backend.events_since(context_stream("t", created.token), events[1][0]) == (events[2:])
    )
    assert await backend.last_event_id(context_stream("t", "nothing")) == "0-0"


async def test_session_stream_has_every_context_and_the_cascade(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    sessions = SessionManager(backend, registry)
    session, _ = await sessions.create("t")
    one = await registry.create("t", b"1", session=session)
    two = await registry.create("t", b"2", session=session)
    await registry.replace("t", one.token, b"3")
    await sessions.delete("t", session)
    events = await backend.events_since(session_stream("t", session), "0-0")
    seen = [(f["type"], f["token"], f["version"]) for _, f in events]
    assert seen[:3] == [
        ("updated", one.token, "1"),
        ("updated", two.token, "1"),
        ("updated", one.token, "2"),
    ]
    assert sorted(seen[3:]) == sorted([("deleted", one.token, "2"), ("deleted", two.token, "1")])
    assert all(f["session"] == session for _, f in events)
    last = await backend.events_since(context_stream("t", two.token), "0-0")
    assert kinds(last)[-1] == ("deleted", "1")


async def test_wait_returns_new_events_and_can_be_interrupted(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b"{}")
    stream = context_stream("t", created.token)
    cursor = await backend.last_event_id(stream)
    waiting = asyncio.create_task(backend.events_wait({stream: cursor}, 5000))
    await asyncio.sleep(0.05)
    await registry.replace("t", created.token, b"[]")
    got = await asyncio.wait_for(waiting, 2)
    assert [(s, f["version"]) for s, (_, f) in got] == [(stream, "2")]
    waiting = asyncio.create_task(backend.events_wait({stream: got[-1][1][0]}, 10_000))
    await asyncio.sleep(0.05)
    backend.events_interrupt()
    assert await asyncio.wait_for(waiting, 2) == []


def test_memory_log_keeps_the_last_thousand_and_the_last_hour() -> None:
    log = EventLog()
    for n in range(2500):
        log.append("s", ("updated", str(n), "t", ""), keep_until=2**62)
    # All younger than the hour: nothing is trimmed.
    assert len(log.since("s", "0-0")) == 2500


async def test_change_stream_reads_each_stream_once_for_all_its_subscribers(
    backend: Backend,
) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b"{}")
    stream = context_stream("t", created.token)
    reads: list[dict[str, str]] = []
    wait = backend.events_wait

    async def counted(cursors: dict[str, str], timeout_ms: int) -> list[Any]:
        reads.append(dict(cursors))
        return await wait(cursors, timeout_ms)

    backend.events_wait = counted  # type: ignore[method-assign]
    changes = ChangeStream(backend)
    try:
        after = await backend.last_event_id(stream)
        subscriptions = [changes.subscribe(stream, after) for _ in range(50)]
        await asyncio.sleep(0.05)
        await registry.replace("t", created.token, b"[]")
        async with asyncio.timeout(2):
            await asyncio.gather(*(s.ready.wait() for s in subscriptions))
        assert {s.events[0][1]["version"] for s in subscriptions} == {"2"}
        assert all(list(r) == [stream] for r in reads)
        assert len(reads) <= 3
    finally:
        await changes.close()


async def test_a_subscriber_that_falls_behind_is_cut_off(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b"{}")
    stream = context_stream("t", created.token)
    changes = ChangeStream(backend, buffer=3)
    try:
        slow = changes.subscribe(stream, await backend.last_event_id(stream))
        for n in range(5):
            await registry.replace("t", created.token, b"%d" % n)
        async with asyncio.timeout(2):
            while not slow.closed:
                slow.ready.clear()
                await slow.ready.wait()
        assert slow.overflowed
        assert len(slow.events) == 3
    finally:
        await changes.close()


def test_memory_log_trims_what_is_past_both_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [10_000_000_000]
    monkeypatch.setattr("fastctx.backends.eventlog.now_ms", lambda: clock[0])
    log = EventLog()
    for n in range(TRIM_LENGTH):
        log.append("s", ("updated", str(n), "t", ""), keep_until=2**62)
    clock[0] += TRIM_AGE_MS + 1
    log.append("s", ("updated", "new", "t", ""), keep_until=2**62)
    kept = log.since("s", "0-0")
    assert len(kept) == EVENTS_KEPT
    assert kept[-1][1]["version"] == "new"
    clock[0] = 2**62
    assert log.since("s", "0-0") == []


async def test_redis_streams_expire_after_their_context_and_trim_past_both_bounds(
    redis_server: Any,
) -> None:
    url = redis_server.url(EVENTS_DB)
    backend = open_backend(Settings(backend=url))
    await backend.start()
    raw = Pipeline(Address.from_url(url))
    try:
        registry = Registry(backend, Settings(cache_bytes=0))
        created = await registry.create("t", b"{}", ttl=60)
        stream = context_stream("t", created.token)
        expiry = await raw.execute("PEXPIRETIME", stream)
        assert expiry == created.expires_at + EVENTS_MAX_AGE_MS
        # Old events, as if written long ago: past both bounds, so the next write trims.
        await raw.execute("DEL", stream)
        for n in range(TRIM_LENGTH):
            await raw.execute("XADD", stream, f"{1000 + n}-0", "type", "updated", "n", n)
        await registry.replace("t", created.token, b"[]")
        assert await raw.execute("XLEN", stream) == EVENTS_KEPT
        await registry.delete("t", created.token)
        left = await raw.execute("PTTL", stream)
        assert EVENTS_MAX_AGE_MS - 5000 < left <= EVENTS_MAX_AGE_MS
    finally:
        await raw.close()
        await backend.close()


async def test_a_cursor_from_the_future_does_not_hide_events_from_others(
    backend: Backend,
) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b"{}")
    stream = context_stream("t", created.token)
    changes = ChangeStream(backend)
    try:
        changes.subscribe(stream, f"{2**42}-0")  # the year 2109
        present = changes.subscribe(stream, await backend.last_event_id(stream))
        await asyncio.sleep(0.05)
        await registry.replace("t", created.token, b"[]")
        async with asyncio.timeout(2):
            await present.ready.wait()
        assert [fields["version"] for _, fields in present.events] == ["2"]
    finally:
        await changes.close()
