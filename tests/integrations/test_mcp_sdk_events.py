"""fastctx.integrations.mcp_sdk: the SDK's EventStore against real servers, and an SDK server
(examples/mcp_sdk_notes.py) whose streams resume from it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification, JSONRPCResponse
from wire import open_session, resume, rpc, sse_events

from fastctx import AsyncClient
from fastctx.integrations.mcp_sdk import EventStore
from support.pool import ServerPool

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
async def fc(server_pool: ServerPool, request: pytest.FixtureRequest) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server_pool.granian(request.param).base_url) as client:
        yield client


def note(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"n": n})


async def replay(store: Any, after: str) -> tuple[str | None, list[EventMessage]]:
    sent: list[EventMessage] = []

    async def send(event: EventMessage) -> None:
        sent.append(event)

    return await store.replay_events_after(after, send), sent


async def test_a_stream_is_replayed_from_any_event_it_keeps(fc: AsyncClient) -> None:
    store = EventStore(fc)
    priming = await store.store_event("1", None)
    ids = [await store.store_event("1", note(n)) for n in range(5)]
    answer = JSONRPCResponse(jsonrpc="2.0", id=1, result={"done": True})
    ids.append(await store.store_event("1", answer))
    assert len(set(ids)) == 6

    stream, sent = await replay(store, priming)
    assert stream == "1"
    assert [event.event_id for event in sent] == ids  # the priming event itself carries nothing
    assert sent[-1].message == answer
    assert [event.message for event in sent[:5]] == [note(n) for n in range(5)]

    # From another process's store (nothing held in memory), from the middle.
    async with AsyncClient(fc.base_url) as other:
        stream, sent = await replay(EventStore(other), ids[2])
    assert stream == "1"
    assert [event.event_id for event in sent] == ids[3:]


async def test_unknown_and_malformed_ids_replay_nothing(fc: AsyncClient) -> None:
    store = EventStore(fc)
    await store.store_event("s", note(0))
    for last in ["", "nonsense", "0" * 22 + ".1", "x.y.z", "0" * 22 + ".-1"]:
        assert await replay(store, last) == (None, [])
    plain = await fc.create({"not": "a stream"})
    assert await replay(store, f"{plain}.0") == (None, [])


async def test_retention_is_bounded_and_a_trimmed_event_replays_nothing(
    fc: AsyncClient,
) -> None:
    store = EventStore(fc, max_events=20, trim_every=10, ttl=60)
    ids = [await store.store_event("long", note(n)) for n in range(95)]
    token = ids[0].split(".")[0]
    kept = (await fc.get(token))["events"]
    assert 20 <= len(kept) <= 30
    assert kept[-1]["n"] == 94
    assert await replay(store, ids[0]) == (None, [])  # trimmed: the client must start over
    stream, sent = await replay(store, ids[90])
    assert stream == "long"
    assert [event.event_id for event in sent] == ids[91:]
    held = (await fc.http.get(f"/v1/contexts/{token}/meta")).json()
    lifetime = datetime.fromisoformat(held["expires_at"]) - datetime.fromisoformat(
        held["created_at"]
    )
    assert lifetime.total_seconds() == pytest.approx(60, abs=1)  # the store's ttl


async def test_concurrent_events_of_one_stream_get_one_context_and_keep_their_order(
    fc: AsyncClient,
) -> None:
    store = EventStore(fc)
    ids = await asyncio.gather(*(store.store_event("busy", note(n)) for n in range(40)))
    assert len({event_id.split(".")[0] for event_id in ids}) == 1
    first = await store.store_event("busy", note(40))
    _, sent = await replay(store, ids[0])
    assert [event.event_id for event in sent] == [*ids[1:], first]


async def test_sessions_streams_are_kept_apart(fc: AsyncClient) -> None:
    """Two sessions' streams of the same id (the id of a request, "1" in both)."""
    store = EventStore(fc)
    one, other = store.scoped(), store.scoped()
    first = await one.store_event("1", None)
    await other.store_event("1", None)
    await one.store_event("1", note(1))
    foreign = await other.store_event("1", note(2))
    stream, sent = await replay(one, first)
    assert stream == "1"
    assert [event.message for event in sent] == [note(1)]
    assert await replay(one, foreign) == (None, [])  # another session's event


async def test_an_sdk_server_resumes_a_broken_stream(
    server_pool: ServerPool, run_example: Any
) -> None:
    fastctx_url = server_pool.granian("redis").base_url
    server = run_example("mcp_sdk_notes.py", FASTCTX_URL=fastctx_url)
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=server.url, headers=accept) as mcp:

        async def count(session: dict[str, str], to: int) -> list[dict[str, str]]:
            call = {"name": "count", "arguments": {"to": to}, "_meta": {"progressToken": "p"}}
            return sse_events((await rpc(mcp, "tools/call", call, id=2, **session)).text)

        one, other = await open_session(mcp), await open_session(mcp)
        # Both sessions' streams answer request 2 at once: the same stream id in each.
        events, foreign = await asyncio.gather(count(one, 3), count(other, 4))
        assert json.loads(events[-1]["data"])["result"]["content"][0]["text"] == "counted to 3"

        # The client lost the stream after the first progress notification.
        with anyio.fail_after(10):
            text = await resume(mcp, one, events[1]["id"], events[-1]["id"])
        replayed = [e for e in sse_events(text) if e.get("data")]
        assert [e["id"] for e in replayed] == [e["id"] for e in events[2:]]
        assert [json.loads(e["data"]) for e in replayed] == [
            json.loads(e["data"]) for e in events[2:]
        ]

        # Another session's event id resumes nothing of it in this one.
        with anyio.fail_after(10):
            stolen = await mcp.get("/mcp", headers={**one, "Last-Event-ID": foreign[1]["id"]})
        assert foreign[-1]["data"] not in stolen.text
