"""The OpenAPI 3.1 document of fastctx's HTTP API v1, served at /openapi.json."""

from __future__ import annotations

from typing import Any

TOKEN_PATTERN = "^[0-9A-Za-z]{22}$"
MAX_TTL_SECONDS = 315_360_000
MGET_MAX_TOKENS = 1000

_EXAMPLE_TOKEN = "4Jc8Ntq0b1Xr2kQ9sLmZpA"
_EXAMPLE_SESSION = "1bQ7vRz3KpX9mWc2LdT5yE"
_EXAMPLE_TIME = "2026-11-24T01:30:50.123Z"


def _ref(kind: str, name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# Error responses: status -> (component name, description, headers).
_ERRORS: dict[int, tuple[str, str, dict[str, Any]]] = {
    400: (
        "BadRequest",
        "Malformed JSON body, or a body or query parameter of the wrong shape.",
        {},
    ),
    401: (
        "Unauthorized",
        "`FASTCTX_API_KEYS` is set and the request has no valid `Authorization: Bearer` key.",
        {"WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
    ),
    404: (
        "NotFound",
        "No such context or session for this tenant (malformed ids included).",
        {},
    ),
    412: (
        "PreconditionFailed",
        "`If-Match` does not match the current version (or cannot be parsed); nothing changed.",
        {},
    ),
    413: (
        "ContentTooLarge",
        "The body is over `FASTCTX_MAX_CONTEXT_BYTES`, or an mget asks for over 1000 tokens.",
        {},
    ),
    415: (
        "UnsupportedMediaType",
        "The request's `Content-Type` is not one this operation accepts.",
        {"Accept-Patch": _ref("headers", "Accept-Patch")},
    ),
    422: (
        "UnprocessableContent",
        "The patch is invalid, cannot be applied, or a JSON Patch `test` operation failed.",
        {},
    ),
    503: (
        "ServiceUnavailable",
        "The backend is down (and the in-process cache cannot answer), the server is shedding"
        " load, or (type write-not-durable) a write was applied on the Redis primary but fewer"
        " replicas than FASTCTX_WRITE_REPLICAS acknowledged it in time.",
        {"Retry-After": _ref("headers", "Retry-After")},
    ),
}


def _problem_response(status: int) -> dict[str, Any]:
    _, description, headers = _ERRORS[status]
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("schemas", "Problem")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: int) -> dict[str, Any]:
    """Responses that refer to the shared problem+json components."""
    return {str(s): _ref("responses", _ERRORS[s][0]) for s in statuses}


def _bodyless_errors(*statuses: int) -> dict[str, Any]:
    """The same errors for HEAD, where the response carries no body."""
    out: dict[str, Any] = {}
    for s in statuses:
        _, description, headers = _ERRORS[s]
        out[str(s)] = {"description": description, **({"headers": headers} if headers else {})}
    return out


_V1_ERRORS = (401, 503)

_SCHEMAS: dict[str, Any] = {
    "Token": {
        "type": "string",
        "pattern": TOKEN_PATTERN,
        "description": "128 random bits, base62: 22 characters of `[0-9A-Za-z]`.",
        "examples": [_EXAMPLE_TOKEN],
    },
    "Version": {
        "type": "integer",
        "minimum": 1,
        "description": "Grows by one on every write; 1 after create.",
    },
    "Timestamp": {
        "type": "string",
        "format": "date-time",
        "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        "description": "RFC 3339, UTC, with milliseconds.",
        "examples": [_EXAMPLE_TIME],
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {
                "type": "string",
                "pattern": "^urn:fastctx:problem:[a-z0-9][a-z0-9-]*$",
                "examples": ["urn:fastctx:problem:not-found"],
            },
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
    },
    "Created": {
        "type": "object",
        "required": ["token", "version", "expires_at"],
        "properties": {
            "token": _ref("schemas", "Token"),
            "version": {"type": "integer", "const": 1},
            "expires_at": _ref("schemas", "Timestamp"),
        },
    },
    "Written": {
        "type": "object",
        "required": ["token", "version"],
        "properties": {
            "token": _ref("schemas", "Token"),
            "version": _ref("schemas", "Version"),
        },
    },
    "Meta": {
        "type": "object",
        "required": [
            "token",
            "version",
            "size",
            "stored_size",
            "created_at",
            "updated_at",
            "expires_at",
            "session",
        ],
        "properties": {
            "token": _ref("schemas", "Token"),
            "version": _ref("schemas", "Version"),
            "size": {"type": "integer", "minimum": 1, "description": "JSON bytes as stored."},
            "stored_size": {
                "type": "integer",
                "minimum": 1,
                "description": "Bytes in the backend (header + possibly compressed payload).",
            },
            "created_at": _ref("schemas", "Timestamp"),
            "updated_at": _ref("schemas", "Timestamp"),
            "expires_at": _ref("schemas", "Timestamp"),
            "session": {"anyOf": [_ref("schemas", "Token"), {"type": "null"}]},
        },
    },
    "MgetRequest": {
        "type": "object",
        "required": ["tokens"],
        "properties": {
            "tokens": {
                "type": "array",
                "maxItems": MGET_MAX_TOKENS,
                "items": {"type": "string"},
                "description": "Malformed or unknown tokens give `null` at their position.",
            },
        },
    },
    "MgetItem": {
        "type": "object",
        "required": ["token", "version", "data"],
        "properties": {
            "token": _ref("schemas", "Token"),
            "version": _ref("schemas", "Version"),
            "data": {"description": "The stored document."},
        },
    },
    "MgetResponse": {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "description": "One entry per requested token, in request order.",
                "items": {"anyOf": [_ref("schemas", "MgetItem"), {"type": "null"}]},
            },
        },
    },
    "SessionCreate": {
        "type": "object",
        "properties": {
            "ttl": {"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECONDS},
            "meta": {"type": "object"},
        },
    },
    "SessionCreated": {
        "type": "object",
        "required": ["session", "expires_at"],
        "properties": {
            "session": _ref("schemas", "Token"),
            "expires_at": _ref("schemas", "Timestamp"),
        },
    },
    "Session": {
        "type": "object",
        "required": ["session", "created_at", "expires_at", "meta", "contexts"],
        "properties": {
            "session": _ref("schemas", "Token"),
            "created_at": _ref("schemas", "Timestamp"),
            "expires_at": _ref("schemas", "Timestamp"),
            "meta": {"type": "object"},
            "contexts": {"type": "array", "items": _ref("schemas", "Token")},
        },
    },
    "JsonPointer": {"type": "string", "pattern": "^(/([^~/]|~[01])*)*$"},
    "JsonPatch": {
        "type": "array",
        "description": "RFC 6902 JSON Patch.",
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["op", "path", "value"],
                    "properties": {
                        "op": {"enum": ["add", "replace", "test"]},
                        "path": _ref("schemas", "JsonPointer"),
                        "value": {},
                    },
                },
                {
                    "type": "object",
                    "required": ["op", "path"],
                    "properties": {
                        "op": {"const": "remove"},
                        "path": _ref("schemas", "JsonPointer"),
                    },
                },
                {
                    "type": "object",
                    "required": ["op", "from", "path"],
                    "properties": {
                        "op": {"enum": ["move", "copy"]},
                        "from": _ref("schemas", "JsonPointer"),
                        "path": _ref("schemas", "JsonPointer"),
                    },
                },
            ],
        },
    },
}

