"""REST endpoints for contexts: /v1/contexts and /v1/contexts/{token}[/meta]."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastctx.clock import rfc3339
from fastctx.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from fastctx.http.body import JSON, JSON_PATCH, MERGE_PATCH, read_body, require_media_type
from fastctx.http.preconditions import etag, expected_version, none_match
from fastctx.http.state import registry, settings, tenant
from fastctx.registry import MAX_TTL_SECONDS, PatchKind

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


def _bypasses_cache(request: Request) -> bool:
    directives = request.headers.get("cache-control", "").lower().replace(" ", "").split(",")
    return "no-cache" in directives or "max-age=0" in directives


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


async def read(request: Request) -> Response:
    found = await registry(request).read(
        tenant(request), request.path_params["token"], fresh=_bypasses_cache(request)
    )
    headers = {"ETag": etag(found.version), "X-Cache": found.cache}
    if none_match(request.headers, found.version):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(found.payload))
        return Response(headers=headers, media_type=JSON)
    return Response(found.payload, headers=headers, media_type=JSON)


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


def _not_a_token(request: Request) -> Response:
    raise NotFound("no such context")


routes = [
    Route("/v1/contexts", create, methods=["POST"]),
    Route("/v1/contexts/mget", mget, methods=["POST"]),
    Route("/v1/contexts/{token}", read, methods=["GET", "HEAD"]),
    Route("/v1/contexts/{token}", replace, methods=["PUT"]),
    Route("/v1/contexts/{token}", patch, methods=["PATCH"]),
    Route("/v1/contexts/{token}", delete, methods=["DELETE"]),
    Route("/v1/contexts/{token}/meta", meta, methods=["GET"]),
]
