"""fastctx.AsyncClient against real granian servers (memory and Redis backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from test_client_sync import requests_seen

from fastctx import (
    AsyncClient,
    BadRequest,
    Event,
    InvalidPatch,
    NotFound,
    PathNotFound,
    Unauthorized,
    Unavailable,
    VersionConflict,
    VersionGone,
)
from fastctx.errors import BackendError
from support.pool import ServerPool
from support.ports import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
def base_url(server_pool: ServerPool, request: pytest.FixtureRequest) -> str:
    return server_pool.granian(request.param).base_url


@pytest.fixture
async def fc(base_url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url) as client:
        yield client


async def first_event(stream: AsyncIterator[Event], action: Callable[[], Awaitable[Any]]) -> Event:
    """The next event of `stream`, once `action` has run while the stream listens."""
    async with anyio.create_task_group() as tg:

        async def act() -> None:
            await anyio.sleep(0.3)  # let the stream connect before the change it waits for
            await action()

        tg.start_soon(act)
        with anyio.fail_after(10):
            event = await anext(stream)
    return event


async def test_create_get_put_patch_delete(fc: AsyncClient) -> None:
    token = await fc.create({"order": 42}, ttl=60)
    assert await fc.get(token) == {"order": 42}
    assert await fc.put(token, {"order": 43}) == 2
    assert await fc.patch(token, {"paid": True}, if_version=2) == 3
    assert await fc.get(token) == {"order": 43, "paid": True}
    await fc.delete(token)
    with pytest.raises(NotFound):
        await fc.get(token)


async def test_json_patch(fc: AsyncClient) -> None:
    token = await fc.create({"a": 1})
    assert await fc.json_patch(token, [{"op": "replace", "path": "/a", "value": None}]) == 2
    assert await fc.get(token) == {"a": None}
    with pytest.raises(InvalidPatch):
        await fc.json_patch(token, [{"op": "remove", "path": "/missing"}])
    with pytest.raises(VersionConflict):
        await fc.json_patch(token, [], if_version=1)
    assert await fc.get(token) == {"a": None}


async def test_mget_and_sessions(fc: AsyncClient, base_url: str) -> None:
    session = await fc.create_session(ttl=60, meta={"user": "ada"})
    first = await fc.create({"n": 1}, session=session)
    assert await fc.mget([first, "0" * 22]) == [{"n": 1}, None]
    async with httpx.AsyncClient() as raw:
        body = (await raw.get(f"{base_url}/v1/sessions/{session}")).json()
    assert body["contexts"] == [first]


async def test_partial_reads_and_appends(fc: AsyncClient) -> None:
    token = await fc.create({"chat": {"messages": []}})
    assert await fc.append(token, "/chat/messages", "a", {"b": 2}) == 2
    assert await fc.append(token, "/chat/tags", "new", if_version=2) == 3
    assert await fc.get(token, "/chat/messages/1") == {"b": 2}
    assert await fc.get(token, "/chat/messages", "-1:") == [{"b": 2}]
    assert await fc.get(token, "/chat/messages", slice(0, 1)) == ["a"]
    with pytest.raises(PathNotFound):
        await fc.get(token, "/chat/nothing")
    with pytest.raises(VersionConflict):
        await fc.append(token, "/chat/tags", "late", if_version=2)
    with pytest.raises(InvalidPatch):
        await fc.append(token, "/chat", 1)
    other = await fc.create({"chat": None})
    items = await fc.mget([token, other, "0" * 22], "/chat/tags", slice(-1, None))
    assert items[0] == ["new"]
    assert isinstance(items[1], PathNotFound)
    assert items[2] is None
    with pytest.raises(BadRequest):
        await fc.mget([token], "chat")


async def test_earlier_versions(fc: AsyncClient) -> None:
    token = await fc.create({"messages": []})
    for n in range(3):
        await fc.append(token, "/messages", {"n": n})
    assert await fc.get(token, version=2) == {"messages": [{"n": 0}]}
    assert await fc.get(token, path="/messages", slice="-1:", version=3) == [{"n": 1}]
    await fc.put(token, {"messages": []})
    with pytest.raises(VersionGone):
        await fc.get(token, version=2)
    assert await fc.get(token) == {"messages": []}


async def test_typed_errors(fc: AsyncClient, server_pool: ServerPool) -> None:
    token = await fc.create({"a": 1})
    with pytest.raises(VersionConflict):
        await fc.put(token, {"a": 2}, if_version=9)
    with pytest.raises(VersionConflict):
        await fc.patch(token, {"a": 2}, if_version=9)
    with pytest.raises(NotFound):
        await fc.delete("0" * 22)
    tenants = server_pool.granian("memory", "tenants").base_url
    async with AsyncClient(tenants) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.get(token)
    async with AsyncClient(tenants, "key-acme") as acme:
        assert await acme.get(await acme.create([1])) == [1]


async def test_unavailable(server_pool: ServerPool) -> None:
    async with AsyncClient(server_pool.granian("down", "down").base_url, retries=0) as down:
        with pytest.raises(BackendError) as caught:
            await down.create({})
        assert caught.value.retry_after >= 1
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=1) as nowhere:
        with pytest.raises(Unavailable, match="cannot reach"):
            await nowhere.get("0" * 22)


async def test_only_idempotent_calls_are_retried(server_pool: ServerPool) -> None:
    """Against a real server whose Redis is down: PUT is sent twice (one retry), PATCH once."""
    url = server_pool.granian("down", "down").base_url
    token = "0" * 22
    async with AsyncClient(url, retries=1) as client:
        before = requests_seen(url, "/v1/contexts/{token}", "PUT")
        with pytest.raises(Unavailable):
            await client.put(token, {})
        assert requests_seen(url, "/v1/contexts/{token}", "PUT") - before == 2
        before = requests_seen(url, "/v1/contexts/{token}", "PATCH")
        with pytest.raises(Unavailable):
            await client.patch(token, {})
        assert requests_seen(url, "/v1/contexts/{token}", "PATCH") - before == 1
        before = requests_seen(url, "/v1/contexts/{token}/append", "POST")
        with pytest.raises(Unavailable):
            await client.append(token, "/log", 1)
        assert requests_seen(url, "/v1/contexts/{token}/append", "POST") - before == 1


async def test_events_receive_a_change(fc: AsyncClient) -> None:
    token = await fc.create({"step": 1})
    async with fc.events(token=token, include_data=True) as stream:
        event = await first_event(stream, lambda: fc.patch(token, {"step": 2}))
    assert (event.type, event.token, event.version, event.data) == (
        "updated",
        token,
        2,
        {"step": 2},
    )


async def test_events_resume_after_a_dropped_connection(fc: AsyncClient) -> None:
    token = await fc.create({"n": 0})
    stream = fc.events(token=token)
    assert (await first_event(stream, lambda: fc.put(token, {"n": 1}))).version == 2
    assert stream.response is not None
    await stream.response.aclose()  # the connection drops; nobody listens to these writes
    await fc.put(token, {"n": 2})
    await fc.put(token, {"n": 3})
    await fc.delete(token)
    with anyio.fail_after(10):
        rest = [(e.type, e.version) async for e in stream]
    assert rest == [("updated", 3), ("updated", 4), ("deleted", 4)]


async def test_session_events(fc: AsyncClient) -> None:
    session = await fc.create_session()
    tokens: list[str] = []

    async def create() -> None:
        tokens.append(await fc.create({"x": 1}, session=session))

    async with fc.events(session=session) as stream:
        event = await first_event(stream, create)
    assert (event.session, [event.token]) == (session, tokens)
