"""examples/fastmcp_notes.py: one FastMCP server in two processes, its state in fastctx."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from fastmcp import Client
from wire import open_session, resume, rpc, sse_events

from fastctx import AsyncClient
from fastctx.integrations.fastmcp import FastctxStore
from support.pool import ServerPool

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def call(url: str, tool: str, **arguments: Any) -> Any:
    async with Client(f"{url}/mcp") as client:
        result = await client.call_tool(tool, arguments)
        return result.data


async def test_state_written_through_one_process_is_read_through_the_other(
    server_pool: ServerPool, run_example: Any
) -> None:
    fastctx_url = server_pool.granian("redis").base_url
    async with AsyncClient(fastctx_url) as fc:
        token = await FastctxStore.create(fc)
    env = {"FASTCTX_URL": fastctx_url, "FASTCTX_STORE": token}
    one, other = run_example("fastmcp_notes.py", **env), run_example("fastmcp_notes.py", **env)

    session = await call(one.url, "create_session")
    assert await call(one.url, "remember", session_id=session, note="first") == ["first"]
    assert await call(other.url, "remember", session_id=session, note="second") == [
        "first",
        "second",
    ]
    assert await call(one.url, "recall", session_id=session) == ["first", "second"]
    assert await call(other.url, "recall", session_id=session) == ["first", "second"]
    assert f"store {token}" in one.output()


async def test_a_stream_resumes_from_the_events_kept_in_fastctx(
    server_pool: ServerPool, run_example: Any
) -> None:
    fastctx_url = server_pool.granian("redis").base_url
    async with AsyncClient(fastctx_url) as fc:
        token = await FastctxStore.create(fc, buckets=2)
        store = FastctxStore(fc, token)
        server = run_example("fastmcp_notes.py", FASTCTX_URL=fastctx_url, FASTCTX_STORE=token)
        accept = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient(base_url=server.url, headers=accept) as mcp:
            session = await open_session(mcp)
            call = {"name": "create_session", "arguments": {}}
            events = sse_events((await rpc(mcp, "tools/call", call, id=2, **session)).text)
            priming, answer = events[0], events[-1]
            assert priming.get("data", "") == ""
            assert json.loads(answer["data"])["id"] == 2

            # The events are in fastctx, under FastMCP's collection of them.
            assert await store.get(priming["id"], collection="fastmcp_events") is not None

            # A client that lost the stream after the priming event gets the rest again.
            with anyio.fail_after(10):
                text = await resume(mcp, session, priming["id"], answer["id"])
            replayed = [e for e in sse_events(text) if e.get("data")]
            assert replayed[0]["id"] == answer["id"]
            assert json.loads(replayed[0]["data"]) == json.loads(answer["data"])
