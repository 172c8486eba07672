"""The Context Registry and Session Manager over every backend, without HTTP in between."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastctx import _core
from fastctx.backends import Backend, open_backend
from fastctx.backends.memory import MemoryBackend
from fastctx.backends.pipeline import Address, Pipeline
from fastctx.clock import now_ms
from fastctx.config import Settings
from fastctx.deltas import append_patch
from fastctx.errors import (
    BackendError,
    InvalidPatch,
    NotFound,
    PayloadTooLarge,
    VersionConflict,
)
from fastctx.registry import Registry, _KeyedLocks
from fastctx.sessions import SessionManager
from support.backends import backend_url, created_once_tracked, deleted_behind, started_backend
from support.redis import RedisServer

pytestmark = pytest.mark.anyio

# DBs the HTTP suite does not use, so flushing here cannot disturb it.
REGISTRY_DB = 7


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis", "valkey"])
async def backend(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[Backend]:
    async with started_backend(backend_url(request, redis_server, REGISTRY_DB)) as opened:
        yield opened


def make_registry(backend: Backend, **settings: object) -> Registry:
    return Registry(backend, Settings(backend="memory://", **settings))  # type: ignore[arg-type]


async def test_create_read_keeps_bytes_and_versions(backend: Backend) -> None:
    registry = make_registry(backend)
    document = b'{ "a" : [1, 2.50, "\\u00e9"] }'
    created = await registry.create("t", document)
    assert _core.is_token(created.token)
    assert created.version == 1
    read = await registry.read("t", created.token)
    assert (read.payload, read.version) == (document, 1)
    assert await registry.patch("t", created.token, b'{"b": true}', "merge") == 2
    assert await registry.replace("t", created.token, b"[1]", if_version=2) == 3
    read = await registry.read("t", created.token, fresh=True)
    assert (read.payload, read.version) == (b"[1]", 3)


async def test_patches_grow_a_document_to_the_document_limit(backend: Backend) -> None:
    """What one call sends is bounded by max_context_bytes; what patches grow, by
    max_document_bytes; a refused patch changes nothing."""
    registry = make_registry(backend, max_context_bytes=100, max_document_bytes=300)
    token = (await registry.create("t", b'{"a":"' + b"a" * 80 + b'"}')).token
    for key in "bc":
        patch = b'{"%s":"%s"}' % (key.encode(), key.encode() * 80)
        await registry.patch("t", token, patch, "merge")
    grown = await registry.read("t", token, fresh=True)
    assert (len(grown.payload), grown.version) == (262, 3)
    add = b'[{"op":"add","path":"/d","value":"%s"}]' % (b"d" * 40)
    with pytest.raises(PayloadTooLarge, match="309 bytes; FASTCTX_MAX_DOCUMENT_BYTES is 300"):
        await registry.patch("t", token, add, "json")
    with pytest.raises(PayloadTooLarge, match="FASTCTX_MAX_CONTEXT_BYTES is 100"):
        await registry.replace("t", token, b"[" + b"1," * 60 + b"1]")
    with pytest.raises(PayloadTooLarge, match="FASTCTX_MAX_CONTEXT_BYTES is 100"):
        await registry.create("t", b"[" + b"1," * 60 + b"1]")
    read = await registry.read("t", token, fresh=True)
    assert (read.payload, read.version) == (grown.payload, 3)


async def test_stale_if_match_changes_nothing(backend: Backend) -> None:
    registry = make_registry(backend)
    created = await registry.create("t", b'{"a": 1}')
    with pytest.raises(VersionConflict):
        await registry.patch("t", created.token, b'{"a": 2}', "merge", if_version=7)
    with pytest.raises(VersionConflict):
        await registry.delete("t", created.token, if_version=2)
    read = await registry.read("t", created.token, fresh=True)
    assert (read.payload, read.version) == (b'{"a": 1}', 1)


async def test_tenants_do_not_share_tokens(backend: Backend) -> None:
    registry = make_registry(backend)
    created = await registry.create("acme", b"{}")
    with pytest.raises(NotFound):
        await registry.read("globex", created.token)
    with pytest.raises(NotFound):
        await registry.delete("globex", created.token)
    assert await registry.mget("globex", [created.token]) == [None]
    assert (await registry.read("acme", created.token)).version == 1


async def test_concurrent_patches_on_one_node_all_land(backend: Backend) -> None:
    registry = make_registry(backend)
    created = await registry.create("t", b"{}")
    await asyncio.gather(
        *(registry.patch("t", created.token, b'{"f%d": %d}' % (i, i), "merge") for i in range(50))
    )
    read = await registry.read("t", created.token, fresh=True)
    assert read.version == 51
    assert json.loads(read.payload) == {f"f{i}": i for i in range(50)}


async def test_writers_on_two_nodes_never_lose_an_update(redis_server: Any) -> None:
    """Two registries (two nodes) on one Redis: the version check in the script decides."""
    url = redis_server.url(REGISTRY_DB)
    nodes = [open_backend(Settings(backend=url)) for _ in range(2)]
    registries = [make_registry(node) for node in nodes]
    try:
        created = await registries[0].create("t", b"{}")
        await asyncio.gather(
            *(
                registries[i % 2].patch("t", created.token, b'{"k%d": 1}' % i, "merge")
                for i in range(40)
            )
        )
        read = await registries[1].read("t", created.token, fresh=True)
        assert read.version == 41
        assert set(json.loads(read.payload)) == {f"k{i}" for i in range(40)}
    finally:
        for node in nodes:
            await node.close()


def test_append_patch_adds_each_item_to_an_array_there() -> None:
    patch = append_patch(b'{"a/b": {"log": [ 1 ]}}', "/a~1b/log", [b"2", b'{"x": [3]}'])
    assert json.loads(patch) == [
        {"op": "add", "path": "/a~1b/log/-", "value": 2},
        {"op": "add", "path": "/a~1b/log/-", "value": {"x": [3]}},
    ]
    assert patch == (
        b'[{"op":"add","path":"/a~1b/log/-","value":2},'
        b'{"op":"add","path":"/a~1b/log/-","value":{"x": [3]}}]'
    )
    assert append_patch(b"[]", "", [b"1"]) == b'[{"op":"add","path":"/-","value":1}]'
    assert append_patch(b"[]", "", []) == b"[]"


def test_append_patch_adds_the_array_where_nothing_is() -> None:
    patch = append_patch(b'{"a": {}}', "/a/log", [b"1", b'"two"'])
    assert patch == b'[{"op":"add","path":"/a/log","value":[1,"two"]}]'
    assert append_patch(b"{}", "/log", []) == b'[{"op":"add","path":"/log","value":[]}]'
    # the patch is made whatever the parent: applying it is what requires one
    patch = append_patch(b"{}", "/a/b", [b"1"])
    assert json.loads(patch) == [{"op": "add", "path": "/a/b", "value": [1]}]
    with pytest.raises(_core.PatchError):
        _core.json_patch(b"{}", patch)


@pytest.mark.parametrize(
    ("document", "path", "kind"),
    [
        (b'{"a": {}}', "/a", "an object"),
        (b'{"a": "[]"}', "/a", "a string"),
        (b'{"a": 1.5}', "/a", "a number"),
        (b'{"a": false}', "/a", "a boolean"),
        (b'{"a": null}', "/a", "null"),
        (b"{}", "", "an object"),
    ],
)
def test_append_patch_refuses_anything_but_an_array(document: bytes, path: str, kind: str) -> None:
    with pytest.raises(InvalidPatch, match=f"is {kind}, not an array"):
        append_patch(document, path, [b"1"])


def test_append_patch_refuses_a_malformed_pointer() -> None:
    with pytest.raises(_core.SelectError):
        append_patch(b"{}", "log", [b"1"])


async def test_append(backend: Backend) -> None:
    registry = make_registry(backend)
    created = await registry.create("t", b'{"log": [0]}')
    assert await registry.append("t", created.token, "/log", [b"1", b"[2]"]) == 2
    assert await registry.append("t", created.token, "/new", [b'"x"'], if_version=2) == 3
    read = await registry.read("t", created.token, fresh=True)
    assert (json.loads(read.payload), read.version) == ({"log": [0, 1, [2]], "new": ["x"]}, 3)
    with pytest.raises(VersionConflict):
        await registry.append("t", created.token, "/log", [b"3"], if_version=2)
    with pytest.raises(InvalidPatch, match="is a string, not an array"):
        await registry.append("t", created.token, "/new/0", [b"3"])
    with pytest.raises(InvalidPatch, match='cannot append to /a/b: add /a/b: no member "a"'):
        await registry.append("t", created.token, "/a/b", [b"3"])
    with pytest.raises(NotFound):
        await registry.append("globex", created.token, "/log", [b"3"])
    assert (await registry.read("t", created.token, fresh=True)).version == 3


@pytest.mark.parametrize("item", [b"", b"1, 2", b'1},{"op":"remove","path":"/log"', b"[1"])
async def test_append_takes_one_json_value_per_item(backend: Backend, item: bytes) -> None:
    registry = make_registry(backend)
    created = await registry.create("t", b'{"log": []}')
    with pytest.raises(_core.JsonError):
        await registry.append("t", created.token, "/log", [item])
    read = await registry.read("t", created.token, fresh=True)
    assert (read.payload, read.version) == (b'{"log": []}', 1)


async def test_concurrent_appends_on_one_node_all_land(backend: Backend) -> None:
    registry = make_registry(backend)
    created = await registry.create("t", b"{}")
    await asyncio.gather(
        *(registry.append("t", created.token, "/log", [b"%d" % i]) for i in range(50))
    )
    read = await registry.read("t", created.token, fresh=True)
    assert read.version == 51
    assert sorted(json.loads(read.payload)["log"]) == list(range(50))


async def test_session_caps_context_expiry_and_lists_members(backend: Backend) -> None:
    registry = make_registry(backend)
    sessions = SessionManager(backend, registry)
    session, expires_at = await sessions.create("t", ttl=60)
    assert expires_at - now_ms() <= 60_000
    inside = await registry.create("t", b"{}", ttl=3600, session=session)
    assert inside.expires_at <= now_ms() + 60_000  # never outlives the session
    meta = await registry.meta("t", inside.token)
    assert meta.session == session
    other = await registry.create("t", b"{}", session=session)
    view = await sessions.get("t", session)
    assert view.contexts == sorted([inside.token, other.token])
    await registry.delete("t", other.token)
    assert (await sessions.get("t", session)).contexts == [inside.token]


async def test_unknown_session_is_not_found(backend: Backend) -> None:
    registry = make_registry(backend)
    with pytest.raises(NotFound):
        await registry.create("t", b"{}", session=_core.new_token())
    with pytest.raises(NotFound):
        await registry.create("t", b"{}", session="not-a-token")


async def test_session_delete_cascades_and_empties_the_cache(backend: Backend) -> None:
    registry = make_registry(backend)
    sessions = SessionManager(backend, registry)
    session, _ = await sessions.create("t")
    tokens = [(await registry.create("t", b"[]", session=session)).token for _ in range(3)]
    outside = await registry.create("t", b"[]")
    for token in tokens:
        await registry.read("t", token)  # now cached on this node, where there is a cache
    await sessions.delete("t", session)
    for token in tokens:
        with pytest.raises(NotFound):
            await registry.read("t", token)
    with pytest.raises(NotFound):
        await sessions.get("t", session)
    with pytest.raises(NotFound):
        await sessions.delete("t", session)
    assert (await registry.read("t", outside.token)).version == 1


async def test_contexts_expire(backend: Backend) -> None:
    registry = make_registry(backend)
    created = await registry.create("t", b"{}", ttl=1)
    await asyncio.sleep(1.1)
    with pytest.raises(NotFound):
        await registry.read("t", created.token, fresh=True)


async def test_memory_sweep_drops_expired_contexts_and_sessions() -> None:
    backend = MemoryBackend()
    registry = make_registry(backend)
    sessions = SessionManager(backend, registry)
    session, _ = await sessions.create("t", ttl=1)
    await registry.create("t", b"{}", session=session)
    await registry.create("t", b"{}", ttl=1)
    kept = await registry.create("t", b"{}", ttl=100)
    assert backend.sweep(now_ms() + 1500) >= 3
    assert (await registry.read("t", kept.token)).version == 1
    assert len(backend.store.frames) == 1
    assert len(backend.store.sessions) == 0


async def test_cached_reads_survive_a_dead_redis_and_writes_fail_fast(
    own_redis: RedisServer,
) -> None:
    backend = open_backend(Settings(backend=own_redis.url(), backend_timeout=0.5))
    await backend.start()
    registry = make_registry(backend)
    try:
        created = await registry.create("t", b'{"kept": true}')
        never_read = await registry.create("t", b"{}")
        registry.forget("t", never_read.token)
        assert (await registry.read("t", created.token)).cache == "hit"
        own_redis.stop()
        # Once the node sees the connection drop, nothing it cached is fresh any more: it may
        # have missed invalidations. The cached copy is still served, as stale.
        deadline = time.monotonic() + 2
        while backend.coherent:
            assert time.monotonic() < deadline, "the lost connection went unnoticed"
            await asyncio.sleep(0.005)
        read = await registry.read("t", created.token)
        assert (read.payload, read.version, read.cache) == (b'{"kept": true}', 1, "stale")
        with pytest.raises(BackendError):
            await registry.read("t", never_read.token)
        started = time.monotonic()
        with pytest.raises(BackendError):
            await registry.patch("t", created.token, b"{}", "merge")
        assert time.monotonic() - started < 5
    finally:
        await backend.close()


async def test_redis_invalidations_outdate_entries_written_elsewhere(redis_server: Any) -> None:
    """Another writer's change stops this node's entry being served as fresh (age alone would
    not); the entry is kept to catch up from."""
    backend = open_backend(Settings(backend=redis_server.url(REGISTRY_DB)))
    await backend.start()
    registry = make_registry(backend)
    try:
        created = await registry.create("t", b'{"v": 1}')
        assert backend.coherent
        assert registry.cache is not None
        key = f"t/{created.token}"
        assert registry.cache.get(key) is not None
        elsewhere = Pipeline(Address.from_url(redis_server.url(REGISTRY_DB)))
        await elsewhere.execute("PEXPIRE", f"fc:c:{{t/{created.token}}}", 600_000)
        await elsewhere.close()
        deadline = time.monotonic() + 2
        while registry.fresh(key) is not None:
            assert time.monotonic() < deadline, "the invalidation never arrived"
            await asyncio.sleep(0.002)
        kept = registry.cache.peek(key)
        assert kept is not None
        assert kept[3] == 0
    finally:
        await backend.close()


async def _overtaken(own_redis: RedisServer, pause: str, fill: str) -> None:
    """Node A's `fill` of a context goes to Redis, which holds it for a moment (`CLIENT PAUSE`)
    while A's event loop stands still. Redis runs the fill, then a delete from elsewhere: A's
    loop then takes the delete's invalidation, behind the fill's reply, before the task that
    filled resumes. What that task puts in the cache must not be served as current."""
    async with started_backend(own_redis.url()) as backend:
        registry = make_registry(backend)
        token = await created_once_tracked(registry, backend, b'{"v": 1}')
        key = f"t/{token}"
        # Once each first, so that Redis has the scripts: none is loaded while it holds the fill.
        await registry.patch("t", token, b'{"v": 2}', "merge")
        await registry.read("t", token, fresh=True)
        if fill == "read":
            registry.forget("t", token)  # a miss: read from Redis
            filled = asyncio.ensure_future(registry.read("t", token))
        else:
            filled = asyncio.ensure_future(registry.patch("t", token, b'{"v": 3}', "merge"))
        await deleted_behind(own_redis, pause, key)
        await asyncio.wait_for(filled, 5)
        assert registry.fresh(key) is None
        with pytest.raises(NotFound):
            await registry.read("t", token)


async def test_a_nodes_own_writes_stay_cached_fresh(backend: Backend) -> None:
    """Redis reports a script's writes to the connection that ran it, NOLOOP or not: that
    report is counted as the write's own, and the node serves what it wrote from its cache."""
    registry = make_registry(backend)
    token = await created_once_tracked(registry, backend, b'{"v": 1}')
    key = f"t/{token}"
    await registry.patch("t", token, b'{"v": 2}', "merge")
    await registry.replace("t", token, b'{"v": 3}')
    await asyncio.gather(
        *(registry.patch("t", token, b'{"k%d": 1}' % i, "merge") for i in range(4))
    )
    await asyncio.sleep(0.05)  # any report still on its way has come
    read = await registry.read("t", token)
    assert (read.version, read.cache) == (7, "hit")
    assert registry.fresh(key) is not None


