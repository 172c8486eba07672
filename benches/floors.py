"""The floors of the HTTP benchmark: the cheapest apps granian can serve, to measure against."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# About the size of a small fastctx answer, so the floors move a comparable number of bytes.
BODY = b'{"token":"0000000000000000000000","version":1}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
_START = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
_BODY = {"type": "http.response.body", "body": BODY}
_WITH_BODY = ("POST", "PUT", "PATCH")


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI app: one constant answer to every request, no framework at all."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] in _WITH_BODY:
        # Any real app reads the body it is sent, and granian charges for that read: without
        # it, the POST floor would be a GET floor in disguise.
        more_body = True
        while more_body:
            more_body = (await receive()).get("more_body", False)
    await send(_START)
    await send(_BODY)


async def _constant(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


# The same constant behind Starlette's routing and Request/Response, as fastctx's endpoints are.
starlette = Starlette(routes=[Route("/", _constant, methods=["GET"])])
