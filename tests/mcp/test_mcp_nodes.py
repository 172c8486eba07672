"""MCP sessions live in Redis: a session opened through one node continues through another."""

from __future__ import annotations

import json
from typing import Any

import httpx
from mcp_wire import BASE

from support.servers import GranianServer

VERSION = "2025-06-18"


def _rpc(
    client: httpx.Client, session: str | None, method: str, params: dict[str, Any] | None = None
) -> httpx.Response:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    headers = dict(BASE)
    if session is not None:
        headers.update({"Mcp-Session-Id": session, "MCP-Protocol-Version": VERSION})
    return client.post("/mcp", content=body, headers=headers)


def test_a_session_from_node_a_continues_on_b_and_ends_everywhere(
    shared_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a_server, b_server = shared_nodes
    with (
        httpx.Client(base_url=a_server.base_url) as a,
        httpx.Client(base_url=b_server.base_url) as b,
    ):
        r = _rpc(a, None, "initialize", {"protocolVersion": VERSION, "capabilities": {}})
        assert r.json()["result"]["protocolVersion"] == VERSION
        session = r.headers["mcp-session-id"]

        arguments = {"name": "context_create", "arguments": {"data": 1}}
        created = _rpc(b, session, "tools/call", arguments)
        result = created.json()["result"]
        token = result["structuredContent"]["token"]
        assert "resultType" not in result  # 2026-07-28's member, not the session era's
        read = _rpc(a, session, "resources/read", {"uri": f"ctx://{token}"})
        assert read.json()["result"]["contents"][0]["text"] == "1"

        headers = {**BASE, "Mcp-Session-Id": session, "MCP-Protocol-Version": VERSION}
        assert b.delete("/mcp", headers=headers).status_code == 204
        assert _rpc(a, session, "ping").status_code == 404
        assert a.delete("/mcp", headers=headers).status_code == 404
