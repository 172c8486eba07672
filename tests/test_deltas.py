"""Deltas: a context is a base document and a log of patches; writes send the patch, readers
catch up from the version they hold, and the log keeps a history (`?version=N`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fastctx import _core
from fastctx.backends import Backend, context_id, context_stream, patchlog
from fastctx.backends.keys import context_key, log_key
from fastctx.backends.memory import MemoryBackend
from fastctx.backends.pipeline import Address, Pipeline
from fastctx.config import Settings
from fastctx.deltas import document_bytes
from fastctx.errors import BackendError, NotFound, VersionGone
from fastctx.registry import Registry
from fastctx.sessions import SessionManager
from support.backends import backend_url, started_backend
from support.redis import RedisServer

pytestmark = pytest.mark.anyio

DELTAS_DB = 11  # a DB no other test uses


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis", "cluster", "valkey", "valkey-cluster"])
async def backend(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[Backend]:
    async with started_backend(backend_url(request, redis_server, DELTAS_DB)) as opened:
        yield opened


@pytest.fixture(params=["redis", "cluster", "valkey"])
async def two_nodes(
    request: pytest.FixtureRequest, redis_server: Any
) -> AsyncIterator[tuple[Registry, Registry]]:
    """Two registries, each on a backend of its own over the same Redis: two nodes."""
    url = backend_url(request, redis_server, DELTAS_DB)
    async with started_backend(url) as one, started_backend(url) as other:
        yield Registry(one, Settings()), Registry(other, Settings())


def message(n: int) -> bytes:
    return json.dumps({"role": "user", "n": n, "text": f"message {n} " + "x" * 40}).encode()


def append_message(n: int) -> bytes:
    return b'[{"op":"add","path":"/messages/-","value":' + message(n) + b"}]"


async def test_a_patch_is_appended_to_the_log_not_written_whole(backend: Backend) -> None:
    registry = Registry(backend, Settings())
    created = await registry.create("t", b'{"messages": []}')
    for n in range(3):
        await registry.patch("t", created.token, append_message(n), "json")
    await registry.patch("t", created.token, b'{"title": "t"}', "merge")
    stored = await backend.contexts.load("t", created.token)
    assert stored is not None
    frame = _core.decode_frame(stored.frame)
    assert frame.payload == b'{"messages": []}'  # the base, as created
    assert frame.version == 5  # moved forward in place
    assert patchlog.base_version(stored.log) == 1
    entries = patchlog.entries(stored.log, patchlog.HEADER_SIZE)
    assert [e.version for e in entries] == [2, 3, 4, 5]
    assert entries[0].patch == append_message(0)
    # the merge patch is kept as the JSON Patch that makes the same change
    assert json.loads(entries[3].patch) == [{"op": "add", "path": "/title", "value": "t"}]
    read = await registry.read("t", created.token, fresh=True)
    expected = {"messages": [json.loads(message(n)) for n in range(3)], "title": "t"}
    assert (json.loads(document_bytes(read.payload)), read.version) == (expected, 5)
    # a node without the context reads base and log and makes the same bytes
    cold = Registry(backend, Settings(cache_bytes=0))
    assert document_bytes((await cold.read("t", created.token)).payload) == document_bytes(
        read.payload
    )


async def test_put_replaces_base_and_log(backend: Backend) -> None:
    registry = Registry(backend, Settings())
    created = await registry.create("t", b'{"messages": []}')
    await registry.patch("t", created.token, append_message(0), "json")
    assert await registry.replace("t", created.token, b'{ "fresh" : true }') == 3
    stored = await backend.contexts.load("t", created.token)
    assert stored is not None
    assert stored.log == b""
    assert _core.decode_frame(stored.frame).payload == b'{ "fresh" : true }'
    meta = await registry.meta("t", created.token)
    assert (meta.version, meta.oldest_version) == (3, 3)
    with pytest.raises(VersionGone):
        await registry.read_version("t", created.token, 2)
    # and the log starts again from the new base
    await registry.patch("t", created.token, b'{"n": 1}', "merge")
    assert (
        document_bytes((await registry.read("t", created.token, fresh=True)).payload)
        == b'{"fresh":true,"n":1}'
    )


async def test_every_kept_version_reads_as_it_was(backend: Backend) -> None:
    registry = Registry(backend, Settings())
    created = await registry.create("t", b'{"messages": []}')
    seen = {1: document_bytes((await registry.read("t", created.token)).payload)}
    for n in range(2, 12):
        await registry.patch("t", created.token, append_message(n), "json")
        seen[n] = document_bytes((await registry.read("t", created.token)).payload)
    for version, payload in seen.items():
        assert (
            document_bytes((await registry.read_version("t", created.token, version)).payload)
            == payload
        )
    with pytest.raises(NotFound, match="at version 11"):
        await registry.read_version("t", created.token, 12)
    assert (await registry.meta("t", created.token)).oldest_version == 1


async def test_a_fold_keeps_the_last_versions(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(patchlog, "FOLD_MIN_BYTES", 0)
    registry = Registry(backend, Settings())
    created = await registry.create("t", b'{"messages": []}')
    seen = {}
    for n in range(2, 60):
        await registry.patch("t", created.token, append_message(n), "json")
        seen[n] = document_bytes((await registry.read("t", created.token)).payload)
    stored = await backend.contexts.load("t", created.token)
    assert stored is not None
    base = patchlog.base_version(stored.log)
    assert base > 1  # folded at least once
    entries = patchlog.entries(stored.log, patchlog.HEADER_SIZE)
    assert len(entries) >= patchlog.KEPT_VERSIONS
    # the log stays within its bound: 2x the base
    assert len(stored.log) <= 2 * _core.decode_frame(stored.frame).size + len(append_message(0))
    meta = await registry.meta("t", created.token)
    assert (meta.version, meta.oldest_version) == (59, base)
    assert meta.oldest_version <= 59 - patchlog.KEPT_VERSIONS
    for version in range(base, 60):
        assert (
            document_bytes((await registry.read_version("t", created.token, version)).payload)
            == seen[version]
        )
    with pytest.raises(VersionGone, match=f"the oldest is {base}"):
        await registry.read_version("t", created.token, base - 1)
    cold = Registry(backend, Settings(cache_bytes=0))
    assert document_bytes((await cold.read("t", created.token)).payload) == seen[59]


@pytest.mark.parametrize("kind", ["redis", "valkey"])
async def test_catching_up_asks_for_the_log_alone(
    kind: str, start_redis: Callable[..., RedisServer]
) -> None:
    # A server of its own: INFO commandstats counts every client's calls, and the shared one
    # serves other tests' servers, whose background scripts would count too.
    server = start_redis(kind=kind)
    url = server.url(DELTAS_DB)
    async with started_backend(url) as one, started_backend(url) as other:
        writer, reader = Registry(one, Settings()), Registry(other, Settings())
        document = json.dumps({"messages": [json.loads(message(n)) for n in range(2000)]})
        created = await writer.create("t", document.encode())
        assert (await reader.read("t", created.token)).version == 1
        for n in range(3):
            await writer.patch("t", created.token, append_message(n), "json")
        assert reader.cache is not None
        reader.cache.outdate(context_id("t", created.token))
        scripts, whole_reads = _calls(server, "evalsha"), _calls(server, "mget")
        assert (await reader.read("t", created.token)).version == 4
        # it asked for what was appended since version 1 (one script), not for the document
        assert _calls(server, "evalsha") == scripts + 1
        assert _calls(server, "mget") == whole_reads


async def test_a_node_catches_up_from_the_version_it_holds(
    two_nodes: tuple[Registry, Registry],
) -> None:
    writer, reader = two_nodes
    document = json.dumps({"messages": [json.loads(message(n)) for n in range(2000)]}).encode()
    created = await writer.create("t", document)
    assert (await reader.read("t", created.token)).version == 1
    for n in range(3):
        await writer.patch("t", created.token, append_message(n), "json")
    wanted = document_bytes((await writer.read("t", created.token)).payload)
    key = context_id("t", created.token)
    assert reader.cache is not None
    reader.cache.outdate(key)  # as the invalidation does, whenever it arrives
    read = await reader.read("t", created.token)
    assert (document_bytes(read.payload), read.version, read.cache) == (wanted, 4, "miss")
    held = reader.cache.peek(key)
    assert held is not None
    assert held[1] == 4
    stored = await writer.contexts.load("t", created.token)
    assert stored is not None
    assert held[4][3] == len(stored.log)
    # and writes from the caught-up copy
    await reader.patch("t", created.token, append_message(3), "json")
    assert (await writer.read("t", created.token, fresh=True)).version == 5


async def test_a_reader_behind_a_fold_reads_the_whole_context(
    two_nodes: tuple[Registry, Registry], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(patchlog, "FOLD_MIN_BYTES", 0)
    writer, reader = two_nodes
    created = await writer.create("t", b'{"messages": []}')
    await reader.read("t", created.token)
    for n in range(40):
        await writer.patch("t", created.token, append_message(n), "json")
    stored = await writer.contexts.load("t", created.token)
    assert stored is not None
    assert patchlog.base_version(stored.log) > 1  # folded
    assert reader.cache is not None
    reader.cache.outdate(context_id("t", created.token))
    read = await reader.read("t", created.token)
    assert read.version == 41
    assert document_bytes(read.payload) == document_bytes(
        (await writer.read("t", created.token, fresh=True)).payload
    )


async def test_a_backend_gives_a_contexts_version_alone(backend: Backend) -> None:
    registry = Registry(backend, Settings())
    created = await registry.create("t", b'{"messages": []}')
    await registry.patch("t", created.token, append_message(0), "json")
    assert await backend.contexts.version("t", created.token) == 2
    await registry.delete("t", created.token)
    assert await backend.contexts.version("t", created.token) is None
    assert await backend.contexts.version("t", _core.new_token()) is None


async def test_a_no_cache_read_of_a_current_copy_asks_only_for_its_version(
    private_redis: RedisServer,
) -> None:
    # Its own Redis: INFO commandstats counts every client's calls, and the shared one serves
    # other tests' servers, whose background scripts would count too.
    redis_server = private_redis
    async with started_backend(redis_server.url(DELTAS_DB)) as backend:
        registry = Registry(backend, Settings())
        created = await registry.create("t", b'{"messages": []}')
        await registry.patch("t", created.token, append_message(0), "json")
        wanted = document_bytes((await registry.read("t", created.token)).payload)
        counts = {name: _calls(redis_server, name) for name in ("getrange", "mget", "evalsha")}
        read = await registry.read("t", created.token, fresh=True)
        assert (document_bytes(read.payload), read.version, read.cache) == (wanted, 2, "miss")
        assert {name: _calls(redis_server, name) - n for name, n in counts.items()} == {
            "getrange": 1,
            "mget": 0,
            "evalsha": 0,
        }


async def test_a_copy_known_to_be_behind_is_caught_up_without_asking_its_version(
    private_redis: RedisServer,
) -> None:
    # Its own Redis: INFO commandstats counts every client's calls, and the shared one serves
    # other tests' servers, whose background scripts would count too.
    redis_server = private_redis
    url = redis_server.url(DELTAS_DB)
    async with started_backend(url) as one, started_backend(url) as other:
        writer, reader = Registry(one, Settings()), Registry(other, Settings())
        created = await writer.create("t", b'{"messages": []}')
        await reader.read("t", created.token)
        await writer.patch("t", created.token, append_message(0), "json")
        reader.outdate("t", created.token)  # as an event of version 2 tells it
        counts = {name: _calls(redis_server, name) for name in ("getrange", "mget", "evalsha")}
        read = await reader.read("t", created.token, fresh=True)
        assert read.version == 2
        # One catch-up script, whose own two GETRANGEs (the log's header, then its tail) are
        # all there are: a version read before it would be a third.
        assert {name: _calls(redis_server, name) - n for name, n in counts.items()} == {
            "getrange": 2,
            "mget": 0,
            "evalsha": 1,
        }


async def test_a_no_cache_read_of_a_copy_gone_behind_reads_the_backends(
    two_nodes: tuple[Registry, Registry],
) -> None:
    writer, reader = two_nodes
    created = await writer.create("t", b'{"messages": []}')
    await reader.read("t", created.token)
    key = context_id("t", created.token)
    held = reader._held(key, fresh=False)
    assert held is not None
    await writer.patch("t", created.token, append_message(0), "json")
    # The reader's copy of version 1 as it is until the invalidation arrives: still fresh.
    reader._remember(key, held)
    read = await reader.read("t", created.token, fresh=True)
    assert read.version == 2
    wanted = (await writer.read("t", created.token)).payload
    assert document_bytes(read.payload) == document_bytes(wanted)
    await writer.delete("t", created.token)
    reader._remember(key, held)
    with pytest.raises(NotFound):
        await reader.read("t", created.token, fresh=True)


def _calls(redis: RedisServer, command: str) -> int:
    """How many times `command` has run on `redis` and succeeded (INFO commandstats): a
    script's first run fails with NOSCRIPT and runs again once loaded."""
    for line in redis.cli("INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            stats = dict(field.split("=") for field in line.split(":", 1)[1].split(","))
            return int(stats["calls"]) - int(stats["failed_calls"])
    return 0


async def test_a_patch_sends_redis_the_patch_not_the_document(redis_server: RedisServer) -> None:
    async with started_backend(redis_server.url(DELTAS_DB)) as backend:
        registry = Registry(backend, Settings())
        document = json.dumps({"messages": ["y" * 1000 for _ in range(1000)]}).encode()
        created = await registry.create("t", document)
        before = _net_input(redis_server)
        for n in range(10):
            await registry.patch("t", created.token, append_message(n), "json")
        sent = (_net_input(redis_server) - before) / 10
        assert sent < 2 * len(append_message(0)) + 600, sent  # the patch, keys and event
        assert len(document) > 1_000_000


def _net_input(redis: RedisServer) -> int:
    for line in redis.cli("INFO", "stats").splitlines():
        if line.startswith("total_net_input_bytes:"):
            return int(line.split(":")[1])
    raise AssertionError("no total_net_input_bytes")


async def test_contexts_of_format_1_are_read_and_patched(redis_server: RedisServer) -> None:
    """A frame written before format 2 (no log) reads, and is written whole on its first
    patch, after which patches append."""
    async with started_backend(redis_server.url(DELTAS_DB)) as backend:
        registry = Registry(backend, Settings())
        created = await registry.create("t", b'{"a": 1}')
        frame = bytearray(await backend.contexts.get("t", created.token) or b"")
        frame[2] = 1  # format 1: the checksum covers the whole header
        crc_at = 45 + frame[44]
        header = bytes(frame[:crc_at])
        frame[crc_at : crc_at + 4] = _crc(header + bytes(frame[crc_at + 4 :]))
        redis = Pipeline(Address.from_url(redis_server.url(DELTAS_DB)))
        await redis.execute("SET", context_key("t", created.token), bytes(frame))
        await redis.close()
        fresh = Registry(backend, Settings(cache_bytes=0))
        assert document_bytes((await fresh.read("t", created.token)).payload) == b'{"a": 1}'
        assert await fresh.patch("t", created.token, b'{"b": 2}', "merge") == 2
        assert await fresh.patch("t", created.token, b'{"c": 3}', "merge") == 3
        stored = await backend.contexts.load("t", created.token)
        assert stored is not None
        assert stored.frame[2] == 2
        assert patchlog.base_version(stored.log) == 2
        assert (
            document_bytes((await fresh.read("t", created.token)).payload) == b'{"a":1,"b":2,"c":3}'
        )


def _crc(data: bytes) -> bytes:
    import zlib

    return zlib.crc32(data).to_bytes(4, "little")


async def test_updated_events_carry_the_patch(backend: Backend) -> None:
    registry = Registry(backend, Settings())
    created = await registry.create("t", b'{"messages": []}')
    await registry.patch("t", created.token, append_message(0), "json")
    await registry.patch("t", created.token, b'{"title": null, "n": 1}', "merge")
    await registry.replace("t", created.token, b'{"whole": 1}')
    events = await backend.changes.since(context_stream("t", created.token), "0-0")
    patches = [fields.get("patch") for _, fields in events]
    assert patches[0] is None  # created
    assert patches[1] == append_message(0).decode()
    assert json.loads(patches[2] or "") == [{"op": "add", "path": "/n", "value": 1}]
    assert patches[3] is None  # a PUT carries none: the document is the change


async def test_deleting_a_context_or_its_session_deletes_its_log(backend: Backend) -> None:
    registry = Registry(backend, Settings())
    sessions = SessionManager(backend, registry)
    session, _ = await sessions.create("t")
    alone = await registry.create("t", b'{"messages": []}')
    member = await registry.create("t", b'{"messages": []}', session=session)
    for created in (alone, member):
        await registry.patch("t", created.token, append_message(0), "json")
    assert await _log_exists(backend, alone.token)
    await registry.delete("t", alone.token)
    await sessions.delete("t", session)
    for created in (alone, member):
        assert await backend.contexts.load("t", created.token) is None
        assert not await _log_exists(backend, created.token)


async def _log_exists(backend: Backend, token: str) -> bool:
    if isinstance(backend, MemoryBackend):
        return ("t", token) in backend.store.logs
    commands = backend.commands  # type: ignore[attr-defined]
    return bool(await commands.run(b"EXISTS", log_key("t", token)))


def test_a_log_reads_back_as_written_and_a_cut_one_is_refused() -> None:
    patches = [b'[{"op":"add","path":"/a","value":1}]', b"", b"[]"]
    log = patchlog.header(4) + b"".join(
        patchlog.entry(5 + n, 1_000 + n, patch) for n, patch in enumerate(patches)
    )
    entries = patchlog.entries(log, patchlog.HEADER_SIZE)
    assert [(e.version, e.updated_at, e.patch) for e in entries] == [
        (5, 1_000, patches[0]),
        (6, 1_001, patches[1]),
        (7, 1_002, patches[2]),
    ]
    assert patchlog.encode(4, entries) == log
    assert patchlog.entries(log, len(log)) == []
    whole = {patchlog.HEADER_SIZE + sum(20 + len(p) for p in patches[:n]) for n in range(4)}
    for cut in range(patchlog.HEADER_SIZE + 1, len(log)):
        if cut in whole:
            continue
        with pytest.raises(BackendError, match="patch log is corrupted: truncated"):
            patchlog.entries(log[:cut], patchlog.HEADER_SIZE)
