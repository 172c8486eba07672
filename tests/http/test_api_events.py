"""SSE change streams over real servers: /v1/contexts/{token}/events, /v1/sessions/{id}/events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.pool import ServerPool
from support.redis import RedisServer
from support.servers import GranianServer

pytestmark = pytest.mark.anyio

WAIT = 5.0  # seconds an expected event may take
EXPIRY_DB = 11  # the DB of `few_keys_server`, which no other test uses
SUBSCRIBERS = 200  # concurrent subscribers of one context, each of which must get its event


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
def server(server_pool: ServerPool, request: pytest.FixtureRequest) -> GranianServer:
    return server_pool.granian(request.param)


@pytest.fixture(scope="module", params=["redis", "valkey"])
def few_keys_server(
    server_pool: ServerPool,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[GranianServer]:
    """A node on a DB of its own (of Redis, then of Valkey): the server comes upon a key that
    expires unasked within a second only where few keys have a TTL (a session's expiry is such
    a key)."""
    redis = server_pool.redis if request.param == "redis" else server_pool.valkey
    url = redis.url(EXPIRY_DB)
    server = GranianServer.start(tmp_path_factory.mktemp("expiry"), url)
    try:
        yield server
    finally:
        server.stop()


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The SSE events of a response, as {"id", "event", "data"} (data parsed as JSON)."""
    event: dict[str, Any] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield {**event, "data": json.loads("\n".join(data))}
            event, data = {}, []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith(("id:", "event:")):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


