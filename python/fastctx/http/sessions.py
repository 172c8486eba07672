"""REST endpoints for sessions: /v1/sessions and /v1/sessions/{id}."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastctx.clock import rfc3339
from fastctx.errors import BadRequest
from fastctx.http.body import JSON, decode_json, read_body, require_media_type
from fastctx.http.responses import json_response
from fastctx.http.state import sessions, settings, tenant
from fastctx.registry import MAX_TTL_SECONDS


class SessionCreate(msgspec.Struct):
    ttl: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_SECONDS)] | None = None
    meta: dict[str, Any] | None = None


_SESSION_CREATE = msgspec.json.Decoder(SessionCreate)


async def create(request: Request) -> Response:
    body = b""
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        require_media_type(request.headers.get("content-type"), JSON)
        body = await read_body(
            request.receive,
            request.headers.get("content-length"),
            settings(request).max_context_bytes,
            settings(request).body_timeout,
        )
    spec = SessionCreate()
    if body.strip():
        try:
            spec = decode_json(body, _SESSION_CREATE)
        except msgspec.ValidationError as exc:
            raise BadRequest(
                f'the body must be {{"ttl": seconds, "meta": {{...}}}}, both optional: {exc}'
            ) from None
    meta = msgspec.json.encode(spec.meta or {})
    session, expires_at = await sessions(request).create(tenant(request), spec.ttl, meta)
    return json_response(
        {"session": session, "expires_at": rfc3339(expires_at)},
        201,
        {"Location": f"/v1/sessions/{session}"},
    )


async def read(request: Request) -> Response:
    view = await sessions(request).get(tenant(request), request.path_params["session"])
    return json_response(
        {
            "session": view.session,
            "created_at": rfc3339(view.created_at),
            "expires_at": rfc3339(view.expires_at),
            "meta": msgspec.Raw(view.meta),
            "contexts": view.contexts,
        }
    )


async def delete(request: Request) -> Response:
    await sessions(request).delete(tenant(request), request.path_params["session"])
    return Response(status_code=204)


routes = [
    Route("/v1/sessions", create, methods=["POST"]),
    Route("/v1/sessions/{session}", read, methods=["GET"]),
    Route("/v1/sessions/{session}", delete, methods=["DELETE"]),
]