_ETAG_SCHEMA: dict[str, Any] = {"type": "string", "pattern": '^"[0-9]+"$', "examples": ['"1"']}

_HEADERS: dict[str, Any] = {
    "ETag": {
        "description": 'The context version, quoted: `"<version>"`.',
        "required": True,
        "schema": _ETAG_SCHEMA,
    },
    "ETag-Optional": {
        "description": 'The new context version, `"<version>"`.',
        "schema": _ETAG_SCHEMA,
    },
    "X-Cache": {
        "description": "Whether the in-process cache answered; `stale` while the backend is down.",
        "required": True,
        "schema": {"type": "string", "enum": ["hit", "miss", "stale"]},
    },
    "Location": {
        "description": "Path of the created resource.",
        "required": True,
        "schema": {"type": "string", "format": "uri-reference"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "The authentication scheme: `Bearer`.",
        "required": True,
        "schema": {"type": "string", "pattern": "^Bearer"},
    },
    "Accept-Patch": {
        "description": "On PATCH: the patch media types accepted.",
        "schema": {"type": "string"},
    },
}

_PARAMETERS: dict[str, Any] = {
    "Token": {
        "name": "token",
        "in": "path",
        "required": True,
        "description": "Context token; a malformed one is 404.",
        "schema": {"type": "string", "pattern": TOKEN_PATTERN},
        "example": _EXAMPLE_TOKEN,
    },
    "SessionId": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "Session id; a malformed one is 404.",
        "schema": {"type": "string", "pattern": TOKEN_PATTERN},
        "example": _EXAMPLE_SESSION,
    },
    "IfMatch": {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": 'Write only if the version is `"N"` (or `*`); otherwise 412.',
        "schema": {"type": "string"},
        "example": '"1"',
    },
    "IfNoneMatch": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": 'A matching `"N"` gives 304 with no body.',
        "schema": {"type": "string"},
        "example": '"1"',
    },
    "CacheControl": {
        "name": "Cache-Control",
        "in": "header",
        "required": False,
        "description": "`no-cache` bypasses the in-process cache.",
        "schema": {"type": "string"},
        "example": "no-cache",
    },
    "Ttl": {
        "name": "ttl",
        "in": "query",
        "required": False,
        "description": "Seconds to live; defaults to `FASTCTX_DEFAULT_TTL`. Capped by the session.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECONDS},
    },
    "SessionQuery": {
        "name": "session",
        "in": "query",
        "required": False,
        "description": "Session to put the context in; unknown or malformed is 404.",
        "schema": {"type": "string", "pattern": TOKEN_PATTERN},
    },
}

