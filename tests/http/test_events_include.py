"""`?include=patch` and `?include=data` on the change streams: a subscriber that applies every
event keeps an exact copy, on every backend, in process and over granian, across two nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from test_api_events import events, take

from fastctx import _core
from fastctx.backends import context_stream
from fastctx.backends.memory import MemoryBackend
from fastctx.config import DEFAULT_TENANT, Settings
from fastctx.http.includes import Include, Includes, parse_include
from fastctx.registry import Registry
from support.asgi import app_client
from support.pool import REDIS_DB, ServerPool, node_urls
from support.redis import RedisServer

pytestmark = pytest.mark.anyio

WAIT = 10.0
COMBOS = [(b, t) for b in ("memory", "redis", "cluster") for t in ("asgi", "granian")]
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
# Merge patches, JSON Patches and PUTs, documents that are not objects, text that spans lines.
WRITES: list[tuple[str, Any]] = [
    ("merge", {"a": 1, "nested": {"x": {"y": "z"}}}),
    ("json", [{"op": "add", "path": "/list", "value": [1, 2]}]),
    ("put", {"replaced": True, "list": [0], "pi": 3.14159}),
    ("merge", {"list": None, "text": "two\nlines, é and \u2028"}),
    ("json", [{"op": "copy", "from": "/text", "path": "/copy"}, {"op": "remove", "path": "/pi"}]),
    ("put", [1, "two", {"three": 3.5}]),
    (
        "json",
        [{"op": "add", "path": "/-", "value": None}, {"op": "test", "path": "/0", "value": 1}],
    ),
    ("merge", {"back": "to an object"}),
    ("json", [{"op": "replace", "path": "", "value": {"root": ["replaced"]}}]),
    ("put", "a string"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=COMBOS, ids=[f"{b}-{t}" for b, t in COMBOS])
def where(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    """(transport, URLs) of the writer's and the subscriber's nodes (see node_urls)."""
    backend, transport = request.param
    return transport, node_urls(request, backend, transport)


@pytest.fixture
async def pair(
    where: tuple[str, list[str]],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(writer, subscriber): clients of two nodes where the backend is shared."""
    transport, urls = where
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for url in urls:
            if transport == "granian":
                opened = httpx.AsyncClient(base_url=url, timeout=WAIT)
                clients.append(await stack.enter_async_context(opened))
            else:
                clients.append(await stack.enter_async_context(app_client(url)))
        yield clients[0], clients[-1]


async def write(client: httpx.AsyncClient, token: str, kind: str, body: Any) -> int:
    content = json.dumps(body).encode()
    path = f"/v1/contexts/{token}"
    if kind == "put":
        reply = await client.put(
            path, content=content, headers={"Content-Type": "application/json"}
        )
    else:
        headers = MERGE if kind == "merge" else JSON_PATCH
        reply = await client.patch(path, content=content, headers=headers)
    assert reply.status_code == 200, reply.text
    version: int = reply.json()["version"]
    return version


async def current(client: httpx.AsyncClient, token: str) -> tuple[bytes, int]:
    """The document and its version, read past the node's cache: what a subscriber re-reads."""
    reply = await client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert reply.status_code == 200, reply.text
    return reply.content, int(reply.headers["etag"].strip('"'))


def applied(copy: bytes, event: dict[str, Any]) -> bytes:
    return _core.json_patch(copy, json.dumps(event["data"]["patch"]).encode())


