"""The /mcp operations of the OpenAPI document: Streamable HTTP, and the headers it requires.

/mcp speaks JSON-RPC 2.0 (the Model Context Protocol): its own errors are JSON-RPC error
objects, not problem documents; auth, size and backend errors are problems, and refer to the
problem responses of the document these paths join (`fastctx.http.openapi.document`).
"""

from __future__ import annotations

from typing import Any

from fastctx.asgi.shapes import TOKEN_PATTERN
from fastctx.mcp.protocol import HANDSHAKE_VERSIONS, SUPPORTED_VERSIONS

_JSONRPC_MESSAGE: dict[str, Any] = {
    "type": "object",
    "description": "One JSON-RPC 2.0 message of MCP: a request (`method` and `id`), a"
    " notification (`method`, no `id`) or a response (`id` and `result` or `error`). Batches"
    " are not supported.",
    "required": ["jsonrpc"],
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "id": {"type": ["string", "integer"]},
        "method": {"type": "string"},
        "params": {"type": "object"},
        "result": {},
        "error": {"type": "object"},
    },
}
# What the server answers: a reply to a message it could not read has a null id.
_JSONRPC_REPLY: dict[str, Any] = {
    **_JSONRPC_MESSAGE,
    "description": "A JSON-RPC 2.0 message from the server: a reply (`id` null when the"
    " request's could not be read) or a notification.",
    "properties": {
        **_JSONRPC_MESSAGE["properties"],
        "id": {"type": ["string", "integer", "null"]},
    },
}
_REQUEST = {"application/json": {"schema": _JSONRPC_MESSAGE}}
_JSONRPC = {"application/json": {"schema": _JSONRPC_REPLY}}
# One event of a stream from /mcp (OpenAPI 3.1: the schema of an event stream is one event's).
_MESSAGE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "id": {"type": "string"},
        "event": {"const": "message"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": _JSONRPC_REPLY,
        },
    },
}
_STREAM = {"text/event-stream": {"schema": _MESSAGE_EVENT}}


def _problem(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


_PROBLEMS = {"401": _problem("Unauthorized"), "503": _problem("ServiceUnavailable")}


def _rpc_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _JSONRPC}


def _header(
    name: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _version(versions: tuple[str, ...], description: str) -> dict[str, Any]:
    return _header("MCP-Protocol-Version", description, {"enum": list(versions)})


def _session(required: bool, description: str) -> dict[str, Any]:
    schema = {"type": "string", "pattern": TOKEN_PATTERN}
    return _header("Mcp-Session-Id", description, schema, required)


_FORBIDDEN = _rpc_error("A browser `Origin` that is not allowed (`FASTCTX_MCP_ORIGINS`).")
_UNKNOWN = _rpc_error("An unknown or ended session; for 2026-07-28, an unknown method.")
_NAMED = {"type": "string", "minLength": 1}
_STREAM_ACCEPT = " The request's `Accept` must name `text/event-stream` (406 otherwise)."

MCP_PATHS: dict[str, Any] = {
    "/mcp": {
        "post": {
            "tags": ["mcp"],
            "operationId": "mcpPost",
            "summary": "Send one MCP message",
            "description": "Which headers a message needs depends on its protocol revision and"
            " method, which OpenAPI cannot tie to the body: `initialize` needs none; every other"
            " message of the session era (2025-06-18, 2025-11-25) needs `Mcp-Session-Id`, and"
            " every 2026-07-28 message needs `MCP-Protocol-Version: 2026-07-28` and `Mcp-Method`"
            " (and `Mcp-Name` for a named method), repeating its `params._meta` and method."
            " `Accept` must allow `application/json` or `text/event-stream` (406 otherwise).",
            "parameters": [
                _version(
                    SUPPORTED_VERSIONS,
                    "Every message but `initialize`: the negotiated revision; 2026-07-28 has"
                    " no sessions.",
                ),
                _session(
                    False,
                    "Every session-era message but `initialize`: the session `initialize`"
                    " answered with.",
                ),
                _header("Mcp-Method", "2026-07-28: the JSON-RPC method, repeated.", _NAMED),
                _header(
                    "Mcp-Name",
                    "2026-07-28, for `tools/call`, `resources/read` and `prompts/get`: the tool"
                    " name or resource URI, repeated.",
                    _NAMED,
                ),
                _header(
                    "Mcp-Param-Ttl",
                    "2026-07-28: the `ttl` argument of `context_create` or `session_create`, "
                    "repeated (its schema marks it `x-mcp-header`).",
                    {"type": "string"},
                ),
            ],
            "requestBody": {"required": True, "content": _REQUEST},
            "responses": {
                "200": {
                    "description": "The reply, as JSON or as an SSE stream, per `Accept`; "
                    "`subscriptions/listen` (2026-07-28) is answered with a stream of "
                    "`notifications/resources/updated` that stays open.",
                    "content": {**_JSONRPC, **_STREAM},
                },
                "202": {"description": "A notification or a response was accepted."},
                "400": _rpc_error(
                    "Malformed JSON (-32700), a bad message (-32600) or params (-32602), a "
                    "missing session, an unsupported protocol version, or a query parameter."
                ),
                "403": _FORBIDDEN,
                "404": _UNKNOWN,
                "406": _rpc_error(
                    "`Accept` allows neither JSON nor an event stream (for "
                    "`subscriptions/listen`: no event stream)."
                ),
                "413": _problem("ContentTooLarge"),
                "415": _problem("UnsupportedMediaType"),
                **_PROBLEMS,
            },
        },
        "get": {
            "tags": ["mcp"],
            "operationId": "mcpStream",
            "summary": "The session's stream of server messages (SSE)",
            "description": "Session era only." + _STREAM_ACCEPT,
            "parameters": [
                _version(HANDSHAKE_VERSIONS, "The negotiated revision (2026-07-28 has no stream)."),
                _session(True, "The session from `initialize`."),
                _header(
                    "Last-Event-ID",
                    "The id of the last event received: resume after it.",
                    {"type": "string"},
                ),
            ],
            "responses": {
                "200": {
                    "description": "An event stream: `notifications/resources/updated` for "
                    "the resources the session subscribed to, each with an id; `: ping` "
                    "comments keep it open.",
                    "content": _STREAM,
                },
                "400": _rpc_error(
                    "No session named, a `Last-Event-ID` not of its stream, or a query parameter."
                ),
                "403": _FORBIDDEN,
                "404": _UNKNOWN,
                "405": _rpc_error("2026-07-28 has no sessions, so no stream."),
                "406": _rpc_error("`Accept` does not allow `text/event-stream`."),
                **_PROBLEMS,
            },
        },
        "delete": {
            "tags": ["mcp"],
            "operationId": "mcpEndSession",
            "summary": "End the session, on every node",
            "parameters": [
                _version(SUPPORTED_VERSIONS, "The negotiated revision."),
                _session(True, "The session from `initialize`."),
            ],
            "responses": {
                "204": {"description": "Ended."},
                "400": _rpc_error("No session named, or a query parameter."),
                "403": _FORBIDDEN,
                "404": _UNKNOWN,
                **_PROBLEMS,
            },
        },
    },
}