_ANY_JSON = _json({"description": "Any JSON value."})

_READ_PARAMS = [_ref("parameters", "IfNoneMatch"), _ref("parameters", "CacheControl")]
_READ_HEADERS = {"ETag": _ref("headers", "ETag"), "X-Cache": _ref("headers", "X-Cache")}
_WRITTEN = {
    "description": "Written; the body holds the new version.",
    "headers": {"ETag": _ref("headers", "ETag-Optional")},
    "content": _json(_ref("schemas", "Written")),
}


def _event_stream(operation_id: str, summary: str) -> dict[str, Any]:
    """A GET that answers with an SSE change stream."""
    return {
        "tags": ["events"],
        "operationId": operation_id,
        "summary": summary,
        "parameters": [
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "Resume after this event: every retained event after it (at"
                " least the last 1000, at least 1 hour) is sent first, in order.",
                "schema": {"type": "string", "pattern": "^[0-9]+(-[0-9]+)?$"},
            },
            {
                "name": "include",
                "in": "query",
                "required": False,
                "description": "`data` adds the document to `updated` events, as read when the"
                " event is sent (so possibly a newer version than the event's).",
                "schema": {"type": "string", "enum": ["data"]},
            },
        ],
        "responses": {
            "200": {
                "description": "An SSE stream: `id: <id>`, `event: updated|deleted`, `data:"
                ' {"token", "version", "session"}`; `: ping` every 15 s. A context\'s stream'
                " ends after its `deleted` event.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_errors(400, 404, *_V1_ERRORS),
        },
    }


