"""The MCP tools and the ctx:// resource template, over the Registry and the Session Manager."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec

from fastctx import _core
from fastctx.asgi import shapes
from fastctx.asgi.selection import selection
from fastctx.clock import rfc3339
from fastctx.deltas import document_bytes
from fastctx.errors import (
    BadRequest,
    InvalidPatch,
    NotFound,
    PayloadTooLarge,
    StorageQuotaExceeded,
    VersionConflict,
)
from fastctx.mcp.jsonrpc import INVALID_PARAMS, Era, RpcError
from fastctx.registry import Registry
from fastctx.sessions import SessionManager

RESOURCE_SCHEME = "ctx://"
# 2026-07-28 clients mirror these arguments into Mcp-Param-* headers (the x-mcp-header
# annotation), so that a gateway can apply a retention policy without reading bodies.
MIRRORED = {"ttl": "Ttl"}
_SCHEMA_REFS = "#/$defs/{name}"
encode = msgspec.json.Encoder().encode

TokenArgument = Annotated[
    str, msgspec.Meta(description="a context token (22 characters, [0-9A-Za-z])")
]
SessionArgument = Annotated[str, msgspec.Meta(description="a session id")]


class ContextCreate(msgspec.Struct, forbid_unknown_fields=True):
    data: Annotated[Any, msgspec.Meta(description="the context: any JSON value")]
    ttl: shapes.Seconds = None
    session: SessionArgument | None = None

    def __post_init__(self) -> None:
        self.ttl = shapes.json_ttl(self.ttl)  # read as a session's ttl is


PathArgument = Annotated[
    str,
    msgspec.Meta(
        pattern=shapes.JSON_POINTER_PATTERN,
        description="a JSON Pointer (RFC 6901) into the document, as in /messages or"
        " /user/name: read only the value there",
    ),
]


class ContextGet(msgspec.Struct, forbid_unknown_fields=True):
    token: TokenArgument
    path: PathArgument | None = None
    slice: shapes.Slice | None = None


class ContextToken(msgspec.Struct, forbid_unknown_fields=True):
    token: TokenArgument


class ContextAppend(msgspec.Struct, forbid_unknown_fields=True):
    token: TokenArgument
    path: Annotated[
        PathArgument,
        msgspec.Meta(
            description="a JSON Pointer to the array to append to, as in /messages; created"
            " when nothing is there (its parent must exist)"
        ),
    ]
    items: Annotated[
        list[Any], msgspec.Meta(description="the values to append, in order: any JSON each")
    ]
    if_version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class ContextUpdate(msgspec.Struct, forbid_unknown_fields=True):
    token: TokenArgument
    patch: Annotated[Any, msgspec.Meta(description="an RFC 7386 merge patch")]
    if_version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class SessionGet(msgspec.Struct, forbid_unknown_fields=True):
    session: SessionArgument


class ContextRead(msgspec.Struct):
    token: shapes.Token
    version: shapes.Version
    data: Annotated[Any, msgspec.Meta(description="the stored document")]


class Deleted(msgspec.Struct):
    deleted: bool


def _schema(kind: Any) -> dict[str, Any]:
    """A tool's schema from its Struct: inline, with what it refers to under $defs."""
    (top,), defs = msgspec.json.schema_components([kind], ref_template=_SCHEMA_REFS)
    schema: dict[str, Any] = dict(defs.pop(top["$ref"].rpartition("/")[2]))
    schema.pop("title", None)
    schema.pop("description", None)
    if defs:
        schema["$defs"] = defs
    for name, header in MIRRORED.items():
        spec = schema.get("properties", {}).get(name)
        if spec is not None:
            # A mirrored argument needs a type of its own (clients drop the tool otherwise):
            # the one that is not null, since leaving the argument out is how it is not given.
            (given,) = [alt for alt in spec.get("anyOf", [spec]) if alt.get("type") != "null"]
            described = {"description": spec["description"]} if "description" in spec else {}
            schema["properties"][name] = {**described, **given, "x-mcp-header": header}
    return schema


