"""The floors of the HTTP benchmark: the cheapest apps granian can serve, to measure against."""

from __future__ import annotations

import os
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastctx.backends.pipeline import Address, Pipeline

# About the size of a small fastctx answer, so the floors move a comparable number of bytes.
BODY = b'{"token":"0000000000000000000000","version":1}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
_START = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
_BODY = {"type": "http.response.body", "body": BODY}
_WITH_BODY = ("POST", "PUT", "PATCH")


async def _lifespan(receive: Any, send: Any, startup: Any = None, shutdown: Any = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                await startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(scope: dict[str, Any], receive: Any) -> bytes:
    # Any real app reads the body it is sent, and granian charges for that read: without it,
    # the POST floor would be a GET floor in disguise. It stops at the declared length, as
    # fastctx does (fastctx.asgi.body): granian follows the last chunk with an empty one,
    # and waiting for it costs about 8 us a request here, for nothing.
    declared = next((int(v) for k, v in scope["headers"] if k == b"content-length"), None)
    chunks, size = [], 0
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size == declared or not message.get("more_body", False):
            return b"".join(chunks)


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app: one constant answer to every request, no framework at all."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["method"] in _WITH_BODY:
        await _read_body(scope, receive)
    await send(_START)
    await send(_BODY)


class _BareRedis:
    """The bare app that also stores each body it reads in Redis (one SET with an expiry, over
    fastctx's own pipelined connection) before it answers: the least a create that is durable
    in Redis before its answer can cost, whatever else it does."""

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.prefix = f"floor:{secrets.token_hex(4)}:".encode()
        self.count = 0

    async def _open(self) -> None:
        self.pipeline = Pipeline(Address.from_url(os.environ["PEER_REDIS_URL"]))

    async def _close(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.close()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self._open, self._close)
            return
        if scope["method"] in _WITH_BODY:
            body = await _read_body(scope, receive)
            assert self.pipeline is not None
            self.count += 1
            await self.pipeline.execute(
                b"SET", b"%b%d" % (self.prefix, self.count), body, b"PX", 600_000
            )
        await send(_START)
        await send(_BODY)


bare_redis = _BareRedis()


async def _constant(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


# The same constant behind Starlette's routing and Request/Response, as fastctx's endpoints are.
starlette = Starlette(routes=[Route("/", _constant, methods=["GET"])])