_CONTEXT_PATHS: dict[str, Any] = {
    "/v1/contexts": {
        "post": {
            "tags": ["contexts"],
            "operationId": "createContext",
            "summary": "Store a context and get its token",
            "parameters": [_ref("parameters", "Ttl"), _ref("parameters", "SessionQuery")],
            "requestBody": {"required": True, "content": _ANY_JSON},
            "responses": {
                "201": {
                    "description": "Created.",
                    "headers": {
                        "Location": _ref("headers", "Location"),
                        "ETag": _ref("headers", "ETag"),
                    },
                    "content": _json(_ref("schemas", "Created")),
                },
                **_errors(400, 404, 413, 415, *_V1_ERRORS),
            },
        },
    },
    "/v1/contexts/mget": {
        "post": {
            "tags": ["contexts"],
            "operationId": "mgetContexts",
            "summary": "Read many contexts at once",
            "requestBody": {"required": True, "content": _json(_ref("schemas", "MgetRequest"))},
            "responses": {
                "200": {
                    "description": "One item or `null` per token, in request order.",
                    "content": _json(_ref("schemas", "MgetResponse")),
                },
                **_errors(400, 413, 415, *_V1_ERRORS),
            },
        },
    },
    "/v1/contexts/{token}": {
        "parameters": [_ref("parameters", "Token")],
        "get": {
            "tags": ["contexts"],
            "operationId": "getContext",
            "summary": "Read a context",
            "parameters": _READ_PARAMS,
            "responses": {
                "200": {
                    "description": "The stored JSON, byte for byte.",
                    "headers": _READ_HEADERS,
                    "content": _ANY_JSON,
                },
                "304": _ref("responses", "NotModified"),
                **_errors(404, *_V1_ERRORS),
            },
        },
        "head": {
            "tags": ["contexts"],
            "operationId": "headContext",
            "summary": "As GET, without the body",
            "parameters": _READ_PARAMS,
            "responses": {
                "200": {"description": "The context exists.", "headers": _READ_HEADERS},
                "304": _ref("responses", "NotModified"),
                **_bodyless_errors(404, *_V1_ERRORS),
            },
        },
        "put": {
            "tags": ["contexts"],
            "operationId": "replaceContext",
            "summary": "Replace a context (keeps its expiry)",
            "parameters": [_ref("parameters", "IfMatch")],
            "requestBody": {"required": True, "content": _ANY_JSON},
            "responses": {"200": _WRITTEN, **_errors(400, 404, 412, 413, 415, *_V1_ERRORS)},
        },
        "patch": {
            "tags": ["contexts"],
            "operationId": "patchContext",
            "summary": "Patch a context (RFC 7386 merge patch or RFC 6902 JSON Patch)",
            "parameters": [_ref("parameters", "IfMatch")],
            "requestBody": {
                "required": True,
                "content": {
                    "application/merge-patch+json": {
                        "schema": {"description": "RFC 7386 merge patch: any JSON value."},
                    },
                    "application/json-patch+json": {"schema": _ref("schemas", "JsonPatch")},
                },
            },
            "responses": {
                "200": _WRITTEN,
                **_errors(400, 404, 412, 413, 415, 422, *_V1_ERRORS),
            },
        },
        "delete": {
            "tags": ["contexts"],
            "operationId": "deleteContext",
            "summary": "Delete a context",
            "parameters": [_ref("parameters", "IfMatch")],
            "responses": {
                "204": {"description": "Deleted."},
                **_errors(404, 412, *_V1_ERRORS),
            },
        },
    },
    "/v1/contexts/{token}/meta": {
        "parameters": [_ref("parameters", "Token")],
        "get": {
            "tags": ["contexts"],
            "operationId": "getContextMeta",
            "summary": "Read a context's metadata",
            "responses": {
                "200": {"description": "Metadata.", "content": _json(_ref("schemas", "Meta"))},
                **_errors(404, *_V1_ERRORS),
            },
        },
    },
    "/v1/contexts/{token}/events": {
        "parameters": [_ref("parameters", "Token")],
        "get": _event_stream("streamContextEvents", "Follow a context's changes (SSE)"),
    },
}