@contextlib.asynccontextmanager
async def subscribed(
    client: httpx.AsyncClient, path: str, **headers: str
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        yield events(response)


async def test_a_subscriber_that_applies_each_patch_keeps_an_exact_copy(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """One write at a time: every event carries what makes its version, never a resync."""
    writer, reader = pair
    reply = await writer.post("/v1/contexts", json={"start": 0})
    token = reply.json()["token"]
    path = f"/v1/contexts/{token}/events?include=patch"
    async with subscribed(reader, path, **{"Last-Event-ID": "0-0"}) as stream:
        (created,) = await take(stream, 1)
        assert (created["event"], created["data"]["data"]) == ("created", {"start": 0})
        copy = json.dumps(created["data"]["data"]).encode()
        for kind, body in WRITES:
            version = await write(writer, token, kind, body)
            (event,) = await take(stream, 1)
            assert (event["event"], event["data"]["version"]) == ("updated", version)
            assert "resync" not in event["data"], event
            copy = applied(copy, event)
            assert json.loads(copy) == json.loads((await current(writer, token))[0])
        await writer.delete(f"/v1/contexts/{token}")
        (deleted,) = await take(stream, 1)
    assert deleted["data"] == {"token": token, "version": len(WRITES) + 1, "session": None}


async def test_a_subscriber_of_a_burst_of_writes_converges_on_the_document(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Writes faster than the events go out: the subscriber applies what it can and re-reads
    where an event says resync; it ends with the document exactly."""
    writer, reader = pair
    reply = await writer.post("/v1/contexts", json={"start": 0})
    token = reply.json()["token"]
    async with subscribed(reader, f"/v1/contexts/{token}/events?include=patch") as stream:
        copy, at = await current(reader, token)
        last = 0
        for kind, body in WRITES * 3:
            last = await write(writer, token, kind, body)
        while at < last:
            (event,) = await take(stream, 1)
            version = event["data"]["version"]
            if version <= at:
                continue  # the read already had it
            if version == at + 1 and "patch" in event["data"]:
                copy, at = applied(copy, event), version
            else:
                assert event["data"].get("resync") is True or version > at + 1, event
                copy, at = await current(reader, token)
    final, version = await current(writer, token)
    assert (json.loads(copy), at) == (json.loads(final), version)


async def test_created_events_carry_the_document(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    writer, reader = pair
    session = (await writer.post("/v1/sessions")).json()["session"]
    for include in ("patch", "data", "data,patch", "patch,data"):
        path = f"/v1/sessions/{session}/events?include={include}"
        async with subscribed(reader, path) as stream:
            reply = await writer.post(f"/v1/contexts?session={session}", json={"k": include})
            token = reply.json()["token"]
            (created,) = await take(stream, 1)
            version = await write(writer, token, "merge", {"more": True})
            (updated,) = await take(stream, 1)
        assert (created["event"], created["data"]) == (
            "created",
            {"token": token, "version": 1, "session": session, "data": {"k": include}},
        )
        assert (updated["event"], updated["data"]["version"]) == ("updated", version)
        assert "resync" not in updated["data"]
        if "patch" in include:
            assert updated["data"]["patch"], updated
        if "data" in include:
            assert updated["data"]["data"] == {"k": include, "more": True}
        else:
            assert "data" not in updated["data"]


async def test_without_include_events_carry_neither_data_nor_patch(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    writer, reader = pair
    token = (await writer.post("/v1/contexts", json={"n": 0})).json()["token"]
    await write(writer, token, "merge", {"n": 1})
    async with subscribed(reader, f"/v1/contexts/{token}/events", **{"Last-Event-ID": "0-0"}) as s:
        created, updated = await take(s, 2)
    assert created["data"] == {"token": token, "version": 1, "session": None}
    assert updated["data"] == {"token": token, "version": 2, "session": None}


async def test_a_replayed_event_of_a_context_that_moved_on_says_resync(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Without the write's own patch, only the event of the version still stored can say what
    made it: the earlier ones tell the subscriber to read the context again."""
    writer, reader = pair
    token = (await writer.post("/v1/contexts", json={"n": 0})).json()["token"]
    await write(writer, token, "put", {"n": 1})
    await write(writer, token, "put", {"n": 2})
    path = f"/v1/contexts/{token}/events?include=patch"
    async with subscribed(reader, path, **{"Last-Event-ID": "0-0"}) as stream:
        created, first, second = await take(stream, 3)
    for stale in (created, first):
        assert stale["data"]["resync"] is True
        assert "data" not in stale["data"]
        assert "patch" not in stale["data"]
    assert second["data"]["patch"] == [{"op": "replace", "path": "", "value": {"n": 2}}]
    assert "resync" not in second["data"]


@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_the_patch_a_write_appended_to_its_event_is_sent_as_it_is(
    server_pool: ServerPool, redis_server: RedisServer, backend: str
) -> None:
    """When the write path stores its JSON Patch in the event (the `patch` field), that patch
    is sent, without reading the document; other events fall back as before."""
    client = server_pool.client(backend, "granian")
    token = client.post("/v1/contexts", json={"n": 0}).json()["token"]
    patch = '[{"op":"add","path":"/from","value":"the event"}]'
    stream = context_stream(DEFAULT_TENANT, token)
    command = ["XADD", stream, "*", "type", "updated", "version", "2", "token", token]
    command += ["session", "", "patch", patch]
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=WAIT) as reader:
        path = f"/v1/contexts/{token}/events?include=patch"
        async with subscribed(reader, path) as events_of:
            await asyncio.sleep(0.2)  # subscribed before the event is appended
            if backend == "redis":
                redis_server.cli("-n", str(REDIS_DB["default"]), *command)
            else:
                server_pool.cluster.nodes[0].cli("-c", *command)
            (event,) = await take(events_of, 1)
    assert event["data"] == {
        "token": token,
        "version": 2,
        "session": None,
        "patch": [{"op": "add", "path": "/from", "value": "the event"}],
    }


# --- in process: the parsing, and one read per event for every subscriber --------------------


@pytest.mark.parametrize(
    ("value", "include"),
    [
        (None, Include()),
        ("data", Include(data=True)),
        ("patch", Include(patch=True)),
        ("data,patch", Include(data=True, patch=True)),
        ("patch,data", Include(data=True, patch=True)),
    ],
)
def test_include_takes_data_patch_or_both(value: str | None, include: Include) -> None:
    assert parse_include(value) == include


@pytest.mark.parametrize("value", ["", "bogus", "data,", "data,bogus", "Patch", "data patch"])
def test_include_refuses_anything_else(value: str) -> None:
    from fastctx.errors import BadRequest

    with pytest.raises(BadRequest, match="include takes data, patch or data,patch"):
        parse_include(value)


async def test_a_thousand_subscribers_of_an_event_cost_one_read() -> None:
    backend = MemoryBackend()
    registry = Registry(backend, Settings())
    includes = Includes(registry)
    token = (await registry.create("t", b'{"n": 0}')).token
    version = await registry.patch("t", token, b'{"n": 1}', "merge")
    assert registry.cache is not None
    event = ("1-0", {"type": "updated", "version": str(version), "token": token, "session": ""})
    looked_up = registry.cache.hits + registry.cache.misses
    made = await asyncio.gather(
        *(includes.members("t", event, Include(patch=True)) for _ in range(1000))
    )
    assert registry.cache.hits + registry.cache.misses == looked_up + 1
    assert set(made) == {b',"patch":[{"op":"replace","path":"","value":{"n":1}}]'}
    # Later subscribers (a replay) get what was made, even once the context moved on.
    await registry.patch("t", token, b'{"n": 2}', "merge")
    assert await includes.members("t", event, Include(patch=True)) == made[0]


async def test_what_is_kept_for_later_subscribers_is_bounded() -> None:
    registry = Registry(MemoryBackend(), Settings())
    includes = Includes(registry, kept_bytes=1000)
    token = (await registry.create("t", b'{"pad": "' + b"x" * 400 + b'"}')).token
    for version in range(2, 12):
        await registry.patch("t", token, b'{"n": %d}' % version, "merge")
        fields = {"type": "updated", "version": str(version), "token": token, "session": ""}
        await includes.members("t", ("1-0", fields), Include(data=True))
    assert len(includes._made) == 2  # 420 bytes each: two fit in 1000
    assert includes._held <= 1000
