"""REST endpoints for contexts: /v1/contexts[/mget] and /v1/contexts/{token}[/meta].

These are the hot routes, so they are bare ASGI handlers that `Front` calls by path shape and
method, without Starlette's routing or a Request object: a cache hit sends the stored bytes
with no JSON work at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from fastctx.backends import context_id
from fastctx.clock import rfc3339
from fastctx.config import Settings
from fastctx.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from fastctx.http.body import (
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    decode_json,
    require_media_type,
    whole_number,
)
from fastctx.http.exchange import Exchange
from fastctx.http.metrics import RequestStats
from fastctx.http.preconditions import expected_version, none_match
from fastctx.http.responses import encode
from fastctx.registry import MAX_TTL_SECONDS, PatchKind, Registry

MGET_LIMIT = 1000
PREFIX = "/v1/contexts/"
_PATCH_KINDS: dict[str, PatchKind] = {MERGE_PATCH: "merge", JSON_PATCH: "json"}
_ACCEPT_PATCH = f"{MERGE_PATCH}, {JSON_PATCH}"
_JSON = JSON.encode()
_CACHE_STATES = {state: state.encode() for state in ("hit", "miss", "stale")}

Handler = Callable[[Exchange, str, str], Awaitable[int]]
"""(exchange, tenant, token) -> the status sent."""


class MgetRequest(msgspec.Struct):
    tokens: list[str]


_MGET = msgspec.json.Decoder(MgetRequest)


def _ttl(raw: str | None) -> int | None:
    if raw is None:
        return None
    ttl = whole_number(raw, max_digits=10)
    if ttl is None or not 1 <= ttl <= MAX_TTL_SECONDS:
        raise BadRequest(f"ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}")
    return ttl


def _bypasses_cache(cache_control: bytes) -> bool:
    directives = cache_control.lower().replace(b" ", b"").split(b",")
    return b"no-cache" in directives or b"max-age=0" in directives


def _written(token: str, version: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = b'{"token":"%s","version":%d}' % (token.encode(), version)
    return body, [(b"etag", b'"%d"' % version)]


class ContextRoutes:
    def __init__(self, registry: Registry, settings: Settings, stats: RequestStats) -> None:
        self.registry = registry
        self.max_bytes = settings.max_context_bytes
        self.body_timeout = settings.body_timeout
        self.stats = stats
        self._collection: dict[str, Handler] = {"POST": self.create}
        self._mget: dict[str, Handler] = {"POST": self.mget}
        self._item: dict[str, Handler] = {
            "GET": self.read,
            "HEAD": self.read,
            "PUT": self.replace,
            "PATCH": self.patch,
            "DELETE": self.delete,
        }
        self._meta: dict[str, Handler] = {"GET": self.meta, "HEAD": self.meta}

    def route(self, path: str) -> tuple[str, dict[str, Handler], str] | None:
        """(route template, handlers by method, token) for a context path; None for others."""
        if path == "/v1/contexts":
            return "/v1/contexts", self._collection, ""
        if not path.startswith(PREFIX):
            return None
        rest = path[len(PREFIX) :]
        if rest == "mget":
            return "/v1/contexts/mget", self._mget, ""
        token, slash, tail = rest.partition("/")
        if not slash:
            return "/v1/contexts/{token}", self._item, token
        if tail == "meta":
            return "/v1/contexts/{token}/meta", self._meta, token
        return None

    async def create(self, ex: Exchange, tenant: str, _: str) -> int:
        require_media_type(ex.header(b"content-type"), JSON)
        ttl = _ttl(ex.query("ttl"))
        document = await ex.body(self.max_bytes, self.body_timeout)
        created = await self.registry.create(tenant, document, ttl, ex.query("session"))
        token = created.token.encode()
        body = b'{"token":"%s","version":1,"expires_at":"%s"}' % (
            token,
            rfc3339(created.expires_at).encode(),
        )
        headers = [(b"location", PREFIX.encode() + token), (b"etag", b'"1"')]
        return await ex.respond(201, body, headers)

    async def read(self, ex: Exchange, tenant: str, token: str) -> int:
        cache_control = if_none_match = None
        for name, value in ex.scope["headers"]:
            if name == b"cache-control":
                cache_control = value
            elif name == b"if-none-match":
                if_none_match = value
        fresh = cache_control is not None and _bypasses_cache(cache_control)
        entry = None if fresh else self.registry.fresh(context_id(tenant, token))
        if entry is not None:
            payload, version, state = entry[0], entry[1], "hit"
        else:
            found = await self.registry.read(tenant, token, fresh=fresh)
            payload, version, state = found.payload, found.version, found.cache
        self.stats.reads[state] += 1
        headers = [(b"etag", b'"%d"' % version), (b"x-cache", _CACHE_STATES[state])]
        if if_none_match is not None and none_match(if_none_match, version):
            return await ex.respond(304, headers=headers)
        # The hottest response of all is sent here rather than through ex.respond: one
        # coroutine less per cached read.
        headers += [(b"content-type", _JSON), (b"content-length", b"%d" % len(payload))]
        ex.started = True
        await ex.send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if ex.scope["method"] == "HEAD" else payload
        await ex.send({"type": "http.response.body", "body": body})
        return 200

    async def replace(self, ex: Exchange, tenant: str, token: str) -> int:
        require_media_type(ex.header(b"content-type"), JSON)
        if_version = expected_version(ex.header(b"if-match"))
        document = await ex.body(self.max_bytes, self.body_timeout)
        version = await self.registry.replace(tenant, token, document, if_version)
        return await ex.respond(200, *_written(token, version))

    async def patch(self, ex: Exchange, tenant: str, token: str) -> int:
        try:
            kind = _PATCH_KINDS[require_media_type(ex.header(b"content-type"), *_PATCH_KINDS)]
        except UnsupportedMediaType as exc:
            exc.headers["Accept-Patch"] = _ACCEPT_PATCH
            raise
        if_version = expected_version(ex.header(b"if-match"))
        patch = await ex.body(self.max_bytes, self.body_timeout)
        version = await self.registry.patch(tenant, token, patch, kind, if_version)
        return await ex.respond(200, *_written(token, version))

    async def delete(self, ex: Exchange, tenant: str, token: str) -> int:
        if_version = expected_version(ex.header(b"if-match"))
        await self.registry.delete(tenant, token, if_version)
        return await ex.respond(204)

    async def meta(self, ex: Exchange, tenant: str, token: str) -> int:
        found = await self.registry.meta(tenant, token)
        body = encode(
            {
                "token": found.token,
                "version": found.version,
                "size": found.size,
                "stored_size": found.stored_size,
                "created_at": rfc3339(found.created_at),
                "updated_at": rfc3339(found.updated_at),
                "expires_at": rfc3339(found.expires_at),
                "session": found.session,
            }
        )
        return await ex.respond(200, body, [(b"etag", b'"%d"' % found.version)])

    async def mget(self, ex: Exchange, tenant: str, _: str) -> int:
        require_media_type(ex.header(b"content-type"), JSON)
        body = await ex.body(self.max_bytes, self.body_timeout)
        try:
            tokens = decode_json(body, _MGET).tokens
        except msgspec.ValidationError as exc:
            raise BadRequest(f'the body must be {{"tokens": [string, ...]}}: {exc}') from None
        if len(tokens) > MGET_LIMIT:
            raise PayloadTooLarge(f"at most {MGET_LIMIT} tokens per request")
        items = await self.registry.mget(tenant, tokens)
        # The stored documents are spliced in as they are: no decode, no re-encode.
        parts = [
            b"null"
            if item is None
            else b'{"token":%s,"version":%d,"data":%s}' % (encode(token), item[1], item[0])
            for token, item in zip(tokens, items, strict=True)
        ]
        return await ex.respond(200, b'{"items":[' + b",".join(parts) + b"]}")
