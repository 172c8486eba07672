"""The auto-pipelined connection against a real redis-server: batching, tracking, recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import hiredis
import pytest

from fastctx.backends import notifications
from fastctx.backends.commands import Script
from fastctx.backends.notifications import ExpiryListener
from fastctx.backends.pipeline import Address, Pipeline
from fastctx.backends.redis import RedisBackend
from fastctx.errors import BackendError
from support.redis import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pipeline(own_redis: RedisServer) -> AsyncIterator[Pipeline]:
    connection = Pipeline(Address.from_url(own_redis.url()), timeout=1.0)
    try:
        yield connection
    finally:
        await connection.close()


async def test_replies_reach_their_callers_in_order(pipeline: Pipeline) -> None:
    await asyncio.gather(*(pipeline.execute("SET", f"k{i}", i) for i in range(500)))
    values = await asyncio.gather(*(pipeline.execute("GET", f"k{i}") for i in range(500)))
    assert values == [str(i).encode() for i in range(500)]


def _reads_processed(redis: RedisServer) -> int:
    return int(redis.cli("INFO", "stats").split("total_reads_processed:")[1].split()[0])


async def test_one_tick_of_commands_is_one_write(
    own_redis: RedisServer, pipeline: Pipeline
) -> None:
    await pipeline.execute("PING")
    before = _reads_processed(own_redis)
    await asyncio.gather(*(pipeline.execute("INCR", "counter") for _ in range(200)))
    after = _reads_processed(own_redis)
    assert await pipeline.execute("GET", "counter") == b"200"
    # 200 commands, one write: Redis read them in a handful of reads (the INFO calls of
    # redis-cli count too), not 200.
    assert after - before <= 10
    clients = [
        line for line in own_redis.cli("CLIENT", "LIST").splitlines() if "cmd=client" not in line
    ]
    assert len(clients) == 1  # one connection carried them all, no pool behind the scenes


async def test_error_replies_go_to_their_caller_only(pipeline: Pipeline) -> None:
    await pipeline.execute("SET", "s", "text")
    results = await asyncio.gather(
        pipeline.execute("GET", "s"),
        pipeline.execute("INCR", "s"),
        pipeline.execute("GET", "s"),
        return_exceptions=True,
    )
    assert results[0] == b"text"
    assert isinstance(results[1], hiredis.ReplyError)
    assert results[2] == b"text"


async def test_invalidations_are_pushed_for_tracked_prefixes(own_redis: RedisServer) -> None:
    seen: list[list[bytes] | None] = []
    connection = Pipeline(
        Address.from_url(own_redis.url()), tracking_prefixes=["fc:c:"], on_invalidate=seen.append
    )
    try:
        await connection.execute("SET", "fc:c:{t/own}", "1")  # our own write: NOLOOP, no push
        assert connection.tracking
        assert seen == [None]  # connecting says: whatever was cached before is unverified
        own_redis.cli("SET", "fc:c:{t/a}", "x")
        own_redis.cli("SET", "other:key", "x")
        await _until(lambda: len(seen) >= 2)
        await connection.execute("PING")  # anything pushed before the reply is in by now
        assert seen[1:] == [[b"fc:c:{t/a}"]]
        own_redis.cli("FLUSHALL")
        await _until(lambda: len(seen) >= 3)
        assert seen[2] is None
    finally:
        await connection.close()


async def test_a_subscription_pushes_messages_beside_the_replies(own_redis: RedisServer) -> None:
    """One reader loop serves commands and a subscription (what the expiry listener uses):
    its confirmation and messages are pushes, and replies still reach their callers."""
    pushed: list[list[bytes]] = []
    lost: list[None] = []
    connection = Pipeline(
        Address.from_url(own_redis.url()),
        timeout=1.0,
        on_push=pushed.append,
        on_lost=lambda: lost.append(None),
    )
    try:
        assert await connection.execute("SET", "k", "v") == b"OK"
        await connection.send_unanswered(b"SUBSCRIBE", b"chan")
        await _until(lambda: len(pushed) >= 1)
        assert pushed[0][0] == b"subscribe"
        own_redis.cli("PUBLISH", "chan", "hello")
        await _until(lambda: len(pushed) >= 2)
        assert pushed[1] == [b"message", b"chan", b"hello"]
        assert await connection.execute("PING") == b"PONG"  # answered, even while subscribed
        assert lost == []
        own_redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
        await _until(lambda: len(lost) >= 1)
    finally:
        await connection.close()


async def test_the_expiry_listener_pings_and_subscribes_again_when_dropped(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifications, "IDLE_PING", 0.05)
    monkeypatch.setattr(notifications, "RETRY_DELAY", 0.05)
    expired: list[bytes] = []
    listener = ExpiryListener(Address.from_url(own_redis.url()), expired.append, timeout=1.0)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 2)
        await asyncio.sleep(0.2)  # a few idle PINGs, each answered
        assert listener.listening.is_set()
        own_redis.cli("SET", "gone", "1", "PX", "1")
        await _until(lambda: b"gone" in expired)
        own_redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
        await _until(lambda: not listener.listening.is_set())
        await asyncio.wait_for(listener.listening.wait(), 2)
        own_redis.cli("SET", "gone again", "1", "PX", "1")
        await _until(lambda: b"gone again" in expired)
    finally:
        await listener.close()


async def test_reconnects_after_redis_restarts_and_reports_the_gap(own_redis: RedisServer) -> None:
    seen: list[list[bytes] | None] = []
    connection = Pipeline(
        Address.from_url(own_redis.url()),
        timeout=1.0,
        tracking_prefixes=["fc:c:"],
        on_invalidate=seen.append,
    )
    try:
        await connection.execute("SET", "k", "v")
        own_redis.stop()
        with pytest.raises(BackendError):
            await connection.execute("GET", "k")
        assert not connection.tracking
        assert seen.count(None) == 2  # once on connecting, once on losing the connection
        own_redis.start()
        assert await connection.execute("GET", "k") is None  # a new, empty Redis
        assert connection.tracking
    finally:
        await connection.close()


async def test_a_silent_redis_times_out_instead_of_hanging(own_redis: RedisServer) -> None:
    connection = Pipeline(Address.from_url(own_redis.url()), timeout=0.3)
    try:
        await connection.execute("PING")
        own_redis.cli("CLIENT", "PAUSE", "1500", "ALL")
        started = time.monotonic()
        with pytest.raises(BackendError) as raised:
            await connection.execute("GET", "k")
        assert time.monotonic() - started < 1.2
        assert not raised.value.unsent  # it was sent: Redis may still run it
    finally:
        await connection.close()


async def test_errors_say_whether_the_command_can_have_run(own_redis: RedisServer) -> None:
    own_redis.stop()
    connection = Pipeline(Address.from_url(own_redis.url()), timeout=0.3)
    try:
        with pytest.raises(BackendError, match="cannot connect") as raised:
            await connection.execute("SET", "k", "v")
        assert raised.value.unsent  # never sent: safe to send again
    finally:
        await connection.close()


async def test_scripts_reload_after_script_flush(
    own_redis: RedisServer, pipeline: Pipeline
) -> None:
    script = Script("return ARGV[1] .. KEYS[1]", "echo")
    assert await script(pipeline, ["k"], ["v"]) == b"vk"
    own_redis.cli("SCRIPT", "FLUSH")
    assert await script(pipeline, ["k"], ["w"]) == b"wk"


async def test_backend_survives_a_dead_redis_at_start(own_redis: RedisServer) -> None:
    own_redis.stop()
    backend = RedisBackend(own_redis.url(), timeout=0.5)
    await backend.start()  # does not raise: /readyz reports it instead
    with pytest.raises(BackendError):
        await backend.ping()
    own_redis.start()
    await backend.ping()
    await backend.close()


async def _until(condition: object, within: float = 2.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_a_full_redis_is_unavailable_rather_than_a_bug(
    own_redis: RedisServer, pipeline: Pipeline
) -> None:
    await pipeline.execute("SET", "before", "1")
    own_redis.cli("CONFIG", "SET", "maxmemory", "1")
    with pytest.raises(BackendError, match="OOM"):
        await pipeline.execute("SET", "k", "v")
    assert await pipeline.execute("GET", "before") == b"1"  # reads still answer
