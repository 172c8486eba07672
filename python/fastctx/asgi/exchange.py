"""One request and its response at the ASGI level: what every route, REST or MCP, works with."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from fastctx.asgi.body import BODY_TIMEOUT_SECONDS, JSON, read_body
from fastctx.asgi.guard import Guard
from fastctx.asgi.problems import PROBLEM_JSON, problem
from fastctx.errors import BadRequest, FastctxError

Headers = list[tuple[bytes, bytes]]
EVENT_STREAM = b"text/event-stream"
# What an event stream's response carries besides its content type: no cache keeps it, and
# nginx does not hold events back.
STREAM_HEADERS: Headers = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_STREAM_HEAD: Headers = [(b"content-type", EVENT_STREAM), *STREAM_HEADERS]


class Exchange:
    __slots__ = (
        "_body_read",
        "_headers",
        "_query",
        "guard",
        "receive",
        "scope",
        "send",
        "started",
    )

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, guard: Guard | None = None
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.started = False
        # The Guard whose in-flight slot this request holds, until release() gives it back.
        self.guard = guard
        self._query: dict[str, str] | None = None
        self._headers: dict[bytes, bytes] | None = None
        self._body_read = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of a request header, by its lower-case name."""
        index = self._headers
        if index is None:
            # Built on the first lookup: cheaper than a scan per lookup from the second one on
            # (an MCP request looks up eight).
            index = self._headers = {}
            for key, value in self.scope["headers"]:
                index.setdefault(key, value)
        return index.get(name)

    def check_query(self, allowed: frozenset[str]) -> None:
        """Read the query string: 400 for a parameter the route does not take, or one given
        twice, so that a misspelt parameter never falls back to a default unnoticed."""
        query: dict[str, str] = {}
        raw: bytes = self.scope["query_string"]
        for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if key not in allowed:
                takes = ", ".join(sorted(allowed)) or "none"
                raise BadRequest(f"unknown query parameter {key[:40]!r} (this route takes {takes})")
            if key in query:
                raise BadRequest(f"query parameter {key!r} is given more than once")
            query[key] = value
        self._query = query

    def query(self, name: str) -> str | None:
        """A query parameter the route takes (see check_query), or None when it is not given."""
        query = self._query
        return None if query is None else query.get(name)

    def accepts(self, media_type: bytes) -> bool:
        """Whether the Accept header names `media_type` (lower case: media types are not)."""
        return media_type in (self.header(b"accept") or b"").lower()

    async def body(self, limit: int, seconds: float = BODY_TIMEOUT_SECONDS) -> bytes:
        body = await read_body(self.receive, self.header(b"content-length"), limit, seconds)
        self._body_read = True
        return body

    def _body_unread(self) -> bool:
        """Whether the request carries a body that was not read (whole)."""
        if self._body_read:
            return False
        length = self.header(b"content-length")
        return (length is not None and length != b"0") or self.header(
            b"transfer-encoding"
        ) is not None

    async def until_disconnect(self, then: Callable[[], object]) -> None:
        """Wait for the client to leave (what else it sends is dropped), then call `then`: what
        an event stream's watcher task runs."""
        while (await self.receive())["type"] != "http.disconnect":
            pass
        then()

    def release(self) -> None:
        """Give back the request's in-flight slot, if it holds one; only the first call counts."""
        guard = self.guard
        if guard is not None:
            self.guard = None
            guard.inflight -= 1

    async def start_stream(self) -> None:
        """Send the head of an event stream's response (200, text/event-stream).

        From here on the request waits rather than works, so an in-flight slot it holds (a POST
        to /mcp that became subscriptions/listen) goes back to the Guard; the StreamLimit the
        stream entered before counts it instead.
        """
        self.release()
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEAD})

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        headers: Headers | None = None,
        content_type: bytes = JSON.encode(),
    ) -> int:
        """Send a whole response (for HEAD, its headers only); returns its status."""
        headers = headers or []
        if status >= 400 and self._body_unread():
            # Refused before its body was read (or while reading it): the server will not read
            # the rest to reuse the connection, so the client is told not to send another
            # request on it, rather than find it closed under that request.
            headers.append((b"connection", b"close"))
        if status not in (204, 304):
            headers += [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        if self.scope["method"] == "HEAD":
            body = b""
        await self.send({"type": "http.response.body", "body": body})
        return status

    async def fail(self, error: FastctxError) -> int:
        headers, body = problem(error)
        return await self.respond(error.status, body, headers, PROBLEM_JSON)
