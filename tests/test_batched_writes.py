"""Writers of one context queued on one node are written together: the writer whose turn it is
appends their patches with its own, each its own version with its own event, in one atomic
step; each waiter gets the answer it would have got in its own turn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from fastctx._core import PatchTestFailed
from fastctx.backends import Backend, context_id, context_stream, open_backend
from fastctx.backends.keys import session_stream
from fastctx.config import Settings
from fastctx.deltas import document_bytes
from fastctx.errors import NotFound, StorageQuotaExceeded, VersionConflict
from fastctx.registry import _AGAIN, BATCH_MAX_PATCHES, MAX_WRITE_ATTEMPTS, Registry
from fastctx.sessions import SessionManager
from support.backends import backend_url, created_once_tracked, deleted_behind, started_backend
from support.redis import RedisServer

pytestmark = pytest.mark.anyio

REGISTRY_DB = 9
MERGE = "merge"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis", "cluster", "valkey", "valkey-cluster"])
async def backend(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[Backend]:
    async with started_backend(backend_url(request, redis_server, REGISTRY_DB)) as opened:
        yield opened


async def _queued(
    registry: Registry, tenant: str, token: str, writes: list[Awaitable[int]]
) -> list[asyncio.Task[int]]:
    """Start `writes` while the context's key is held, so that they all wait in line, in
    order; the key is handed on once they do."""
    key = context_id(tenant, token)
    locks = registry._locks
    assert locks.take(key)
    tasks = [asyncio.ensure_future(write) for write in writes]
    await _in_line(registry, key, len(tasks))
    locks.release(key)
    await asyncio.wait(tasks, timeout=30)
    return tasks


async def _in_line(registry: Registry, key: str, count: int) -> None:
    """Until `count` writers wait for `key`."""
    for _ in range(10_000):
        if len(registry._locks._waiting[key]) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} writers never waited for {key}")


def _outcome(task: asyncio.Task[int]) -> int | type[BaseException]:
    error = task.exception()
    return task.result() if error is None else type(error)


async def test_queued_writers_get_their_own_versions_events_and_answers(
    backend: Backend,
) -> None:
    registry = Registry(backend, Settings())
    session, _ = await SessionManager(backend, registry).create("t")
    token = (await registry.create("t", b'{"n": []}', session=session)).token
    add = b'[{"op": "add", "path": "/n/-", "value": %d}]'
    writes = [registry.patch("t", token, b'{"k%d": %d}' % (i, i), MERGE) for i in range(4)]
    writes += [
        # Made of what the four before it leave: its test fails, as it would in its own turn.
        registry.patch("t", token, b'[{"op": "test", "path": "/k3", "value": 0}]', "json"),
        registry.patch("t", token, add % 1, "json", if_version=5),  # the version it finds
        registry.append("t", token, "/n", [b"2"]),
        registry.patch("t", token, add % 3, "json", if_version=2),  # long gone: 412
        registry.patch("t", token, b'{"k0": null}', MERGE),
    ]
    tasks = await _queued(registry, "t", token, writes)
    assert [_outcome(task) for task in tasks] == [
        2,
        3,
        4,
        5,
        PatchTestFailed,  # 422
        6,
        7,
        VersionConflict,
        8,
    ]
    expected = {"n": [1, 2], "k1": 1, "k2": 2, "k3": 3}
    for fresh in (False, True):  # this node's cached copy, and what is stored
        read = await registry.read("t", token, fresh=fresh)
        assert (json.loads(document_bytes(read.payload)), read.version) == (expected, 8)
    # Each version has its own event, in order, with the patch that made it; in the
    # session's stream too.
    for stream in (context_stream("t", token), session_stream("t", session)):
        events = await backend.changes.since(stream, "0-0")
        updated = [fields for _, fields in events if fields["type"] == "updated"]
        assert [int(fields["version"]) for fields in updated] == list(range(2, 9))
        assert json.loads(updated[0]["patch"]) == [{"op": "add", "path": "/k0", "value": 0}]
        assert updated[4]["patch"] == (add % 1).decode()
    # And each version is kept, as the patches of the writes one by one would have kept it.
    for version, document in [(4, {"n": [], "k0": 0, "k1": 1, "k2": 2}), (6, {"n": [1]})]:
        read = await registry.read_version("t", token, version)
        assert json.loads(document_bytes(read.payload)).items() >= document.items()
        assert read.version == version


@pytest.mark.parametrize(
    ("writers", "size", "appends"),
    [
        (20, 10, 1),
        (1 + BATCH_MAX_PATCHES + 1, 10, 2),  # one more than an append takes
        (5, 300_000, 2),  # the fourth patch taken would pass BATCH_MAX_BYTES
    ],
)
async def test_writers_queued_behind_one_take_one_append(
    own_redis: RedisServer, writers: int, size: int, appends: int
) -> None:
    async with started_backend(own_redis.url()) as backend:
        registry = Registry(backend, Settings())
        # A base large enough that the log is not folded on the way.
        token = (await registry.create("t", b'{"base": "%s"}' % (b"b" * 900_000))).token
        # Each append's script moves the frame's head forward with one SETRANGE.
        before = _calls(own_redis, "setrange")
        writes = [
            registry.patch("t", token, b'{"k%d": "%s"}' % (i, b"v" * size), MERGE)
            for i in range(writers)
        ]
        tasks = await _queued(registry, "t", token, writes)
        assert sorted(task.result() for task in tasks) == list(range(2, writers + 2))
        assert _calls(own_redis, "setrange") - before == appends
        read = await registry.read("t", token, fresh=True)
        keys = {"base"} | {f"k{i}" for i in range(writers)}
        assert set(json.loads(document_bytes(read.payload))) == keys


async def test_a_batch_made_of_a_copy_that_is_behind_is_written_again(
    redis_server: Any,
) -> None:
    """Node A's copy is behind (another node wrote, its invalidation not yet here): the batch
    A makes of it is refused whole, and each of its writers writes again, on the real version."""
    url = redis_server.url(REGISTRY_DB)
    a_backend, b_backend = open_backend(Settings(backend=url)), open_backend(Settings(backend=url))
    a, b = Registry(a_backend, Settings()), Registry(b_backend, Settings())
    try:
        await a_backend.ping()
        await asyncio.sleep(0.002)  # see test_registry's stale-copy test
        token = (await a.create("t", b"{}")).token
        key = context_id("t", token)
        assert a.cache is not None
        stale = a.cache.peek(key)
        assert stale is not None
        await b.patch("t", token, b'{"by": "b"}', MERGE)
        a.cache.put(key, stale[0], stale[1], stale[2], stale[4])  # no invalidation yet
        writes = [a.patch("t", token, b'{"k%d": 1}' % i, MERGE) for i in range(10)]
        tasks = await _queued(a, "t", token, writes)
        assert sorted(task.result() for task in tasks) == list(range(3, 13))
        read = await b.read("t", token, fresh=True)
        assert read.version == 12
        assert set(json.loads(document_bytes(read.payload))) == {"by"} | {
            f"k{i}" for i in range(10)
        }
    finally:
        await a_backend.close()
        await b_backend.close()


async def test_a_batch_is_answered_when_the_writer_that_sent_it_is_cancelled(
    own_redis: RedisServer,
) -> None:
    async with started_backend(own_redis.url()) as backend:
        registry = Registry(backend, Settings())
        token = (await registry.create("t", b"{}")).token
        key = context_id("t", token)
        writes = [registry.patch("t", token, b'{"k%d": 1}' % i, MERGE) for i in range(5)]
        locks = registry._locks
        assert locks.take(key)
        tasks = [asyncio.ensure_future(write) for write in writes]
        await _in_line(registry, key, len(tasks))
        # Redis holds the batch back while the writer that sent it is cancelled.
        own_redis.cli("CLIENT", "PAUSE", "300", "WRITE")
        locks.release(key)
        await asyncio.sleep(0.1)
        tasks[0].cancel()
        await asyncio.wait(tasks, timeout=30)
        assert tasks[0].cancelled()
        assert [task.result() for task in tasks[1:]] == [3, 4, 5, 6]
        # What they were told is what this node's cache serves, and what is stored.
        cached = registry.fresh(key)
        assert cached is not None
        assert cached[1] == 6
        read = await registry.read("t", token, fresh=True)
        assert (read.version, set(json.loads(document_bytes(read.payload)))) == (
            6,
            {f"k{i}" for i in range(5)},
        )


async def test_a_batch_answered_with_a_change_report_behind_it_is_not_cached_fresh(
    own_redis: RedisServer,
) -> None:
    """As for one write (tests/test_registry.py): the delete's invalidation comes in behind the
    batch's reply, before the callback that caches what the batch wrote runs."""
    async with started_backend(own_redis.url()) as backend:
        registry = Registry(backend, Settings())
        token = await created_once_tracked(registry, backend, b"{}")
        key = context_id("t", token)
        await registry.patch("t", token, b'{"first": 1}', MERGE)  # Redis loads the script now
        writes = [registry.patch("t", token, b'{"k%d": 1}' % i, MERGE) for i in range(4)]
        locks = registry._locks
        assert locks.take(key)
        tasks = [asyncio.ensure_future(write) for write in writes]
        await _in_line(registry, key, len(tasks))
        locks.release(key)
        await deleted_behind(own_redis, "WRITE", key)
        await asyncio.wait(tasks, timeout=30)
        assert [task.result() for task in tasks] == [3, 4, 5, 6]
        assert registry.fresh(key) is None
        with pytest.raises(NotFound):
            await registry.read("t", token)


async def test_a_batch_stops_where_the_log_must_be_folded(backend: Backend) -> None:
    """Past the log's bound the next writer folds it in its own turn; the versions since the
    fold stay readable."""
    registry = Registry(backend, Settings())
    token = (await registry.create("t", b'{"n": []}')).token
    big = b'[{"op": "add", "path": "/n/-", "value": "%s"}]'
    writes = [registry.patch("t", token, big % (b"%d" % i * 4000), "json") for i in range(40)]
    tasks = await _queued(registry, "t", token, writes)
    assert [task.result() for task in tasks] == list(range(2, 42))
    meta = await registry.meta("t", token)
    assert meta.version == 41
    assert 1 < meta.oldest_version <= 41 - 16  # folded, with the last versions kept
    read = await registry.read("t", token, fresh=True)
    assert json.loads(document_bytes(read.payload))["n"] == [str(i) * 4000 for i in range(40)]
    older = await registry.read_version("t", token, 30)
    assert len(json.loads(document_bytes(older.payload))["n"]) == 29


async def test_a_batch_past_the_tenants_quota_is_refused_whole(backend: Backend) -> None:
    """The append counts what the whole batch keeps: past the quota its writer gets the 413 and
    each other writer tries again in a turn of its own, so the ones that fit are written."""
    registry = Registry(backend, Settings(tenant_bytes="2000"))
    token = (await registry.create("t", b'{"n": []}')).token
    add = b'[{"op": "add", "path": "/n/-", "value": "%s"}]'
    writes = [registry.patch("t", token, add % (b"%d" % i * 200), "json") for i in range(1, 10)]
    tasks = await _queued(registry, "t", token, writes)
    outcomes = [_outcome(task) for task in tasks]
    written = [outcome for outcome in outcomes if isinstance(outcome, int)]
    assert 0 < len(written) < len(tasks)
    assert set(outcomes) - set(written) == {StorageQuotaExceeded}
    assert sorted(written) == list(range(2, len(written) + 2))
    read = await registry.read("t", token, fresh=True)
    assert read.version == len(written) + 1
    assert len(document_bytes(read.payload)) <= 2000
    items = json.loads(document_bytes(read.payload))["n"]
    assert items == [str(i) * 200 for i, outcome in enumerate(outcomes, 1) if outcome in written]


async def test_a_job_refused_again_and_again_waits_for_a_turn_of_its_own(
    backend: Backend,
) -> None:
    registry = Registry(backend, Settings())
    token = (await registry.create("t", b"{}")).token
    key = context_id("t", token)
    locks = registry._locks
    assert locks.take(key)
    write = asyncio.ensure_future(registry.patch("t", token, b'{"a": 1}', MERGE))
    for _ in range(MAX_WRITE_ATTEMPTS):  # every append that takes its job is refused
        await _in_line(registry, key, 1)
        assert locks.joining(key) is not None
        locks.join(key).set_result(_AGAIN)
    await _in_line(registry, key, 1)
    assert locks.joining(key) is None  # it waits, and leaves no job to take
    locks.release(key)
    assert await asyncio.wait_for(write, 10) == 2


def _calls(redis: RedisServer, command: str) -> int:
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0