async def take(stream: AsyncIterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        async for event in stream:
            found.append(event)
            if len(found) == count:
                break
    return found


async def rest(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every event until the server ends the stream."""
    async with asyncio.timeout(WAIT):
        return [event async for event in stream]


async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        reply = await client.request(method, url, **kwargs)
    assert reply.status_code < 300, reply.text
    return reply


async def create(base_url: str, body: Any, **params: str) -> str:
    reply = await call("POST", f"{base_url}/v1/contexts", json=body, params=params)
    token: str = reply.json()["token"]
    return token


async def patch(base_url: str, token: str, body: Any) -> None:
    await call(
        "PATCH",
        f"{base_url}/v1/contexts/{token}",
        content=json.dumps(body),
        headers={"Content-Type": "application/merge-patch+json"},
    )


@contextlib.asynccontextmanager
async def subscribe(
    base_url: str, path: str, **headers: str
) -> AsyncIterator[tuple[httpx.Response, AsyncIterator[dict[str, Any]]]]:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=WAIT) as client,
        client.stream("GET", path, headers=headers) as response,
    ):
        yield response, events(response)


async def test_a_change_through_one_node_reaches_a_subscriber_on_another(
    shared_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a, b = shared_nodes
    token = await create(a.base_url, {"n": 0})
    async with subscribe(a.base_url, f"/v1/contexts/{token}/events") as (response, stream):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        await patch(b.base_url, token, {"n": 1})
        await call("DELETE", f"{b.base_url}/v1/contexts/{token}")
        got = await take(stream, 2)
    assert [(e["event"], e["data"]) for e in got] == [
        ("updated", {"token": token, "version": 2, "session": None}),
        ("deleted", {"token": token, "version": 2, "session": None}),
    ]


async def test_a_deleted_context_stream_ends_with_its_deleted_event(server: GranianServer) -> None:
    token = await create(server.base_url, {"n": 0})
    async with subscribe(server.base_url, f"/v1/contexts/{token}/events") as (_, stream):
        await patch(server.base_url, token, {"n": 1})
        await call("DELETE", f"{server.base_url}/v1/contexts/{token}")
        got = await rest(stream)
    assert [(e["event"], e["data"]["version"]) for e in got] == [("updated", 2), ("deleted", 2)]
    # Afterwards the stream still tells how the context ended, and stops there.
    async with subscribe(server.base_url, f"/v1/contexts/{token}/events") as (response, stream):
        assert response.status_code == 200
        assert [e["event"] for e in await rest(stream)] == ["deleted"]


async def test_reconnecting_with_last_event_id_replays_what_was_missed(
    server: GranianServer,
) -> None:
    token = await create(server.base_url, {"n": 0})
    path = f"/v1/contexts/{token}/events"
    async with subscribe(server.base_url, path) as (_, stream):
        await patch(server.base_url, token, {"n": 1})
        (first,) = await take(stream, 1)
    for n in range(2, 6):
        await patch(server.base_url, token, {"n": n})
    async with subscribe(server.base_url, path, **{"Last-Event-ID": first["id"]}) as (_, stream):
        replayed = await take(stream, 4)
        await patch(server.base_url, token, {"n": 6})
        (live,) = await take(stream, 1)
    assert [e["data"]["version"] for e in replayed] == [3, 4, 5, 6]
    assert live["data"]["version"] == 7
    ids = [first["id"]] + [e["id"] for e in replayed] + [live["id"]]
    assert len(set(ids)) == len(ids)


async def test_include_data_adds_the_document(server: GranianServer) -> None:
    token = await create(server.base_url, {"n": 0})
    path = f"/v1/contexts/{token}/events?include=data"
    async with subscribe(server.base_url, path) as (_, stream):
        await call(
            "PUT",
            f"{server.base_url}/v1/contexts/{token}",
            content=b'{\n  "multi": "line",\r\n  "n": [1, 2]\n}',
            headers={"Content-Type": "application/json"},
        )
        (event,) = await take(stream, 1)
    assert event["data"]["data"] == {"multi": "line", "n": [1, 2]}
    assert event["data"]["version"] == 2


async def test_two_hundred_subscribers_all_get_the_event(server: GranianServer) -> None:
    token = await create(server.base_url, {"n": 0})
    limits = httpx.Limits(max_connections=SUBSCRIBERS)
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=WAIT, limits=limits) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        streams = []
        for _ in range(SUBSCRIBERS):
            response = await stack.enter_async_context(
                client.stream("GET", f"/v1/contexts/{token}/events")
            )
            assert response.status_code == 200
            streams.append(events(response))
        await patch(server.base_url, token, {"n": 1})
        got = await asyncio.gather(*(take(stream, 1) for stream in streams))
    assert len(got) == SUBSCRIBERS
    assert all(e[0]["data"]["version"] == 2 for e in got)
    assert len({e[0]["id"] for e in got}) == 1


async def test_a_session_stream_has_every_context_of_the_session(server: GranianServer) -> None:
    session = (await call("POST", f"{server.base_url}/v1/sessions")).json()["session"]
    async with subscribe(server.base_url, f"/v1/sessions/{session}/events") as (_, stream):
        one = await create(server.base_url, {"n": 1}, session=session)
        two = await create(server.base_url, {"n": 2}, session=session)
        await patch(server.base_url, one, {"n": 3})
        got = await take(stream, 3)
    assert [(e["event"], e["data"]["token"], e["data"]["version"]) for e in got] == [
        ("created", one, 1),
        ("created", two, 1),
        ("updated", one, 2),
    ]
    assert all(e["data"]["session"] == session for e in got)


async def test_a_create_is_a_created_event_with_its_document(server: GranianServer) -> None:
    """Version 1 is `created`, not `updated`; `?include=data` gives its document as well."""
    token = await create(server.base_url, {"n": 0})
    path = f"/v1/contexts/{token}/events?include=data"
    async with subscribe(server.base_url, path, **{"Last-Event-ID": "0-0"}) as (_, stream):
        (first,) = await take(stream, 1)
        await patch(server.base_url, token, {"n": 1})
        (second,) = await take(stream, 1)
    assert (first["event"], first["data"]) == (
        "created",
        {"token": token, "version": 1, "session": None, "data": {"n": 0}},
    )
    assert (second["event"], second["data"]["version"]) == ("updated", 2)


async def test_a_context_never_changed_after_its_create_still_expires(
    server: GranianServer,
) -> None:
    """Its last event is `created`: the expiry must still be told (and end the stream)."""
    token = await create(server.base_url, {"n": 0}, ttl="1")
    async with subscribe(server.base_url, f"/v1/contexts/{token}/events") as (_, stream):
        got = await rest(stream)
    assert [(e["event"], e["data"]["version"]) for e in got] == [("expired", 1)]


@pytest.mark.parametrize(
    "query", ["include=bogus", "include=data,bogus", "include=", "inclde=data", "x=1"]
)
async def test_an_unknown_query_of_a_stream_is_400_naming_it(
    server: GranianServer, query: str
) -> None:
    token = await create(server.base_url, {"n": 0})
    session = (await call("POST", f"{server.base_url}/v1/sessions")).json()["session"]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as client:
        for path in (f"/v1/contexts/{token}/events", f"/v1/sessions/{session}/events"):
            reply = await client.get(f"{path}?{query}")
            assert reply.status_code == 400, reply.text
            assert reply.headers["content-type"] == "application/problem+json"
            assert (
                query.partition("=")[0 if query.startswith(("x", "inclde")) else 2]
                in (reply.json()["detail"])
            )


@pytest.mark.parametrize("bad", ["nope", "1-2-3", "-1", "12-x", "9" * 50, "9" * 20 + "-0"])
async def test_a_malformed_last_event_id_is_400(server: GranianServer, bad: str) -> None:
    base_url = server.base_url
    token = await create(base_url, {})
    async with httpx.AsyncClient(timeout=WAIT) as client:
        reply = await client.get(
            f"{base_url}/v1/contexts/{token}/events", headers={"Last-Event-ID": bad}
        )
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/contexts/0123456789abcdefABCDEF/events",
        "/v1/contexts/not-a-token/events",
        "/v1/sessions/0123456789abcdefABCDEF/events",
        "/v1/sessions/not-a-token/events",
    ],
)
def test_unknown_targets_are_404(server: GranianServer, path: str) -> None:
    reply = httpx.get(f"{server.base_url}{path}")
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_another_tenants_token_is_404(server_pool: ServerPool, backend: str) -> None:
    base_url = server_pool.granian(backend, "tenants").base_url
    acme = {"Authorization": "Bearer key-acme"}
    globex = {"Authorization": "Bearer key-globex"}
    token = httpx.post(f"{base_url}/v1/contexts", json={}, headers=acme).json()["token"]
    session = httpx.post(f"{base_url}/v1/sessions", headers=acme).json()["session"]
    for path in (f"/v1/contexts/{token}/events", f"/v1/sessions/{session}/events"):
        assert httpx.get(f"{base_url}{path}", headers=globex).status_code == 404
        assert httpx.get(f"{base_url}{path}").status_code == 401


async def test_deleting_a_session_ends_its_contexts_streams(server: GranianServer) -> None:
    session = (await call("POST", f"{server.base_url}/v1/sessions")).json()["session"]
    token = await create(server.base_url, {"n": 1}, session=session)
    async with (
        subscribe(server.base_url, f"/v1/contexts/{token}/events") as (_, context),
        subscribe(server.base_url, f"/v1/sessions/{session}/events") as (_, whole),
    ):
        await call("DELETE", f"{server.base_url}/v1/sessions/{session}")
        ended = await rest(context)
        (seen,) = await take(whole, 1)
    assert [(e["event"], e["data"]["session"]) for e in ended] == [("deleted", session)]
    assert (seen["event"], seen["data"]["token"]) == ("deleted", token)


async def test_an_expired_context_stream_ends_with_its_expired_event(
    server: GranianServer,
) -> None:
    token = await create(server.base_url, {"n": 0}, ttl="1")
    async with subscribe(server.base_url, f"/v1/contexts/{token}/events") as (_, stream):
        await patch(server.base_url, token, {"n": 1})
        got = await rest(stream)
    assert [(e["event"], e["data"]) for e in got] == [
        ("updated", {"token": token, "version": 2, "session": None}),
        ("expired", {"token": token, "version": 2, "session": None}),
    ]
    async with subscribe(server.base_url, f"/v1/contexts/{token}/events") as (response, stream):
        assert response.status_code == 200
        assert [e["event"] for e in await rest(stream)] == ["expired"]


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_session_stream_ends_when_the_session_expires(
    server_pool: ServerPool, few_keys_server: GranianServer, backend: str
) -> None:
    server = few_keys_server if backend == "redis" else server_pool.granian("memory")
    reply = await call("POST", f"{server.base_url}/v1/sessions", json={"ttl": 1})
    session = reply.json()["session"]
    token = await create(server.base_url, {"n": 1}, session=session)
    async with subscribe(server.base_url, f"/v1/sessions/{session}/events") as (_, stream):
        got = await rest(stream)
    assert [(e["event"], e["data"]) for e in got] == [
        ("expired", {"token": token, "version": 1, "session": session}),
        ("expired", {"token": None, "version": 0, "session": session}),
    ]


async def test_a_followed_context_gets_its_expired_event_in_a_large_keyspace(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    # 50,000 keys with a TTL and one expiry cycle a second: Redis's own sampling would take
    # about forty minutes to come upon the context's key.
    own_redis.cli("CONFIG", "SET", "hz", "1")
    filler = "for i = 1, 50000 do redis.call('SET', 'filler:' .. i, 'x', 'EX', 86400) end"
    own_redis.cli("EVAL", filler, "0")
    server = GranianServer.start(tmp_path, own_redis.url())
    try:
        token = await create(server.base_url, {"n": 0}, ttl="1")
        path = f"/v1/contexts/{token}/events"
        async with subscribe(server.base_url, path) as (_, stream):
            # A second stream of the same context leaves before the expiry: the node still
            # reads the context for the stream that stays.
            async with subscribe(server.base_url, path) as (response, _):
                assert response.status_code == 200
            got = await rest(stream)
    finally:
        server.stop()
    assert [(e["event"], e["data"]["version"]) for e in got] == [("expired", 1)]
