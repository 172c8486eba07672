"""The wire shapes of fastctx, each one msgspec Struct: requests are decoded with them, the
OpenAPI document's schemas and the MCP tools' schemas are produced from them."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from fastctx.asgi.body import whole_number
from fastctx.clock import rfc3339
from fastctx.errors import BadRequest
from fastctx.registry import MAX_TTL_SECONDS
from fastctx.sessions import SessionView

TOKEN_PATTERN = "^[0-9A-Za-z]{22}$"
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
JSON_POINTER_PATTERN = "^(/([^~/]|~[01])*)*$"
# A slice of an array, Python's way: either side may be empty, negative counts from the end.
SLICE_PATTERN = "^(-?[0-9]{1,20})?:(-?[0-9]{1,20})?$"
PROBLEM_TYPE_PATTERN = "^urn:fastctx:problem:[a-z0-9][a-z0-9-]*$"
MGET_LIMIT = 1000
TTL_RULE = f"ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}"
EVENT_TYPES = ("created", "updated", "deleted", "expired")

Token = Annotated[
    str,
    msgspec.Meta(
        pattern=TOKEN_PATTERN,
        description="128 random bits, base62: 22 characters of `[0-9A-Za-z]`.",
        examples=["4Jc8Ntq0b1Xr2kQ9sLmZpA"],
    ),
]
Timestamp = Annotated[
    str,
    msgspec.Meta(
        pattern=TIMESTAMP_PATTERN,
        description="RFC 3339, UTC, with milliseconds.",
        examples=["2026-11-24T01:30:50.123Z"],
        extra_json_schema={"format": "date-time"},
    ),
]
Version = Annotated[
    int, msgspec.Meta(ge=1, description="Grows by one on every write; 1 after create.")
]
JsonPointer = Annotated[str, msgspec.Meta(pattern=JSON_POINTER_PATTERN)]
Slice = Annotated[
    str,
    msgspec.Meta(
        pattern=SLICE_PATTERN,
        description="`start:end` of the array at `path`, by Python's rules: either side may be"
        " empty, negative counts from the end (`-20:` is the last 20 elements).",
        examples=["-20:", "0:10"],
    ),
]
Seconds = Annotated[
    Any,  # read by ttl_seconds: JSON Schema's integers include 60.0, msgspec's int does not
    msgspec.Meta(
        description="Seconds to live; defaults to `FASTCTX_DEFAULT_TTL`.",
        extra_json_schema={
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECONDS},
                {"type": "null"},
            ]
        },
    ),
]
AnyJson = Annotated[Any, msgspec.Meta(description="Any JSON value.")]


def ttl_seconds(value: str | int | float | None) -> int | None:
    """A ttl as a query string gives it ("60") or a JSON body does (60, or 60.0, which JSON
    Schema counts as an integer too); BadRequest for anything else."""
    if value is None:
        return None
    seconds: int | None
    if isinstance(value, str):
        seconds = whole_number(value, max_digits=10)
    elif isinstance(value, bool):
        seconds = None
    elif isinstance(value, int):
        seconds = value
    else:
        seconds = int(value) if value.is_integer() else None
    if seconds is None or not 1 <= seconds <= MAX_TTL_SECONDS:
        raise BadRequest(TTL_RULE)
    return seconds


def json_ttl(value: object) -> int | None:
    """A ttl member of a JSON body: a number, never a string (which is the query's form)."""
    if value is not None and not isinstance(value, int | float):
        raise ValueError(TTL_RULE)  # a string, a list, ...: any JSON value may come here
    try:
        return ttl_seconds(value)
    except BadRequest as exc:
        raise ValueError(exc.detail) from None


class Problem(msgspec.Struct):
    """RFC 9457 problem details: what every error of the REST routes answers with."""

    type: Annotated[
        str, msgspec.Meta(pattern=PROBLEM_TYPE_PATTERN, examples=["urn:fastctx:problem:not-found"])
    ]
    title: str
    status: Annotated[int, msgspec.Meta(ge=400, le=599)]
    detail: str


class Created(msgspec.Struct):
    token: Token
    version: Annotated[int, msgspec.Meta(ge=1, le=1)]
    expires_at: Timestamp


class Written(msgspec.Struct):
    token: Token
    version: Version


class Meta(msgspec.Struct):
    """What `GET /v1/contexts/{token}/meta` tells of a context."""

    token: Token
    version: Version
    size: Annotated[int, msgspec.Meta(ge=1, description="The document's JSON bytes.")]
    stored_size: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="Bytes in the backend: the frame (header and possibly compressed base "
            "document) and the log of patches since.",
        ),
    ]
    created_at: Timestamp
    updated_at: Timestamp
    expires_at: Timestamp
    session: Token | None
    oldest_version: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="The oldest version `GET ...?version=N` can still return; older "
            "ones are 410.",
        ),
    ]


