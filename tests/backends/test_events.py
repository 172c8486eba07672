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
from fastctx.backends.keys import context_key
from fastctx.backends.pipeline import Address, Pipeline
from fastctx.config import Settings
from fastctx.errors import BackendError
from fastctx.registry import Registry
from fastctx.sessions import SessionManager
from fastctx.streams import ChangeStream, Subscription
from support.backends import backend_url, started_backend

pytestmark = pytest.mark.anyio

EVENTS_DB = 8  # a DB no other test uses


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis", "cluster", "valkey", "valkey-cluster"])
async def backend(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[Backend]:
    async with started_backend(backend_url(request, redis_server, EVENTS_DB)) as opened:
        yield opened


def kinds(events: list[tuple[str, dict[str, str]]]) -> list[tuple[str, str]]:
    return [(fields["type"], fields["version"]) for _, fields in events]


async def test_every_write_appends_an_event(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b'{"a": 1}')
    await registry.patch("t", created.token, b'{"b": 2}', "merge")
    await registry.replace("t", created.token, b"{}")
    await registry.delete("t", created.token)
    events = await backend.changes.since(context_stream("t", created.token), "0-0")
    assert kinds(events) == [("created", "1"), ("updated", "2"), ("updated", "3"), ("deleted", "3")]
    assert all(f["token"] == created.token and f["session"] == "" for _, f in events)
    ids = [event_order(i) for i, _ in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert await backend.changes.last_id(context_stream("t", created.token)) == events[-1][0]
    assert (
        await backend.changes.since(context_stream("t", created.token), events[1][0])
        == (events[2:])
    )
    assert await backend.changes.last_id(context_stream("t", "nothing")) == "0-0"


async def test_an_unchanged_context_has_its_created_event_under_the_id_it_keeps(
    backend: Backend,
) -> None:
    """On Redis a context made outside a session has no stream until its first change; its
    `created` event reads the same before that change as after it, id and all."""
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b"{}")
    stream = context_stream("t", created.token)
    (first,) = await backend.changes.since(stream, "0-0")
    assert first[1] == {"type": "created", "version": "1", "token": created.token, "session": ""}
    assert await backend.changes.last_id(stream) == first[0]
    assert await backend.changes.since(stream, first[0]) == []
    await registry.patch("t", created.token, b'{"a": 1}', "merge")
    events = await backend.changes.since(stream, "0-0")
    assert events[0] == first
    assert kinds(events) == [("created", "1"), ("updated", "2")]
    assert event_order(events[1][0]) > event_order(first[0])
    assert await backend.changes.since(stream, first[0]) == events[1:]


async def test_an_unchanged_context_that_is_deleted_keeps_both_events(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b"{}")
    stream = context_stream("t", created.token)
    (first,) = await backend.changes.since(stream, "0-0")
    await registry.delete("t", created.token)
    events = await backend.changes.since(stream, "0-0")
    assert events[0] == first
    assert kinds(events) == [("created", "1"), ("deleted", "1")]
    assert await backend.changes.last_id(stream) == events[1][0]


async def test_session_stream_has_every_context_and_the_cascade(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    sessions = SessionManager(backend, registry)
    session, _ = await sessions.create("t")
    one = await registry.create("t", b"1", session=session)
    two = await registry.create("t", b"2", session=session)
    await registry.replace("t", one.token, b"3")
    await sessions.delete("t", session)
    events = await backend.changes.since(session_stream("t", session), "0-0")
    seen = [(f["type"], f["token"], f["version"]) for _, f in events]
    assert seen[:3] == [
        ("created", one.token, "1"),
        ("created", two.token, "1"),
        ("updated", one.token, "2"),
    ]
    assert sorted(seen[3:]) == sorted([("deleted", one.token, "2"), ("deleted", two.token, "1")])
    assert all(f["session"] == session for _, f in events)
    last = await backend.changes.since(context_stream("t", two.token), "0-0")
    assert kinds(last)[-1] == ("deleted", "1")


async def test_wait_returns_new_events_and_can_be_interrupted(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    created = await registry.create("t", b"{}")
    stream = context_stream("t", created.token)
    cursor = await backend.changes.last_id(stream)
    waiting = asyncio.create_task(backend.changes.wait({stream: cursor}, 5000))
    await asyncio.sleep(0.05)
    await registry.replace("t", created.token, b"[]")
    got = await asyncio.wait_for(waiting, 2)
    assert [(s, f["version"]) for s, (_, f) in got] == [(stream, "2")]
    waiting = asyncio.create_task(backend.changes.wait({stream: got[-1][1][0]}, 10_000))
    await asyncio.sleep(0.05)
    backend.changes.interrupt()
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
    wait = backend.changes.wait

    async def counted(cursors: dict[str, str], timeout_ms: int) -> list[Any]:
        reads.append(dict(cursors))
        return await wait(cursors, timeout_ms)

    backend.changes.wait = counted  # type: ignore[method-assign]
    changes = ChangeStream(backend)
    try:
        after = await backend.changes.last_id(stream)
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
        slow = changes.subscribe(stream, await backend.changes.last_id(stream))
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
        # Made outside a session, a context has no stream until its first change.
        assert await raw.execute("EXISTS", stream) == 0
        await registry.patch("t", created.token, b'{"a": 1}', "merge")
        expires_at = await raw.execute("PEXPIRETIME", context_key("t", created.token))
        assert await raw.execute("PEXPIRETIME", stream) == expires_at + EVENTS_MAX_AGE_MS
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
        present = changes.subscribe(stream, await backend.changes.last_id(stream))
        await asyncio.sleep(0.05)
        await registry.replace("t", created.token, b"[]")
        async with asyncio.timeout(2):
            await present.ready.wait()
        assert [fields["version"] for _, fields in present.events] == ["2"]
    finally:
        await changes.close()


async def events_of(
    backend: Backend, stream: str, kind: str, count: int = 1
) -> list[tuple[str, dict[str, str]]]:
    """The events of `kind` in `stream`, once at least `count` are there (within 5 s)."""
    async with asyncio.timeout(5):
        while True:
            found = [e for e in await backend.changes.since(stream, "0-0") if e[1]["type"] == kind]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


async def test_an_expired_context_gets_its_expired_event(backend: Backend) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    sessions = SessionManager(backend, registry)
    session, _ = await sessions.create("t", ttl=60)
    alone = await registry.create("t", b"{}", ttl=1)
    member = await registry.create("t", b"{}", ttl=1, session=session)
    await registry.patch("t", member.token, b'{"a": 1}', "merge")
    (event,) = await events_of(backend, context_stream("t", alone.token), "expired")
    assert event[1] == {"type": "expired", "version": "1", "token": alone.token, "session": ""}
    (event,) = await events_of(backend, context_stream("t", member.token), "expired")
    assert (event[1]["version"], event[1]["session"]) == ("2", session)
    (seen,) = await events_of(backend, session_stream("t", session), "expired")
    assert seen[1] == event[1]
    assert await registry.backend.contexts.get("t", member.token) is None
    # The expired event is kept for an hour after the expiry, as a deleted one is.
    await asyncio.sleep(0.3)
    assert kinds(await backend.changes.since(context_stream("t", alone.token), "0-0")) == [
        ("created", "1"),
        ("expired", "1"),
    ]


async def test_an_expired_session_gets_its_own_event_after_its_contexts(
    backend: Backend,
) -> None:
    registry = Registry(backend, Settings(cache_bytes=0))
    sessions = SessionManager(backend, registry)
    session, _ = await sessions.create("t", ttl=1)
    member = await registry.create("t", b"{}", session=session)
    stream = session_stream("t", session)
    await events_of(backend, stream, "expired", count=2)
    await asyncio.sleep(0.3)
    found = await events_of(backend, stream, "expired")
    # The session's own event (no token) comes last.
    assert [(f["token"], f["version"]) for _, f in found] == [(member.token, "1"), ("", "0")]
    assert all(f["session"] == session for _, f in found)


async def test_one_expired_event_however_many_nodes_hear_of_it(redis_server: Any) -> None:
    url = redis_server.url(EVENTS_DB)
    nodes = [open_backend(Settings(backend=url)) for _ in range(3)]
    for node in nodes:
        await node.start()
    try:
        registry = Registry(nodes[0], Settings(cache_bytes=0))
        sessions = SessionManager(nodes[0], registry)
        session, _ = await sessions.create("t", ttl=1)
        tokens = [(await registry.create("t", b"{}", ttl=1)).token for _ in range(10)]
        tokens.append((await registry.create("t", b"{}", session=session)).token)
        await asyncio.sleep(2.5)  # Redis expires keys within a few hundred ms of their time
        for token in tokens:
            found = await events_of(nodes[1], context_stream("t", token), "expired")
            assert len(found) == 1
        found = await events_of(nodes[2], session_stream("t", session), "expired")
        assert sorted(f["token"] for _, f in found) == sorted(["", tokens[-1]])
        # A notification heard again (a node that reconnects, say) appends nothing more.
        assert not await nodes[1].expiries.expired("c", "t", tokens[0])  # type: ignore[attr-defined]
        assert not await nodes[1].expiries.expired("s", "t", session)  # type: ignore[attr-defined]
    finally:
        for node in nodes:
            await node.close()


async def test_redis_backend_turns_expired_key_notifications_on(own_redis: Any) -> None:
    def flags() -> str:
        return str(own_redis.cli("CONFIG", "GET", "notify-keyspace-events")).partition("\n")[2]

    assert flags() == ""  # Redis's default
    own_redis.cli("CONFIG", "SET", "notify-keyspace-events", "K$")
    backend = open_backend(Settings(backend=own_redis.url()))
    await backend.start()
    try:
        assert set(flags()) == set("K$Ex")  # what was on stays on
        registry = Registry(backend, Settings(cache_bytes=0))
        created = await registry.create("t", b"{}", ttl=1)
        (event,) = await events_of(backend, context_stream("t", created.token), "expired")
        assert event[1]["token"] == created.token
    finally:
        await backend.close()


async def test_expired_events_resume_after_redis_comes_back(own_redis: Any) -> None:
    backend = open_backend(Settings(backend=own_redis.url()))
    await backend.start()
    try:
        own_redis.stop()
        own_redis.start()  # a fresh Redis: notifications off again, and no subscription
        async with asyncio.timeout(10):
            while True:
                if own_redis.cli("PUBSUB", "NUMSUB", "__keyevent@0__:expired").split()[1] == "1":
                    break
                await asyncio.sleep(0.1)
        registry = Registry(backend, Settings(cache_bytes=0))
        async with asyncio.timeout(10):
            while True:
                try:
                    created = await registry.create("t", b"{}", ttl=1)
                    break
                except BackendError:
                    await asyncio.sleep(0.1)
        (event,) = await events_of(backend, context_stream("t", created.token), "expired")
        assert event[1]["version"] == "1"
    finally:
        await backend.close()


async def test_a_subscription_holds_nothing_until_an_event_and_its_flag_survives() -> None:
    idle = Subscription("s", 2)
    assert not idle.events
    idle.events.append(("1-0", {}))  # what an idle subscription shows stays empty
    assert not Subscription("t", 2).events
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await idle.ready.wait()
    asyncio.get_running_loop().call_later(0.01, idle.offer, ("2-0", {"type": "updated"}))
    async with asyncio.timeout(1):
        await idle.ready.wait()
    assert list(idle.events) == [("2-0", {"type": "updated"})]
    idle.offer(("3-0", {}))
    idle.offer(("4-0", {}))  # past its limit of 2: cut off
    assert idle.overflowed
    assert idle.closed
    assert len(idle.events) == 2
