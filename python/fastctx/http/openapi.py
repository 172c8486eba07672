"""The OpenAPI 3.1 document of fastctx's REST API v1: the operations, written out here, and the
schemas, produced from the Structs of `fastctx.asgi.shapes` (the ones requests are decoded with).

The /mcp operations are `fastctx.mcp.openapi`'s; `fastctx.app` serves the two as one document.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fastctx.asgi import shapes
from fastctx.backends import EVENTS_KEPT, EVENTS_MAX_AGE_MS
from fastctx.registry import MAX_TTL_SECONDS

_EXAMPLE_TOKEN = "4Jc8Ntq0b1Xr2kQ9sLmZpA"
_EXAMPLE_SESSION = "1bQ7vRz3KpX9mWc2LdT5yE"
_SCHEMA_REFS = "#/components/schemas/{name}"


def _ref(kind: str, name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# Error responses: status -> (component name, description, headers).
_ERRORS: dict[int, tuple[str, str, dict[str, Any]]] = {
    400: (
        "BadRequest",
        "Malformed JSON, an empty body, a body or a query parameter of the wrong shape (a"
        " `path` that is no JSON Pointer, a `slice` that is not `start:end`), a query"
        " parameter the operation does not take, a `slice` of a value that is not an array,"
        " or a malformed header (`If-Match`, `Last-Event-ID`).",
        {},
    ),
    401: (
        "Unauthorized",
        "`FASTCTX_API_KEYS` is set and the request has no valid `Authorization: Bearer` key.",
        {"WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
    ),
    404: (
        "NotFound",
        "No such context or session for this tenant (malformed ids included); or, with type"
        " `path-not-found`, the context exists but `path` names nothing in it.",
        {},
    ),
    410: (
        "Gone",
        "The `version` asked for is older than the context's log still keeps (type"
        " `version-gone`); `/meta` gives `oldest_version`.",
        {},
    ),
    412: (
        "PreconditionFailed",
        "`If-Match` names another version than the current one; nothing changed.",
        {},
    ),
    413: (
        "ContentTooLarge",
        "The body is over `FASTCTX_MAX_CONTEXT_BYTES`, a patch would grow the document past"
        f" `FASTCTX_MAX_DOCUMENT_BYTES` (nothing changed), an mget asks for over"
        f" {shapes.MGET_LIMIT} tokens, or (type `storage-quota-exceeded`) a write would take"
        " the tenant past the bytes `FASTCTX_TENANT_BYTES` lets it keep (nothing changed).",
        {},
    ),
    415: (
        "UnsupportedMediaType",
        "The request's `Content-Type` is not one this operation accepts.",
        {"Accept-Patch": _ref("headers", "Accept-Patch")},
    ),
    422: (
        "UnprocessableContent",
        "The patch is invalid, cannot be applied, or a JSON Patch `test` operation failed; an"
        " append finds a value that is not an array at `path`, or cannot create one there.",
        {},
    ),
    429: (
        "TooManyRequests",
        "The tenant is over its `FASTCTX_TENANT_RATE` (type `rate-limited`); `RateLimit-Policy`"
        " and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) say its rate and when to come"
        " back.",
        {"Retry-After": _ref("headers", "Retry-After")},
    ),
    431: (
        "RequestHeaderFieldsTooLarge",
        "The request's headers, names and values, are over `FASTCTX_MAX_HEADER_BYTES`.",
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


# Every /v1 operation: 400 for a query parameter it does not take, 401, 429, 431 and 503.
_V1_ERRORS = (400, 401, 429, 431, 503)


def _schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The components' schemas, from the Structs; and the schema of a token, from its type."""
    named = {
        "Problem": shapes.Problem,
        "Created": shapes.Created,
        "Written": shapes.Written,
        "Meta": shapes.Meta,
        "MgetRequest": shapes.MgetRequest,
        "MgetResponse": shapes.MgetResponse,
        "AppendItems": shapes.AppendItems,
        "SessionCreate": shapes.SessionCreate,
        "SessionCreated": shapes.SessionCreated,
        "Session": shapes.Session,
        "ChangeEvent": shapes.ChangeEvent,
        "JsonPatch": shapes.JsonPatch,
        "Token": shapes.Token,
    }
    top, components = msgspec.json.schema_components(named.values(), ref_template=_SCHEMA_REFS)
    for name, schema in zip(named, top, strict=True):
        if "$ref" not in schema:  # an Annotated type, not a Struct: named here
            components[name] = schema
    # What a Struct cannot say of its optional members: an item has exactly one of the two.
    components["MgetItem"]["oneOf"] = [{"required": ["data"]}, {"required": ["error"]}]
    return components, components["Token"]


