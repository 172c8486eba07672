"""The one place where exceptions become RFC 9457 `application/problem+json` responses."""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ExceptionHandler

from fastctx import _core
from fastctx.errors import (
    BY_STATUS,
    FastctxError,
    InvalidPatch,
    MalformedJson,
)

logger = logging.getLogger("fastctx")
PROBLEM_JSON = "application/problem+json"


def problem(error: FastctxError) -> Response:
    body = msgspec.json.encode(
        {"type": error.type, "title": error.title, "status": error.status, "detail": error.detail}
    )
    return Response(body, error.status, headers=error.headers, media_type=PROBLEM_JSON)


async def _fastctx_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FastctxError)
    return problem(exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = BY_STATUS.get(exc.status_code, FastctxError)
    error = kind(exc.detail if isinstance(exc.detail, str) else "", dict(exc.headers or {}))
    if kind is FastctxError:
        # A status with no class of its own keeps its number; the slug says it is generic.
        return Response(
            msgspec.json.encode(
                {"type": "about:blank", "title": exc.detail, "status": exc.status_code}
            ),
            exc.status_code,
            headers=exc.headers,
            media_type=PROBLEM_JSON,
        )
    return problem(error)


def as_problem(exc: Exception) -> FastctxError | None:
    """The client error an exception stands for, or None for one that is the server's fault."""
    if isinstance(exc, FastctxError):
        return exc
    if isinstance(exc, _core.JsonError | msgspec.DecodeError):
        return MalformedJson(str(exc))
    if isinstance(exc, _core.PatchError):
        return InvalidPatch(str(exc))
    return None


async def _client_error(request: Request, exc: Exception) -> Response:
    error = as_problem(exc)
    assert error is not None
    return problem(error)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The route's template, not the path: paths carry session ids, which logs must not.
    found = request.scope.get("route")
    where = found.path if isinstance(found, Route) else "an unmatched path"
    logger.exception("unexpected error on %s %s", request.method, where)
    return problem(FastctxError("the server failed on this request; it has been logged"))


# Ordered from the most to the least specific; Starlette picks by the exception's MRO.
EXCEPTION_HANDLERS: dict[type[Exception], ExceptionHandler] = {
    FastctxError: _fastctx_error,
    HTTPException: _http_exception,
    _core.JsonError: _client_error,
    msgspec.DecodeError: _client_error,
    _core.PatchError: _client_error,
    Exception: _unexpected,
}
