"""REST endpoints for contexts: /v1/contexts and /v1/contexts/{token}[/meta]."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fastctx.backends import context_id
from fastctx.clock import rfc3339
from fastctx.errors import BadRequest, FastctxError, PayloadTooLarge, UnsupportedMediaType
from fastctx.http.body import JSON, JSON_PATCH, MERGE_PATCH, read_body, require_media_type
from fastctx.http.metrics import RequestStats
from fastctx.http.preconditions import etag, expected_version, none_match
from fastctx.http.problems import send_problem
from fastctx.http.state import TENANT_SCOPE_KEY, registry, settings, tenant
from fastctx.registry import MAX_TTL_SECONDS, PatchKind, Registry

MGET_LIMIT = 1000
_encode = msgspec.json.Encoder().encode
_PATCH_KINDS: dict[str, PatchKind] = {MERGE_PATCH: "merge", JSON_PATCH: "json"}


class MgetRequest(msgspec.Struct):
    tokens: list[str]


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encode(content), status, headers=headers, media_type=JSON)


def _ttl(request: Request) -> int | None:
    raw = request.query_params.get("ttl")
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TTL_SECONDS:
        raise BadRequest(f"ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}")
    return int(raw)


def _bypasses_cache(cache_control: bytes) -> bool:
    directives = cache_control.lower().replace(b" ", b"").split(b",")
    return b"no-cache" in directives or b"max-age=0" in directives


async def create(request: Request) -> Response:
    require_media_type(request, JSON)
    ttl = _ttl(request)
    document = await read_body(request, settings(request).max_context_bytes)
    created = await registry(request).create(
        tenant(request), document, ttl, request.query_params.get("session")
    )
    return json_response(
        {"token": created.token, "version": 1, "expires_at": rfc3339(created.expires_at)},
        201,
        {"Location": f"/v1/contexts/{created.token}", "ETag": etag(1)},
    )


class ReadContext:
    """GET and HEAD /v1/contexts/{token} as a bare ASGI app: the hottest route, kept short.

    A cache hit sends the stored bytes with no JSON work and no Request object. `Front` calls
    `respond` directly; as a Starlette route it serves the same way.
    """

    def __init__(self, registry: Registry, stats: RequestStats) -> None:
        self.registry = registry
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.respond(scope, send, scope[TENANT_SCOPE_KEY], scope["path_params"]["token"])

    async def respond(self, scope: Scope, send: Send, tenant: str, token: str) -> int:
        """Send the response; returns its status."""
        fresh = False
        if_none_match = None
        for name, value in scope["headers"]:
            if name == b"cache-control":
                fresh = _bypasses_cache(value)
            elif name == b"if-none-match":
                if_none_match = value
        entry = None if fresh else self.registry.fresh(context_id(tenant, token))
        if entry is not None:
            payload, version, state = entry[0], entry[1], "hit"
        else:
            try:
                found = await self.registry.read(tenant, token, fresh=fresh)
            except FastctxError as error:
                await send_problem(send, error)
                return error.status
            payload, version, state = found.payload, found.version, found.cache
        self.stats.reads[state] += 1
        headers = [(b"etag", b'"%d"' % version), (b"x-cache", state.encode())]
        if if_none_match is not None and none_match(if_none_match.decode("latin-1"), version):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return 304
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else payload
        await send({"type": "http.response.body", "body": body})
        return 200


async def replace(request: Request) -> Response:
    require_media_type(request, JSON)
    token = request.path_params["token"]
    if_version = expected_version(request.headers)
    document = await read_body(request, settings(request).max_context_bytes)
    version = await registry(request).replace(tenant(request), token, document, if_version)
    return json_response({"token": token, "version": version}, headers={"ETag": etag(version)})


async def patch(request: Request) -> Response:
    try:
        kind = _PATCH_KINDS[require_media_type(request, MERGE_PATCH, JSON_PATCH)]
    except UnsupportedMediaType as exc:
        exc.headers["Accept-Patch"] = f"{MERGE_PATCH}, {JSON_PATCH}"
        raise
    token = request.path_params["token"]
    if_version = expected_version(request.headers)
    body = await read_body(request, settings(request).max_context_bytes)
    version = await registry(request).patch(tenant(request), token, body, kind, if_version)
    return json_response({"token": token, "version": version}, headers={"ETag": etag(version)})


async def delete(request: Request) -> Response:
    if_version = expected_version(request.headers)
    await registry(request).delete(tenant(request), request.path_params["token"], if_version)
    return Response(status_code=204)


async def meta(request: Request) -> Response:
    found = await registry(request).meta(tenant(request), request.path_params["token"])
    return json_response(
        {
            "token": found.token,
            "version": found.version,
            "size": found.size,
            "stored_size": found.stored_size,
            "created_at": rfc3339(found.created_at),
            "updated_at": rfc3339(found.updated_at),
            "expires_at": rfc3339(found.expires_at),
            "session": found.session,
        },
        headers={"ETag": etag(found.version)},
    )


async def mget(request: Request) -> Response:
    require_media_type(request, JSON)
    body = await read_body(request, settings(request).max_context_bytes)
    try:
        tokens = msgspec.json.decode(body, type=MgetRequest).tokens
    except msgspec.ValidationError as exc:
        raise BadRequest(f'the body must be {{"tokens": [string, ...]}}: {exc}') from None
    if len(tokens) > MGET_LIMIT:
        raise PayloadTooLarge(f"at most {MGET_LIMIT} tokens per request")
    items = await registry(request).mget(tenant(request), tokens)
    # The stored documents are spliced in as they are: no decode, no re-encode.
    parts = [
        b"null"
        if item is None
        else b'{"token":%s,"version":%d,"data":%s}' % (_encode(token), item[1], item[0])
        for token, item in zip(tokens, items, strict=True)
    ]
    return Response(b'{"items":[' + b",".join(parts) + b"]}", media_type=JSON)


def routes(read: ReadContext) -> list[Route]:
    return [
        Route("/v1/contexts", create, methods=["POST"]),
        Route("/v1/contexts/mget", mget, methods=["POST"]),
        Route("/v1/contexts/{token}", read, methods=["GET", "HEAD"]),
        Route("/v1/contexts/{token}", replace, methods=["PUT"]),
        Route("/v1/contexts/{token}", patch, methods=["PATCH"]),
        Route("/v1/contexts/{token}", delete, methods=["DELETE"]),
        Route("/v1/contexts/{token}/meta", meta, methods=["GET"]),
    ]
