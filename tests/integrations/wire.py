"""Streamable HTTP by hand, for the tests that break and resume streams on purpose."""

from __future__ import annotations

from typing import Any

import httpx

LEGACY = "2025-11-25"  # the revision with sessions and resumable streams


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of an SSE body that carry an id, each as its fields."""
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


async def open_session(mcp: httpx.AsyncClient) -> dict[str, str]:
    """initialize and notifications/initialized; the headers of the session's requests."""
    hello = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t"}}
    r = await rpc(mcp, "initialize", hello, id=1)
    assert r.status_code == 200, r.text
    session = {"Mcp-Session-Id": r.headers["mcp-session-id"], "Mcp-Protocol-Version": LEGACY}
    await rpc(mcp, "notifications/initialized", {}, **session)
    return session


async def resume(mcp: httpx.AsyncClient, session: dict[str, str], after: str, until: str) -> str:
    """GET the stream again from just after event `after`, until event `until` has come."""
    text = ""
    headers = {**session, "Last-Event-ID": after}
    async with mcp.stream("GET", "/mcp", headers=headers) as resumed:
        assert resumed.status_code == 200
        async for chunk in resumed.aiter_text():
            text += chunk
            if any(event["id"] == until for event in sse_events(text)):
                break
    return text
