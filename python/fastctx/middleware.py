"""ContextMiddleware: loads the context a request's token names and propagates the token."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal
from urllib.parse import unquote

import httpx
import msgspec

from fastctx import _core
from fastctx.client.aio import AsyncClient
from fastctx.errors import BadGateway, BadRequest, FastctxError, NotFound, Unavailable
from fastctx.tracecontext import (
    current_trace_headers,
    incoming_trace_headers,
    reset_incoming,
    set_incoming,
)
from fastctx.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ContextMiddleware",
    "apropagate",
    "current_token",
    "propagate",
    "propagation_headers",
    "token_from_headers",
]

HEADER = "Context-Token"
BAGGAGE_KEY = "fastctx"
PROBLEM_JSON = "application/problem+json"

# A ContextVar, not request.state: code far from the request (an outgoing call in a helper,
# a task spawned by the handler) sees the token without it being passed down by hand.
_token: ContextVar[str | None] = ContextVar("fastctx_token", default=None)


def current_token() -> str | None:
    """The token of the request being served, or None outside one (or when it carried none)."""
    return _token.get()


def propagation_headers() -> dict[str, str]:
    """Headers that carry the current token, and the current trace (`traceparent`, see
    fastctx.tracecontext), to the next service; empty when there is neither."""
    headers = current_trace_headers()
    token = _token.get()
    if token is not None:
        headers[HEADER] = token
    return headers


def propagate(request: httpx.Request) -> None:
    """An httpx.Client request hook: `event_hooks={"request": [propagate]}`."""
    # An explicit header wins: the caller may deliberately hand on another context or trace.
    token = _token.get()
    if token is not None and HEADER not in request.headers:
        request.headers[HEADER] = token
    if "traceparent" not in request.headers:
        for name, value in current_trace_headers().items():
            request.headers.setdefault(name, value)


async def apropagate(request: httpx.Request) -> None:
    """The same hook for httpx.AsyncClient, whose hooks must be awaitable."""
    propagate(request)


def _baggage_token(values: list[str]) -> str | None:
    # W3C baggage: comma-separated `key=value;property...`, optional whitespace around each
    # part, values percent-encoded; several baggage headers form one list.
    for value in values:
        for member in value.split(","):
            key, sep, rest = member.partition("=")
            if sep and key.strip() == BAGGAGE_KEY:
                return unquote(rest.partition(";")[0].strip())
    return None


def token_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of raw ASGI headers: `Context-Token`, else the `fastctx` baggage member."""
    baggage: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"context-token":
            return value.decode("latin-1").strip()
        if lowered == b"baggage":
            baggage.append(value.decode("latin-1"))
    return _baggage_token(baggage)


class ContextMiddleware:
    """Loads the context of each HTTP request into `request.state.context`.

    The load is eager, before the app runs: whether the answer is 404, 400 or 503 must be
    known before the app starts its response, and a handler can then read a plain value
    rather than await one. A lazy load would only save the GET for handlers that never read
    the context; one GET to fastctx (measured: 0.7 ms per call, local server, memory backend) is
    small next to what a service that carries a context does with it.

    - no token: `context` is None, or 400 when `required`;
    - a malformed token: 400; an unknown one: 404, or `context` None when on_missing="ignore";
    - fastctx unreachable, timing out or answering 503: 503, with Retry-After (the caller may
      try again soon); any other failure of the load (a 5xx other than 503, an answer that is
      not fastctx's, a rejected api_key): 502 Bad Gateway.

    Errors are application/problem+json. Only "http" scopes are handled; others pass through.
    With `cache_size`, the client keeps the documents it loaded and revalidates them with
    If-None-Match: a context many requests carry is not sent again until it changes.
    """

    def __init__(
        self,
        app: ASGIApp,
        base_url: str,
        api_key: str | None = None,
        *,
        required: bool = False,
        on_missing: Literal["error", "ignore"] = "error",
        timeout: float = 5.0,
        retries: int = 3,
        cache_size: int = 0,
    ) -> None:
        self.app = app
        self.required = required
        self.on_missing = on_missing
        # Made here but connects only on first use, inside the server's event loop.
        self.client = AsyncClient(
            base_url, api_key, timeout=timeout, retries=retries, cache_size=cache_size
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = set_incoming(incoming_trace_headers(scope["headers"]))  # the load carries it
        try:
            await self._serve(scope, receive, send)
        finally:
            reset_incoming(trace)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = token_from_headers(scope["headers"])
        context: Any = None
        if token is None:
            if self.required:
                detail = f"a {HEADER} header (or a `{BAGGAGE_KEY}` baggage member) is required"
                await _problem(BadRequest(detail), send)
                return
        elif not _core.is_token(token):
            await _problem(BadRequest(f"malformed {HEADER}"), send)
            return
        else:
            try:
                context = await self.client.get(token)
            except NotFound:
                if self.on_missing != "ignore":
                    await _problem(NotFound(f"no context for token {token}"), send)
                    return
            except Unavailable as exc:
                await _problem(Unavailable(f"fastctx: {exc.detail}", exc.retry_after), send)
                return
            except FastctxError as exc:
                # e.g. a rejected api_key: the service's fault, not its caller's.
                await _problem(BadGateway(f"fastctx: {exc.detail}"), send)
                return
        scope.setdefault("state", {})["context"] = context
        reset = _token.set(token)
        try:
            await self.app(scope, receive, send)
        finally:
            _token.reset(reset)

    def _closing(self, send: Send) -> Send:
        async def closing(message: Message) -> None:
            # The pooled connections belong to the loop that is ending: close them with it.
            if message["type"] == "lifespan.shutdown.complete":
                await self.client.close()
            await send(message)

        return closing


async def _problem(error: FastctxError, send: Send) -> None:
    status = error.status
    body = msgspec.json.encode(
        {"type": error.type, "title": error.title, "status": status, "detail": error.detail}
    )
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", b"%d" % len(body))]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
