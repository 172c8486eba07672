"""MCP peer: FastMCP serving a context_get tool over redis-py (asyncio, hiredis), on granian.

Configured as FastMCP documents for scaled-out HTTP serving: JSON responses (no SSE stream per
POST) and stateless HTTP (no session to set up or look up); clients on 2026-07-28 need neither.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import redis.asyncio as redis
from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import PlainTextResponse

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")

# One pool for the process: a stateless server runs no per-session lifespan worth hooking.
store = redis.Redis.from_url(REDIS_URL)
mcp = FastMCP("peer-fastmcp")


@mcp.tool
async def context_get(token: str) -> dict[str, Any]:
    """Read a context by its token."""
    stored = await store.get(f"ctx:{token}")
    if stored is None:
        raise ValueError(f"no such context: {token}")
    return {"token": token, "version": 1, "data": orjson.loads(stored)}


@mcp.custom_route("/healthz", methods=["GET"])
async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = mcp.http_app(path="/mcp", json_response=True, stateless_http=True)
