"""examples/fastmcp_notes.py: one FastMCP server in two processes, its state in fastctx."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from fastmcp import Client

from fastctx import AsyncClient
from fastctx.integrations.fastmcp import FastctxStore
from support.pool import ServerPool

pytestmark = pytest.mark.anyio

LEGACY = "2025-11-25"  # the revision with sessions and resumable streams


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


def sse_events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
        if "id" in fields:
            events.append(fields)
    return events


async def rpc(
    mcp: httpx.AsyncClient,
    method: str,
    params: dict[str, Any],
    id: int | None = None,
    **headers: str,
) -> httpx.Response:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        message["id"] = id
    return await mcp.post("/mcp", json=message, headers=headers)


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
            hello = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t"}}
            r = await rpc(mcp, "initialize", hello, id=1)
            assert r.status_code == 200, r.text
            session = {"Mcp-Session-Id": r.headers["mcp-session-id"]}
            session["Mcp-Protocol-Version"] = LEGACY
            await rpc(mcp, "notifications/initialized", {}, **session)
            call = {"name": "create_session", "arguments": {}}
            events = sse_events((await rpc(mcp, "tools/call", call, id=2, **session)).text)
            priming, answer = events[0], events[-1]
            assert priming.get("data", "") == ""
            assert json.loads(answer["data"])["id"] == 2

            # The events are in fastctx, under FastMCP's collection of them.
            assert await store.get(priming["id"], collection="fastmcp_events") is not None

            # A client that lost the stream after the priming event gets the rest again.
            resume = {**session, "Last-Event-ID": priming["id"]}
            text = ""
            with anyio.fail_after(10):
                async with mcp.stream("GET", "/mcp", headers=resume) as resumed:
                    assert resumed.status_code == 200
                    async for chunk in resumed.aiter_text():
                        text += chunk
                        if any(e["id"] == answer["id"] for e in sse_events(text)):
                            break
            replayed = [e for e in sse_events(text) if e.get("data")]
            assert replayed[0]["id"] == answer["id"]
            assert json.loads(replayed[0]["data"]) == json.loads(answer["data"])
