"""The one place where exceptions become RFC 9457 `application/problem+json` responses."""

from __future__ import annotations

import msgspec

from fastctx import _core
from fastctx.errors import BadRequest, FastctxError, InvalidPatch, MalformedJson, PathNotFound

PROBLEM_JSON = b"application/problem+json"


def problem(error: FastctxError) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers (the error's own; no framing) and the body of the problem `error` is."""
    body = msgspec.json.encode(
        {"type": error.type, "title": error.title, "status": error.status, "detail": error.detail}
    )
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in error.headers.items()
    ]
    return headers, body


def as_problem(exc: Exception) -> FastctxError | None:
    """The client error an exception stands for, or None for one that is the server's fault."""
    if isinstance(exc, FastctxError):
        return exc
    if isinstance(exc, _core.JsonError | msgspec.DecodeError):
        return MalformedJson(str(exc))
    if isinstance(exc, _core.PatchError):
        return InvalidPatch(str(exc))
    if isinstance(exc, _core.PathNotFound):
        return PathNotFound(str(exc))
    if isinstance(exc, _core.SelectError):
        return BadRequest(str(exc))
    return None