# (name, description, arguments, structuredContent)
_TOOLS: list[tuple[str, str, type[Any], type[Any]]] = [
    (
        "context_create",
        "Store a JSON document as a new context; returns its token.",
        ContextCreate,
        shapes.Created,
    ),
    (
        "context_get",
        "Read a context by its token: the whole document, or with path the value at that JSON"
        " Pointer, and with slice only part of the array there (-20: for the last 20).",
        ContextGet,
        ContextRead,
    ),
    (
        "context_append",
        "Append items to the array at a JSON Pointer in a context (creating the array when"
        " nothing is there); with if_version, only if the context is still at that version.",
        ContextAppend,
        shapes.Written,
    ),
    (
        "context_update",
        "Change a context with a JSON merge patch (RFC 7386); with if_version, "
        "only if the context is still at that version.",
        ContextUpdate,
        shapes.Written,
    ),
    ("context_delete", "Delete a context.", ContextToken, Deleted),
    (
        "session_create",
        "Start a session that groups contexts; deleting it deletes them.",
        shapes.SessionCreate,
        shapes.SessionCreated,
    ),
    (
        "session_get",
        "A session: its expiry, meta and the tokens of its contexts.",
        SessionGet,
        shapes.Session,
    ),
]

TOOLS: list[dict[str, Any]] = [
    {
        "name": name,
        "description": description,
        "inputSchema": _schema(arguments),
        "outputSchema": _schema(result),
    }
    for name, description, arguments, result in _TOOLS
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
            "context_append": (ContextAppend, self._context_append),
            "context_update": (ContextUpdate, self._context_update),
            "context_delete": (ContextToken, self._context_delete),
            "session_create": (shapes.SessionCreate, self._session_create),
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
        except _core.PathNotFound as exc:
            return tool_error(f"not found: {exc}", era)
        except VersionConflict as exc:
            return tool_error(f"version conflict: {exc.detail}", era)
        except StorageQuotaExceeded as exc:
            return tool_error(f"storage quota exceeded: {exc.detail}", era)
        except PayloadTooLarge as exc:
            return tool_error(f"too large: {exc.detail}", era)
        except (BadRequest, InvalidPatch) as exc:
            return tool_error(f"{name} failed: {exc.detail}", era)
        except (_core.JsonError, _core.PatchError, ValueError) as exc:
            return tool_error(f"{name} failed: {exc}", era)

    async def read(self, tenant: str, uri: str) -> tuple[bytes, int]:
        """The document and version behind a ctx:// URI; NotFound when there is none."""
        if not uri.startswith(RESOURCE_SCHEME):
            raise NotFound(f"not a {RESOURCE_SCHEME} URI")
        found = await self.registry.read(tenant, uri[len(RESOURCE_SCHEME) :])
        return document_bytes(found.payload), found.version

    async def _context_create(self, tenant: str, args: ContextCreate) -> bytes:
        document = msgspec.json.encode(args.data)
        created = await self.registry.create(tenant, document, args.ttl, args.session)
        return encode(shapes.Created(created.token, created.version, rfc3339(created.expires_at)))

    async def _context_get(self, tenant: str, args: ContextGet) -> bytes:
        wanted = selection(args.path, args.slice)
        found = await self.registry.read(tenant, args.token)
        payload = document_bytes(found.payload) if wanted is None else wanted.apply(found.payload)
        # The stored bytes are spliced in as they are, as the REST mget does.
        return encode(ContextRead(args.token, found.version, msgspec.Raw(payload)))

    async def _context_append(self, tenant: str, args: ContextAppend) -> bytes:
        items = [msgspec.json.encode(item) for item in args.items]
        version = await self.registry.append(tenant, args.token, args.path, items, args.if_version)
        return encode(shapes.Written(args.token, version))

    async def _context_update(self, tenant: str, args: ContextUpdate) -> bytes:
        patch = msgspec.json.encode(args.patch)
        version = await self.registry.patch(tenant, args.token, patch, "merge", args.if_version)
        return encode(shapes.Written(args.token, version))

    async def _context_delete(self, tenant: str, args: ContextToken) -> bytes:
        await self.registry.delete(tenant, args.token)
        return encode(Deleted(True))

    async def _session_create(self, tenant: str, args: shapes.SessionCreate) -> bytes:
        meta = msgspec.json.encode(args.meta)
        session, expires_at = await self.sessions.create(tenant, args.ttl, meta)
        return encode(shapes.SessionCreated(session, rfc3339(expires_at)))

    async def _session_get(self, tenant: str, args: SessionGet) -> bytes:
        return encode(shapes.session_view(await self.sessions.get(tenant, args.session)))