_SCHEMAS, _TOKEN_SCHEMA = _schemas()

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
        "schema": {"type": "string", "pattern": shapes.TOKEN_PATTERN},
        "example": _EXAMPLE_TOKEN,
    },
    "SessionId": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "Session id; a malformed one is 404.",
        "schema": {"type": "string", "pattern": shapes.TOKEN_PATTERN},
        "example": _EXAMPLE_SESSION,
    },
    "IfMatch": {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": 'Write only if the version is `"N"` (or `*`); otherwise 412, as for'
        " any entity tag that names no current version (a weak one, a list). A value that is"
        " no entity tag at all (`3`, unquoted) is 400.",
        # A plain string: the value is any RFC 9110 If-Match, the server tells which is which.
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
    "Path": {
        "name": "path",
        "in": "query",
        "required": False,
        "description": "Read only the value this JSON Pointer (RFC 6901) names, as stored; empty"
        " for the whole document. One that names nothing is 404 `path-not-found`.",
        "schema": {"type": "string", "pattern": shapes.JSON_POINTER_PATTERN},
        "example": "/messages",
    },
    "Slice": {
        "name": "slice",
        "in": "query",
        "required": False,
        "description": "`start:end` of the array at `path` (or of the document), by Python's"
        " rules: either side may be empty, negative counts from the end, bounds past either"
        " end are clamped. The answer is an array of those elements, each as stored. A value"
        " there that is not an array is 400.",
        "schema": {"type": "string", "pattern": shapes.SLICE_PATTERN},
        "example": "-20:",
    },
    "Version": {
        "name": "version",
        "in": "query",
        "required": False,
        "description": "Read the document as it was at this earlier version, while the"
        " context's log keeps it: every version since its last fold, and at least the last 16"
        " made by patches (a PUT starts the history again). An older one is 410"
        " `version-gone`; one newer than the context's, 404.",
        "schema": {"type": "integer", "minimum": 1},
        "example": 3,
    },
    "AppendPath": {
        "name": "path",
        "in": "query",
        "required": True,
        "description": "JSON Pointer (RFC 6901) to the array to append to; empty for the"
        " document itself. With nothing there, the array is created, if its parent exists.",
        "schema": {"type": "string", "pattern": shapes.JSON_POINTER_PATTERN},
        "example": "/messages",
    },
    "SessionQuery": {
        "name": "session",
        "in": "query",
        "required": False,
        "description": "Session to put the context in; unknown or malformed is 404.",
        "schema": {"type": "string", "pattern": shapes.TOKEN_PATTERN},
    },
}

_ANY_JSON = _json({"description": "Any JSON value."})

_SELECT_PARAMS = [_ref("parameters", "Path"), _ref("parameters", "Slice")]
_READ_PARAMS = [
    _ref("parameters", "IfNoneMatch"),
    _ref("parameters", "CacheControl"),
    *_SELECT_PARAMS,
    _ref("parameters", "Version"),
]
_READ_HEADERS = {"ETag": _ref("headers", "ETag"), "X-Cache": _ref("headers", "X-Cache")}
_WRITTEN = {
    "description": "Written; the body holds the new version.",
    "headers": {"ETag": _ref("headers", "ETag-Optional")},
    "content": _json(_ref("schemas", "Written")),
}