_SESSION_PATHS: dict[str, Any] = {
    "/v1/sessions": {
        "post": {
            "tags": ["sessions"],
            "operationId": "createSession",
            "summary": "Create a session (empty body: defaults)",
            "requestBody": {
                "required": False,
                "content": _json(_ref("schemas", "SessionCreate")),
            },
            "responses": {
                "201": {
                    "description": "Created.",
                    "headers": {
                        "Location": {
                            "description": "Path of the session.",
                            "schema": {"type": "string", "format": "uri-reference"},
                        },
                    },
                    "content": _json(_ref("schemas", "SessionCreated")),
                },
                **_errors(400, 413, 415, *_V1_ERRORS),
            },
        },
    },
    "/v1/sessions/{id}": {
        "parameters": [_ref("parameters", "SessionId")],
        "get": {
            "tags": ["sessions"],
            "operationId": "getSession",
            "summary": "Read a session (slides its expiry)",
            "responses": {
                "200": {
                    "description": "The session.",
                    "content": _json(_ref("schemas", "Session")),
                },
                **_errors(404, *_V1_ERRORS),
            },
        },
        "delete": {
            "tags": ["sessions"],
            "operationId": "deleteSession",
            "summary": "Delete a session and all its contexts",
            "responses": {
                "204": {"description": "Deleted, with its contexts."},
                **_errors(404, *_V1_ERRORS),
            },
        },
    },
    "/v1/sessions/{id}/events": {
        "parameters": [_ref("parameters", "SessionId")],
        "get": _event_stream(
            "streamSessionEvents", "Follow the changes of every context of a session (SSE)"
        ),
    },
}

_OPS_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "tags": ["operations"],
            "operationId": "healthz",
            "summary": "Liveness",
            "security": [],
            "responses": {"200": {"description": "The process serves."}},
        },
    },
    "/readyz": {
        "get": {
            "tags": ["operations"],
            "operationId": "readyz",
            "summary": "Readiness",
            "security": [],
            "responses": {
                "200": {"description": "The backend answers."},
                "503": {"description": "The backend does not answer."},
            },
        },
    },
    "/metrics": {
        "get": {
            "tags": ["operations"],
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            },
        },
    },
    "/openapi.json": {
        "get": {
            "tags": ["operations"],
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document.",
                    "content": _json({"type": "object", "required": ["openapi", "info", "paths"]}),
                },
            },
        },
    },
}

# /mcp speaks JSON-RPC 2.0 (the Model Context Protocol, Streamable HTTP): its own errors are
# JSON-RPC error objects, not problem documents; auth, size and backend errors are problems.
_JSONRPC = _json({"type": "object", "description": "One JSON-RPC 2.0 message of MCP."})


def _rpc_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _JSONRPC}


def _mcp_header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}  # fmt: skip


_MCP_SESSION = _mcp_header(
    "Mcp-Session-Id", "The session from `initialize` (protocol revisions 2025-06-18, 2025-11-25)."
)
_MCP_VERSION = _mcp_header(
    "MCP-Protocol-Version", "2025-06-18, 2025-11-25 or 2026-07-28 (which has no sessions)."
)
_MCP_FORBIDDEN = _rpc_error("A browser `Origin` that is not allowed (`FASTCTX_MCP_ORIGINS`).")
_MCP_UNKNOWN = _rpc_error("An unknown or ended session; for 2026-07-28, an unknown method.")