async def test_a_write_answered_with_a_change_report_behind_it_is_not_cached_fresh(
    own_redis: RedisServer,
) -> None:
    await _overtaken(own_redis, "WRITE", "patch")


async def test_a_read_answered_with_a_change_report_behind_it_is_not_cached_fresh(
    own_redis: RedisServer,
) -> None:
    await _overtaken(own_redis, "ALL", "read")


def _calls(redis: RedisServer, command: str) -> int:
    """Calls of `command` Redis has run (those inside scripts included)."""
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def _reads(redis: RedisServer) -> dict[str, int]:
    return {command: _calls(redis, command) for command in ("get", "mget", "getrange")}


async def test_a_write_names_the_cached_version_without_reading_it_first(
    own_redis: RedisServer,
) -> None:
    backend = open_backend(Settings(backend=own_redis.url()))
    await backend.start()
    registry = make_registry(backend)
    try:
        created = await registry.create("t", b'{"a": 1}', session=None)
        before = _reads(own_redis)
        assert await registry.patch("t", created.token, b'{"b": 2}', "merge") == 2
        # The first change makes the context's stream: one GETRANGE more, of the frame's
        # created_at for the `created` event it appends first.
        after = _reads(own_redis)
        assert {k: after[k] - before[k] for k in after} == {"get": 0, "mget": 0, "getrange": 2}
        assert await registry.patch("t", created.token, b'{"c": 3}', "merge") == 3
        # One GETRANGE: the script's own version check, of the version's 8 bytes alone. No
        # read before it (the cache had v2), and the document is neither read nor sent.
        before, after = after, _reads(own_redis)
        assert {k: after[k] - before[k] for k in after} == {"get": 0, "mget": 0, "getrange": 1}
        fresh = await registry.read("t", created.token, fresh=True)
        assert fresh.payload == b'{"a":1,"b":2,"c":3}'
        # The cached copy keeps what the frame needs: created_at survives the write.
        meta = await registry.meta("t", created.token)
        assert meta.version == 3
        assert meta.created_at <= meta.updated_at
    finally:
        await backend.close()