# What the schema of an event stream describes (OpenAPI 3.1): one event, its data embedded JSON.
_CHANGE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
        "event": {"enum": list(shapes.EVENT_TYPES)},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": _ref("schemas", "ChangeEvent"),
        },
    },
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
                f" least the last {EVENTS_KEPT}, at least {EVENTS_MAX_AGE_MS // 60_000} minutes)"
                " is sent first, in order.",
                # Each number below 2**64, as Redis stream ids are.
                "schema": {"type": "string", "pattern": "^[0-9]{1,19}(-[0-9]{1,19})?$"},
            },
            {
                "name": "include",
                "in": "query",
                "required": False,
                "description": "`data` adds the document to `created` and `updated` events, as"
                " read when the event is sent (so possibly a newer version than the event's)."
                " `patch` adds to each `updated` event the JSON Patch that made its version"
                " from the previous one, and to `created` the document; where it cannot (the"
                ' context has moved on since), the event says `"resync": true` instead: read'
                " the context again. Both: `data,patch`.",
                "schema": {"type": "string", "pattern": "^(data|patch)(,(data|patch))*$"},
            },
        ],
        "responses": {
            "200": {
                "description": "An SSE stream: `id: <id>`, `event: created|updated|deleted|"
                'expired`, `data: {"token", "version", "session"}`; `: ping` every 15 s. A'
                " context's stream ends after its `deleted` or `expired` event; a session's"
                " after the session's own `expired` event (the one without a token).",
                "content": {"text/event-stream": {"schema": _CHANGE_EVENT}},
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
            "parameters": _SELECT_PARAMS,
            "requestBody": {"required": True, "content": _json(_ref("schemas", "MgetRequest"))},
            "responses": {
                "200": {
                    "description": "One item or `null` per token, in request order. With"
                    " `path` or `slice`, an item has the part of its document they name, or,"
                    " where they name nothing, an `error` (a problem) instead of `data`.",
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
                    "description": "The stored JSON, byte for byte; with `path`, the value it"
                    " names, as stored; with `slice`, the array of the elements it names. The"
                    " ETag is the context's version either way (with `version`, that one).",
                    "headers": _READ_HEADERS,
                    "content": _ANY_JSON,
                },
                "304": _ref("responses", "NotModified"),
                **_errors(404, 410, *_V1_ERRORS),
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
                **_bodyless_errors(404, 410, *_V1_ERRORS),
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
    "/v1/contexts/{token}/append": {
        "parameters": [_ref("parameters", "Token")],
        "post": {
            "tags": ["contexts"],
            "operationId": "appendToContext",
            "summary": "Append items to an array in a context",
            "description": "Appends the body's items, in order, to the array at `path`, as one"
            " write: the JSON Patch `add` of `<path>/-` for each item, or, when nothing is at"
            " `path`, `add` of `<path>` with the array of them all (its parent must exist).",
            "parameters": [_ref("parameters", "AppendPath"), _ref("parameters", "IfMatch")],
            "requestBody": {"required": True, "content": _json(_ref("schemas", "AppendItems"))},
            "responses": {
                "200": _WRITTEN,
                **_errors(400, 404, 412, 413, 415, 422, *_V1_ERRORS),
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
            "responses": {"200": {"description": "The process serves."}, **_errors(400)},
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
                **_errors(400),
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
                **_errors(400),
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
                **_errors(400),
            },
        },
    },
}

REST_DOCUMENT: dict[str, Any] = {
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
    "paths": {**_CONTEXT_PATHS, **_SESSION_PATHS, **_OPS_PATHS},
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


def document(more_paths: dict[str, Any]) -> dict[str, Any]:
    """The whole document: the REST operations and `more_paths` (those of /mcp), which may
    refer to this document's components."""
    return {**REST_DOCUMENT, "paths": {**REST_DOCUMENT["paths"], **more_paths}}


def __getattr__(name: str) -> Any:
    # OPENAPI is the document as served, /mcp included; fastctx.app puts it together.
    if name == "OPENAPI":
        from fastctx.app import OPENAPI

        return OPENAPI
    raise AttributeError(name)