_MCP_PATHS: dict[str, Any] = {
    "/mcp": {
        "post": {
            "tags": ["mcp"],
            "operationId": "mcpPost",
            "summary": "Send one MCP message",
            "parameters": [
                _MCP_VERSION,
                _MCP_SESSION,
                _mcp_header("Mcp-Method", "2026-07-28: the JSON-RPC method, repeated."),
                _mcp_header("Mcp-Name", "2026-07-28: the tool name or resource URI, repeated."),
                _mcp_header(
                    "Mcp-Param-Ttl",
                    "2026-07-28: the `ttl` argument of `context_create` or `session_create`, "
                    "repeated (its schema marks it `x-mcp-header`).",
                ),
            ],
            "requestBody": {"required": True, "content": _JSONRPC},
            "responses": {
                "200": {
                    "description": "The reply, as JSON or as an SSE stream, per `Accept`; "
                    "`subscriptions/listen` (2026-07-28) is answered with a stream of "
                    "`notifications/resources/updated` that stays open.",
                    "content": {**_JSONRPC, "text/event-stream": {"schema": {"type": "string"}}},
                },
                "202": {"description": "A notification or a response was accepted."},
                "400": _rpc_error(
                    "Malformed JSON (-32700), a bad message (-32600) or params (-32602), a "
                    "missing session, or an unsupported protocol version."
                ),
                "403": _MCP_FORBIDDEN,
                "404": _MCP_UNKNOWN,
                "406": _rpc_error(
                    "`Accept` allows neither JSON nor an event stream (for "
                    "`subscriptions/listen`: no event stream)."
                ),
                **_errors(413, 415, *_V1_ERRORS),
            },
        },
        "get": {
            "tags": ["mcp"],
            "operationId": "mcpStream",
            "summary": "The session's stream of server messages (SSE)",
            "parameters": [
                _MCP_VERSION,
                _MCP_SESSION,
                _mcp_header("Last-Event-ID", "The id of the last event received: resume after it."),
            ],
            "responses": {
                "200": {
                    "description": "An event stream: `notifications/resources/updated` for "
                    "the resources the session subscribed to, each with an id; `: ping` "
                    "comments keep it open.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _rpc_error("No session named, or a `Last-Event-ID` not of its stream."),
                "403": _MCP_FORBIDDEN,
                "404": _MCP_UNKNOWN,
                "405": _rpc_error("2026-07-28 has no sessions, so no stream."),
                **_errors(*_V1_ERRORS),
            },
        },
        "delete": {
            "tags": ["mcp"],
            "operationId": "mcpEndSession",
            "summary": "End the session, on every node",
            "parameters": [_MCP_VERSION, _MCP_SESSION],
            "responses": {
                "204": {"description": "Ended."},
                "400": _rpc_error("No session named."),
                "403": _MCP_FORBIDDEN,
                "404": _MCP_UNKNOWN,
                **_errors(*_V1_ERRORS),
            },
        },
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "fastctx",
        "version": "0.1.0",
        "summary": "Store a JSON context once, pass a 22-character token instead.",
        "description": (
            "Bodies are JSON (UTF-8); timestamps are RFC 3339 UTC with milliseconds. Errors are"
            " `application/problem+json` (RFC 9457) with `type` `urn:fastctx:problem:<slug>`."
            " When `FASTCTX_API_KEYS` is set, every `/v1` and `/mcp` request needs"
            " `Authorization: Bearer <key>` and sees only its tenant's data."
        ),
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "tags": [
        {"name": "contexts", "description": "Context Registry."},
        {"name": "sessions", "description": "Session Manager."},
        {"name": "events", "description": "Change streams (SSE) of contexts and sessions."},
        {"name": "operations", "description": "Health, readiness, metrics, this document."},
        {"name": "mcp", "description": "Model Context Protocol, Streamable HTTP."},
    ],
    # Auth is optional at the document level: it is required only when FASTCTX_API_KEYS is set.
    # Routes outside /v1 and /mcp override this with an empty list.
    "security": [{"bearer": []}, {}],
    "paths": {**_CONTEXT_PATHS, **_SESSION_PATHS, **_OPS_PATHS, **_MCP_PATHS},
    "components": {
        "schemas": _SCHEMAS,
        "parameters": _PARAMETERS,
        "headers": _HEADERS,
        "responses": {
            "NotModified": {
                "description": "`If-None-Match` matches the current version; no body.",
                "headers": {"ETag": _ref("headers", "ETag")},
            },
            **{name: _problem_response(status) for status, (name, _, _) in _ERRORS.items()},
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key from `FASTCTX_API_KEYS` (`tenant:key,...`).",
            },
        },
    },
}
