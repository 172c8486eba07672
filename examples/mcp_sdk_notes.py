"""An MCP SDK server whose streams' events are kept in fastctx: a client whose stream broke
picks it up again with Last-Event-ID and misses nothing.

    FASTCTX_URL=http://127.0.0.1:8000 .venv/bin/python examples/mcp_sdk_notes.py --port 9001

FASTCTX_API_KEY, when set, is sent to fastctx.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

from fastctx import AsyncClient
from fastctx.integrations.mcp_sdk import EventStore, streamable_http_app


def notes_server() -> MCPServer:
    mcp = MCPServer("notes")

    @mcp.tool()
    async def count(to: int, ctx: Context) -> str:
        """Count to `to`, one progress notification a step, then say so."""
        for n in range(1, to + 1):
            await ctx.report_progress(n, to, f"step {n}")
        return f"counted to {to}"

    return mcp


async def serve(port: int) -> None:
    client = AsyncClient(os.environ["FASTCTX_URL"], os.environ.get("FASTCTX_API_KEY"))
    # Each stream keeps its last 1000 events for an hour.
    events = EventStore(client, max_events=1000, ttl=3600)
    app = streamable_http_app(notes_server(), events)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    try:
        await uvicorn.Server(config).serve()
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    asyncio.run(serve(parser.parse_args().port))