async def test_a_cached_copy_that_is_behind_costs_a_retry_not_an_update(
    redis_server: Any,
) -> None:
    """Node A still holds v1 as fresh (say, an invalidation is on its way) when B has written v2:
    A's write from its copy is refused by the version check, and A reads v2 and writes on it."""
    url = redis_server.url(REGISTRY_DB)
    a_backend, b_backend = open_backend(Settings(backend=url)), open_backend(Settings(backend=url))
    a, b = make_registry(a_backend), make_registry(b_backend)
    try:
        # What A caches in the millisecond its connection opens is not fresh (it may predate
        # the connection's tracking): connect first, and let that millisecond pass.
        await a_backend.ping()
        await asyncio.sleep(0.002)
        created = await a.create("t", b'{"n": 1}')
        key = f"t/{created.token}"
        stale = a.cache.peek(key)  # type: ignore[union-attr]
        assert stale is not None
        await b.patch("t", created.token, b'{"by": "b"}', "merge")
        # Put A's v1 back as if no invalidation had arrived yet.
        a.cache.put(key, stale[0], stale[1], stale[2], stale[4])  # type: ignore[union-attr]
        assert a.fresh(key) is not None
        assert await a.patch("t", created.token, b'{"by2": "a"}', "merge") == 3
        read = await b.read("t", created.token, fresh=True)
        assert json.loads(read.payload) == {"n": 1, "by": "b", "by2": "a"}
        # With If-Match naming the stale version, the backend's version decides: a conflict.
        a.cache.put(key, stale[0], stale[1], stale[2], stale[4])  # type: ignore[union-attr]
        with pytest.raises(VersionConflict):
            await a.patch("t", created.token, b'{"x": 1}', "merge", if_version=1)
        # A delete from a stale copy is not lost either: it lands on the real version.
        a.cache.put(key, stale[0], stale[1], stale[2], stale[4])  # type: ignore[union-attr]
        await a.delete("t", created.token)
        with pytest.raises(NotFound):
            await b.read("t", created.token, fresh=True)
    finally:
        await a_backend.close()
        await b_backend.close()


