"""The MCP tools and the ctx:// resource template, over the Registry and the Session Manager."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec

from fastctx import _core
from fastctx.clock import rfc3339
from fastctx.errors import NotFound, PayloadTooLarge, VersionConflict
from fastctx.mcp.jsonrpc import INVALID_PARAMS, Era, RpcError
from fastctx.registry import MAX_TTL_SECONDS, Registry
from fastctx.sessions import SessionManager

Ttl = Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_SECONDS)]
RESOURCE_SCHEME = "ctx://"
_TOKEN = {"type": "string", "description": "a context token (22 characters, [0-9A-Za-z])"}
# 2026-07-28 clients mirror the ttl into an Mcp-Param-Ttl header (the x-mcp-header
# annotation), so that a gateway can apply a retention policy without reading bodies.
_TTL = {
    "type": "integer",
    "minimum": 1,
    "maximum": MAX_TTL_SECONDS,
    "description": "seconds",
    "x-mcp-header": "Ttl",
}
_SESSION = {"type": "string", "description": "a session id"}
_TIME = {"type": "string", "format": "date-time"}


class ContextCreate(msgspec.Struct, forbid_unknown_fields=True):
    data: Any
    ttl: Ttl | None = None
    session: str | None = None


class ContextGet(msgspec.Struct, forbid_unknown_fields=True):
    token: str


class ContextUpdate(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    patch: Any
    if_version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class SessionCreate(msgspec.Struct, forbid_unknown_fields=True):
    ttl: Ttl | None = None
    meta: dict[str, Any] | None = None


class SessionGet(msgspec.Struct, forbid_unknown_fields=True):
    session: str


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


TOOLS: list[dict[str, Any]] = [
    {
        "name": "context_create",
        "description": "Store a JSON document as a new context; returns its token.",
        "inputSchema": _object(
            {
                "data": {"description": "the context: any JSON value"},
                "ttl": _TTL,
                "session": _SESSION,
            },
            ["data"],
        ),
        "outputSchema": _object(
            {"token": _TOKEN, "version": {"type": "integer"}, "expires_at": _TIME},
            ["token", "version", "expires_at"],
        ),
    },
    {
        "name": "context_get",
        "description": "Read a context by its token.",
        "inputSchema": _object({"token": _TOKEN}, ["token"]),
        "outputSchema": _object(
            {"token": _TOKEN, "version": {"type": "integer"}, "data": {}},
            ["token", "version", "data"],
        ),
    },
    {
        "name": "context_update",
        "description": "Change a context with a JSON merge patch (RFC 7386); with if_version, "
        "only if the context is still at that version.",
        "inputSchema": _object(
            {
                "token": _TOKEN,
                "patch": {"description": "an RFC 7386 merge patch"},
                "if_version": {"type": "integer", "minimum": 1},
            },
            ["token", "patch"],
        ),
        "outputSchema": _object(
            {"token": _TOKEN, "version": {"type": "integer"}}, ["token", "version"]
        ),
    },
    {
        "name": "context_delete",
        "description": "Delete a context.",
        "inputSchema": _object({"token": _TOKEN}, ["token"]),
        "outputSchema": _object({"deleted": {"type": "boolean"}}, ["deleted"]),
    },
    {
        "name": "session_create",
        "description": "Start a session that groups contexts; deleting it deletes them.",
        "inputSchema": _object({"ttl": _TTL, "meta": {"type": "object"}}, []),
        "outputSchema": _object(
            {"session": _SESSION, "expires_at": _TIME}, ["session", "expires_at"]
        ),
    },
    {
        "name": "session_get",
        "description": "A session: its expiry, meta and the tokens of its contexts.",
        "inputSchema": _object({"session": _SESSION}, ["session"]),
        "outputSchema": _object(
            {
                "session": _SESSION,
                "created_at": _TIME,
                "expires_at": _TIME,
                "meta": {"type": "object"},
                "contexts": {"type": "array", "items": _TOKEN},
            },
            ["session", "created_at", "expires_at", "meta", "contexts"],
        ),
    },
]


def _param_headers(schema: dict[str, Any]) -> dict[bytes, tuple[str, str]]:
    return {
        b"mcp-param-" + spec["x-mcp-header"].lower().encode(): (name, spec["type"])
        for name, spec in schema["properties"].items()
        if "x-mcp-header" in spec
    }


PARAM_HEADERS: dict[str, dict[bytes, tuple[str, str]]] = {
    tool["name"]: _param_headers(tool["inputSchema"]) for tool in TOOLS
}
"""By tool: the Mcp-Param-* headers its arguments are mirrored into (lowercase), each with
the argument it mirrors and that argument's JSON type."""

RESOURCE_TEMPLATES: list[dict[str, Any]] = [
    {
        "uriTemplate": RESOURCE_SCHEME + "{token}",
        "name": "context",
        "title": "A fastctx context",
        "description": "The JSON document stored under a context token.",
        "mimeType": "application/json",
    }
]


