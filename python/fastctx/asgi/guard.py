"""Load shedding: a bound on the requests one worker holds at once, refused past it at once.

A worker that takes every request it is sent only queues them: when they arrive faster than
it can answer, each waits longer than the last and clients time out on answers that were
computed anyway. Past `limit` requests in flight, a new one is answered 503 with Retry-After
before anything is done for it (no auth, no body read, no backend call), so the requests
already admitted keep their latency and clients learn at once to back off or try another node.

Probes (/healthz, /readyz, /metrics) are never shed: an orchestrator must still see the
node. Event streams are not counted: they hold a connection while they wait, not work. A
request to /mcp that turns into one (subscriptions/listen) gives its slot back when its
stream starts. Streams have a bound of their own (`StreamLimit`).
"""

from __future__ import annotations

from starlette.types import Send

from fastctx.asgi.problems import PROBLEM_JSON, problem
from fastctx.errors import Unavailable

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
# Seconds a client refused a stream is told to wait: streams end slowly, so a second is too soon.
STREAM_RETRY_AFTER = 5


def _shed_response() -> tuple[list[tuple[bytes, bytes]], bytes]:
    headers, body = problem(
        Unavailable("the server has more requests in flight than it serves in time; retry")
    )
    framing = [(b"content-type", PROBLEM_JSON), (b"content-length", b"%d" % len(body))]
    return headers + framing, body


_HEADERS, _BODY = _shed_response()


class Guard:
    """Counts the requests in flight on this worker; `limit` 0 means no bound."""

    __slots__ = ("inflight", "limit", "shed")

    def __init__(self, limit: int) -> None:
        self.limit = limit or 1 << 62
        self.inflight = 0
        self.shed = 0  # requests refused since start, for /metrics

    @staticmethod
    def counts(path: str, method: str) -> bool:
        """Whether a request takes a slot: probes and event streams do not."""
        if path in PROBES:
            return False
        return not (method == "GET" and (path.endswith("/events") or path == "/mcp"))

    async def refuse(self, send: Send) -> int:
        # The body, if any, is left unread: reading it is work. The server drops what is left
        # of it (a large one may cost the client its connection, after the 503 went out).
        self.shed += 1
        await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _BODY})
        return 503


class StreamLimit:
    """Bounds the event streams (SSE, MCP) one worker holds open; `limit` 0 means no bound.

    Guard does not count streams, since they wait rather than work, but each holds a connection
    and about 20 KiB for as long as its client listens. Past the limit a new one is refused
    with 503 and Retry-After before anything is done for it; the client retries later, or on
    another node.
    """

    __slots__ = ("limit", "open", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit or 1 << 62
        self.open = 0
        self.refused = 0  # streams refused since start, for /metrics

    # `with limit:` holds one slot for the block. The object is its own context manager, so
    # that an idle stream keeps no generator or wrapper alive for as long as it lasts.
    def __enter__(self) -> None:
        if self.open >= self.limit:
            self.refused += 1
            raise Unavailable(
                "this server holds as many event streams as it may; retry later",
                retry_after=STREAM_RETRY_AFTER,
            )
        self.open += 1

    def __exit__(self, *exc_info: object) -> None:
        self.open -= 1
