"""MCP peer: the official SDK's MCPServer with a context_get tool over redis-py, on granian.

Configured as the SDK's README recommends for production: `stateless_http=True` and
`json_response=True`; a 2026-07-28 request is then answered in the ASGI task itself.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import redis.asyncio as redis
from mcp.server import MCPServer
from starlette.requests import Request
from starlette.responses import PlainTextResponse

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")

# One pool for the process: the server lifespan would run once per stateless request.
store = redis.Redis.from_url(REDIS_URL)
mcp = MCPServer("peer-mcp-sdk", log_level="WARNING")


@mcp.tool()
async def context_get(token: str) -> dict[str, Any]:
    """Read a context by its token."""
    stored = await store.get(f"ctx:{token}")
    if stored is None:
        raise ValueError(f"no such context: {token}")
    return {"token": token, "version": 1, "data": orjson.loads(stored)}


@mcp.custom_route("/healthz", methods=["GET"])
async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = mcp.streamable_http_app(json_response=True, stateless_http=True)