_RESULT = b'{"content":[{"type":"text","text":%s}],"structuredContent":%s,"isError":false%s}'
_MODERN_RESULT = b',"resultType":"complete"'


def tool_result(structured: bytes, era: Era) -> msgspec.Raw:
    """A tool's success: the JSON as structuredContent and, for older clients, as text.

    Spliced rather than encoded from a dict: the document is encoded once, as the text.
    """
    text = msgspec.json.encode(structured.decode())
    return msgspec.Raw(_RESULT % (text, structured, _MODERN_RESULT if era == "modern" else b""))


def tool_error(message: str, era: Era) -> dict[str, Any]:
    result = {"content": [{"type": "text", "text": message}], "isError": True}
    if era == "modern":
        result["resultType"] = "complete"
    return result


class Tools:
    """Runs the tools within one tenant; the caller has resolved it from the API key."""

    def __init__(self, registry: Registry, sessions: SessionManager) -> None:
        self.registry = registry
        self.sessions = sessions
        self._tools: dict[str, tuple[type[Any], Callable[[str, Any], Awaitable[bytes]]]] = {
            "context_create": (ContextCreate, self._context_create),
            "context_get": (ContextGet, self._context_get),
            "context_update": (ContextUpdate, self._context_update),
            "context_delete": (ContextGet, self._context_delete),
            "session_create": (SessionCreate, self._session_create),
            "session_get": (SessionGet, self._session_get),
        }

    async def call(
        self, tenant: str, name: Any, arguments: Any, era: Era
    ) -> dict[str, Any] | msgspec.Raw:
        """The CallToolResult; failures the model can act on are results with isError."""
        if not isinstance(name, str) or name not in self._tools:
            raise RpcError(INVALID_PARAMS, f"unknown tool: {name!r}")
        kind, run = self._tools[name]
        try:
            args = msgspec.convert(arguments or {}, kind)
        except msgspec.ValidationError as exc:
            return tool_error(f"invalid arguments for {name}: {exc}", era)
        try:
            return tool_result(await run(tenant, args), era)
        except NotFound as exc:
            return tool_error(f"not found: {exc.detail}", era)
        except VersionConflict as exc:
            return tool_error(f"version conflict: {exc.detail}", era)
        except PayloadTooLarge as exc:
            return tool_error(f"too large: {exc.detail}", era)
        except (_core.JsonError, _core.PatchError, ValueError) as exc:
            return tool_error(f"{name} failed: {exc}", era)

    async def read(self, tenant: str, uri: str) -> tuple[bytes, int]:
        """The document and version behind a ctx:// URI; NotFound when there is none."""
        if not uri.startswith(RESOURCE_SCHEME):
            raise NotFound(f"not a {RESOURCE_SCHEME} URI")
        found = await self.registry.read(tenant, uri[len(RESOURCE_SCHEME) :])
        return found.payload, found.version

    async def _context_create(self, tenant: str, args: ContextCreate) -> bytes:
        document = msgspec.json.encode(args.data)
        created = await self.registry.create(tenant, document, args.ttl, args.session)
        return msgspec.json.encode(
            {
                "token": created.token,
                "version": created.version,
                "expires_at": rfc3339(created.expires_at),
            }
        )

    async def _context_get(self, tenant: str, args: ContextGet) -> bytes:
        found = await self.registry.read(tenant, args.token)
        # The stored bytes are spliced in as they are, as the REST mget does.
        return b'{"token":%s,"version":%d,"data":%s}' % (
            msgspec.json.encode(args.token),
            found.version,
            found.payload,
        )

    async def _context_update(self, tenant: str, args: ContextUpdate) -> bytes:
        patch = msgspec.json.encode(args.patch)
        version = await self.registry.patch(tenant, args.token, patch, "merge", args.if_version)
        return msgspec.json.encode({"token": args.token, "version": version})

    async def _context_delete(self, tenant: str, args: ContextGet) -> bytes:
        await self.registry.delete(tenant, args.token)
        return b'{"deleted":true}'

    async def _session_create(self, tenant: str, args: SessionCreate) -> bytes:
        meta = msgspec.json.encode(args.meta or {})
        session, expires_at = await self.sessions.create(tenant, args.ttl, meta)
        return msgspec.json.encode({"session": session, "expires_at": rfc3339(expires_at)})

    async def _session_get(self, tenant: str, args: SessionGet) -> bytes:
        view = await self.sessions.get(tenant, args.session)
        return msgspec.json.encode(
            {
                "session": view.session,
                "created_at": rfc3339(view.created_at),
                "expires_at": rfc3339(view.expires_at),
                "meta": msgspec.Raw(view.meta),
                "contexts": view.contexts,
            }
        )