class MgetRequest(msgspec.Struct):
    tokens: Annotated[
        list[str],
        msgspec.Meta(
            max_length=MGET_LIMIT,
            description="Malformed or unknown tokens give `null` at their position.",
        ),
    ]


class MgetItem(msgspec.Struct, omit_defaults=True):
    """One context of an mget: its `data`, or, when `path` or `slice` name nothing in it, the
    `error` that says why instead."""

    token: Token
    version: Version
    data: Annotated[
        Any,
        msgspec.Meta(
            description="The stored document; with `path` and `slice`, the part they name."
        ),
    ] = msgspec.UNSET
    error: Annotated[
        Problem | msgspec.UnsetType,
        msgspec.Meta(
            description="Instead of `data`: `path-not-found` when `path` names nothing in this"
            " context, `bad-request` when `slice` is asked of a value that is not an array."
        ),
    ] = msgspec.UNSET


class MgetResponse(msgspec.Struct):
    items: Annotated[
        list[MgetItem | None],
        msgspec.Meta(description="One entry per requested token, in request order."),
    ]


AppendItems = Annotated[
    list[Any],
    msgspec.Meta(
        description="The items to append, in order: each one becomes an element of the array."
    ),
]


class SessionCreate(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/sessions` and the arguments of `session_create`: both optional,
    and an empty body is all defaults."""

    ttl: Seconds = None
    meta: dict[str, Any] = {}

    def __post_init__(self) -> None:
        self.ttl = json_ttl(self.ttl)


class SessionCreated(msgspec.Struct):
    session: Token
    expires_at: Timestamp


class Session(msgspec.Struct):
    session: Token
    created_at: Timestamp
    expires_at: Timestamp
    # As stored: spliced into the response, never decoded.
    meta: Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema={"type": "object"})]
    contexts: list[Token]


def session_view(view: SessionView) -> Session:
    """What `GET /v1/sessions/{id}` and the `session_get` tool answer about a session."""
    return Session(
        view.session,
        rfc3339(view.created_at),
        rfc3339(view.expires_at),
        msgspec.Raw(view.meta),
        view.contexts,
    )


# RFC 6902, one Struct per operation, told apart by `op`.
class AddOperation(msgspec.Struct, tag_field="op", tag="add"):
    path: JsonPointer
    value: Any


class RemoveOperation(msgspec.Struct, tag_field="op", tag="remove"):
    path: JsonPointer


class ReplaceOperation(msgspec.Struct, tag_field="op", tag="replace"):
    path: JsonPointer
    value: Any


class MoveOperation(msgspec.Struct, tag_field="op", tag="move", rename={"source": "from"}):
    source: JsonPointer
    path: JsonPointer


class CopyOperation(msgspec.Struct, tag_field="op", tag="copy", rename={"source": "from"}):
    source: JsonPointer
    path: JsonPointer


class TestOperation(msgspec.Struct, tag_field="op", tag="test"):
    path: JsonPointer
    value: Any


JsonPatch = Annotated[
    list[
        AddOperation
        | RemoveOperation
        | ReplaceOperation
        | MoveOperation
        | CopyOperation
        | TestOperation
    ],
    msgspec.Meta(description="RFC 6902 JSON Patch."),
]


class ChangeEvent(msgspec.Struct, omit_defaults=True):
    """The `data` of one event of a change stream."""

    token: Annotated[
        Token | None, msgspec.Meta(description="None on a session's own `expired` event.")
    ]
    version: Annotated[int, msgspec.Meta(ge=0)]
    session: Token | None
    data: Annotated[
        Any,
        msgspec.Meta(
            description="With `?include=data`, on `created` and `updated`: the document as read"
            " when the event is sent (so possibly a newer version than the event's). With"
            " `?include=patch`, on `created`: the document at version 1."
        ),
    ] = msgspec.UNSET
    patch: (
        Annotated[
            JsonPatch,
            msgspec.Meta(
                description="With `?include=patch`, on `updated`: the JSON Patch (RFC 6902) that"
                " made this version from the previous one; applied in order, the events keep a"
                " copy current."
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    resync: Annotated[
        bool | msgspec.UnsetType,
        msgspec.Meta(
            description="With `?include=patch`, on `created` or `updated`, true when the event"
            " cannot carry what makes its version (the context has moved on since): a"
            " subscriber that keeps a copy must read the context again."
        ),
    ] = msgspec.UNSET


def invalid(what: str, exc: msgspec.ValidationError) -> BadRequest:
    """The 400 for a body of the right JSON but the wrong shape; a bad ttl says the ttl rule."""
    message = str(exc)
    if message.startswith(TTL_RULE):
        return BadRequest(TTL_RULE)
    return BadRequest(f"{what}: {message}")
