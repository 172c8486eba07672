"""What the hand-written /mcp tests send: headers, the 2026-07-28 envelope, JSON-RPC bodies."""

from __future__ import annotations

import json
from typing import Any

from support.mcp_calls import ACCEPT, ENVELOPE, MODERN

__all__ = [
    "ACCEPT",
    "BASE",
    "ENVELOPE",
    "LEGACY",
    "MODERN",
    "UNKNOWN",
    "in_session",
    "modern",
    "rpc",
]

BASE = {"Content-Type": "application/json", "Accept": ACCEPT}
LEGACY = "2025-11-25"
# Shaped like a session id and a token, and neither.
UNKNOWN = "0AbCdEfGhIjKlMnOpQrStU"


def rpc(method: str, params: dict[str, Any] | None = None, id: int | None = 1) -> bytes:
    """A JSON-RPC request (a notification with `id=None`); no params member unless given."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return json.dumps(message).encode()


def in_session(session: str, version: str = LEGACY) -> dict[str, str]:
    return {**BASE, "Mcp-Session-Id": session, "MCP-Protocol-Version": version}


def modern(method: str, name: str | None = None) -> dict[str, str]:
    """The headers of a 2026-07-28 request, routing headers included."""
    headers = {**BASE, "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers
