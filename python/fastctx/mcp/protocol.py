"""The MCP methods fastctx answers, and how each protocol era shapes their results."""

from __future__ import annotations

from typing import Any

import msgspec

from fastctx import __version__
from fastctx.errors import NotFound
from fastctx.mcp.jsonrpc import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    RESOURCE_NOT_FOUND,
    Era,
    RpcError,
)
from fastctx.mcp.tools import RESOURCE_TEMPLATES, TOOLS, Tools

# Revisions reached by the initialize handshake (sessions), and the per-request revision.
HANDSHAKE_VERSIONS = ("2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
SUPPORTED_VERSIONS = HANDSHAKE_VERSIONS + MODERN_VERSIONS
LATEST_HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]
# From this revision on, a session's event streams open with a priming event (an id and
# empty data); a client of an earlier one would try to read that empty data as a message.
PRIMING_VERSION = "2025-11-25"

# 2026-07-28 puts the envelope in params._meta under these keys.
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"

SERVER_INFO = {"name": "fastctx", "title": "fastctx context server", "version": __version__}
# ctx:// resources are subscribable (fastctx.mcp.notifications); the lists never change.
CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": False},
    "resources": {"subscribe": True, "listChanged": False},
}
INSTRUCTIONS = (
    "fastctx stores JSON contexts under short tokens. Create a context once, pass its token "
    "around, read it with context_get or as the resource ctx://{token}."
)
# Lists that are the same for every caller of this server version (2026-07-28 caching hints).
_LIST_TTL_MS = 60_000


class SessionRecord(msgspec.Struct):
    """What the session era remembers between requests, kept in the backend."""

    version: str
    created_at: int
    client_info: Any = None
    capabilities: Any = None
    subscribed: bool = False  # it has subscribed to a resource at least once


def _params(params: Any) -> dict[str, Any]:
    if params is msgspec.UNSET or params is None:
        return {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "params must be an object")
    return params


def _string(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str):
        raise RpcError(INVALID_PARAMS, f"params.{name} must be a string")
    return value


class Methods:
    """Answers one request's method for a tenant, in the shape its era expects."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools

    def initialize(self, params: Any) -> tuple[str, dict[str, Any]]:
        """The negotiated version and the InitializeResult for an initialize request."""
        given = _params(params)
        requested = given.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(INVALID_PARAMS, "params.protocolVersion must be a string")
        # A version we do not speak is answered with the newest we do; the client decides.
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE_VERSION
        return version, {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        }

    async def call(
        self, tenant: str, method: str, params: Any, era: Era
    ) -> dict[str, Any] | msgspec.Raw:
        given = _params(params)
        if method == "tools/call":
            return await self.tools.call(tenant, given.get("name"), given.get("arguments"), era)
        if method == "tools/list":
            return _listed({"tools": TOOLS}, given, era)
        if method == "resources/list":
            # Tokens are capabilities: a client learns one from a tool, never from a listing.
            return _listed({"resources": []}, given, era)
        if method == "resources/templates/list":
            return _listed({"resourceTemplates": RESOURCE_TEMPLATES}, given, era)
        if method == "resources/read":
            return await self._read(tenant, _string(given, "uri"), era)
        if method == "ping" and era == "session":
            return {}
        if method == "server/discover" and era == "modern":
            return {
                "supportedVersions": list(SUPPORTED_VERSIONS),
                "capabilities": CAPABILITIES,
                "instructions": INSTRUCTIONS,
                "resultType": "complete",
                "cacheScope": "public",
                "ttlMs": _LIST_TTL_MS,
                "_meta": {META_SERVER_INFO: SERVER_INFO},
            }
        raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")

    async def _read(self, tenant: str, uri: str, era: Era) -> dict[str, Any]:
        try:
            payload, _ = await self.tools.read(tenant, uri)
        except NotFound:
            # 2026-07-28 retired -32002; invalid params is what it uses for an unknown resource.
            code = RESOURCE_NOT_FOUND if era == "session" else INVALID_PARAMS
            raise RpcError(code, f"resource not found: {uri}", {"uri": uri}) from None
        contents = [{"uri": uri, "mimeType": "application/json", "text": payload.decode()}]
        result: dict[str, Any] = {"contents": contents}
        if era == "modern":
            # A context changes under the same URI: never cache it.
            result.update(resultType="complete", cacheScope="private", ttlMs=0)
        return result


def _listed(result: dict[str, Any], params: dict[str, Any], era: Era) -> dict[str, Any]:
    """One whole list: every list fits on one page, so no `nextCursor` is ever handed out,
    and a cursor a client sends can only be invalid (-32602, as pagination says)."""
    if params.get("cursor") is not None:
        raise RpcError(INVALID_PARAMS, "invalid cursor: this list has one page and no cursors")
    if era == "modern":
        result.update(resultType="complete", cacheScope="public", ttlMs=_LIST_TTL_MS)
    return result