@contextlib.asynccontextmanager
async def _holding(locks: _KeyedLocks, key: str) -> AsyncIterator[None]:
    """What Registry._conditional does around a write."""
    if not locks.take(key):
        await locks.wait(key)
    try:
        yield
    finally:
        locks.release(key)


async def test_a_keys_lock_lets_one_writer_in_and_is_gone_when_nobody_holds_it() -> None:
    locks = _KeyedLocks()
    inside: list[str] = []
    order: list[int] = []
    most = 0

    async def write(key: str, number: int = 0) -> None:
        nonlocal most
        async with _holding(locks, key):
            inside.append(key)
            order.append(number)
            most = max(most, inside.count(key))
            await asyncio.sleep(0)
            inside.remove(key)

    await asyncio.gather(*(write(key, n) for n, key in enumerate(["a", "b"] * 20)))
    assert most == 1  # one writer a key at a time, however many wait
    assert [n for n in order if n % 2 == 0] == list(range(0, 40, 2))  # in the order they came
    assert locks._waiting == {}

    entered = asyncio.Event()

    async def hold_a() -> None:
        async with _holding(locks, "a"):
            entered.set()
            await asyncio.sleep(3600)

    holder = asyncio.create_task(hold_a())
    await entered.wait()
    waiter = asyncio.create_task(write("a"))
    await asyncio.sleep(0)
    waiter.cancel()  # cancelled while waiting for the lock
    holder.cancel()
    for task in (waiter, holder):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert locks._waiting == {}
    await write("a")  # and the key can be held again
    assert locks._waiting == {}


async def test_a_writer_cancelled_as_it_is_handed_the_key_hands_it_on() -> None:
    locks = _KeyedLocks()
    assert locks.take("a")
    handed = asyncio.create_task(locks.wait("a"))
    last_done = asyncio.Event()

    async def last() -> None:
        async with _holding(locks, "a"):
            last_done.set()

    behind = asyncio.create_task(last())
    await asyncio.sleep(0)  # both wait, in that order
    locks.release("a")  # the turn is handed to `handed`...
    handed.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await handed
    await asyncio.wait_for(last_done.wait(), 1)  # the turn went on to the next writer
    await behind
    assert locks._waiting == {}
