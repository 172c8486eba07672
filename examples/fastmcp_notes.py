"""A FastMCP server whose state and stream history live in fastctx, so that any number of its
processes serve any client with no sticky routing.

    FASTCTX_URL=http://127.0.0.1:8000 FASTCTX_STORE=<token> \
        .venv/bin/python examples/fastmcp_notes.py --port 9000

FASTCTX_STORE is the token of a store made once, with
`await FastctxStore.create(AsyncClient(url))`; without it, this program makes one and prints
its token, for the next processes to be given. FASTCTX_API_KEY, when set, is sent to fastctx.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import uvicorn
from fastmcp import FastMCP
from fastmcp.server.dependencies import get_session
from fastmcp.server.event_store import EventStore
from fastmcp.server.sessions import SessionId, SessionProvider

from fastctx import AsyncClient
from fastctx.integrations.fastmcp import FastctxStore


def notes_server(store: FastctxStore) -> FastMCP:
    mcp = FastMCP("notes", session_state_store=store)
    mcp.add_provider(SessionProvider())  # the create_session and end_session tools

    @mcp.tool
    async def remember(session_id: SessionId, note: str) -> list[str]:
        """Keep a note in the session; returns all of its notes."""
        session = await get_session(session_id)
        notes = [*(await session.get("notes", [])), note]
        await session.set("notes", notes)
        return notes

    @mcp.tool
    async def recall(session_id: SessionId) -> list[str]:
        """The session's notes, whichever process kept them."""
        session = await get_session(session_id)
        notes: list[str] = await session.get("notes", [])
        return notes

    return mcp


async def serve(port: int) -> None:
    client = AsyncClient(os.environ["FASTCTX_URL"], os.environ.get("FASTCTX_API_KEY"))
    token = os.environ.get("FASTCTX_STORE") or await FastctxStore.create(client)
    print(f"store {token}", flush=True)
    store = FastctxStore(client, token)
    mcp = notes_server(store)
    # Events of resumable streams go to the same store: a client that lost its stream picks
    # it up again with Last-Event-ID, from what fastctx kept.
    app = mcp.http_app(event_store=EventStore(storage=store), retry_interval=1000)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    try:
        await uvicorn.Server(config).serve()
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    asyncio.run(serve(parser.parse_args().port))
