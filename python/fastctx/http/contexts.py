"""REST endpoints for contexts: /v1/contexts[/mget] and /v1/contexts/{token}[/meta|/append].

These are the hot routes: bare ASGI handlers, as every route is, that `Front` finds by path
shape and method; a cache hit sends the stored bytes with no JSON work at all.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from fastctx import _core
from fastctx.asgi.body import JSON, JSON_PATCH, MERGE_PATCH, decode_json, require_media_type
from fastctx.asgi.exchange import Exchange
from fastctx.asgi.problems import as_problem, problem
from fastctx.asgi.responses import encode
from fastctx.asgi.selection import Selection, pointer, selection
from fastctx.asgi.shapes import MGET_LIMIT, Meta, MgetRequest, invalid, ttl_seconds
from fastctx.backends import context_id
from fastctx.clock import rfc3339
from fastctx.config import Settings
from fastctx.deltas import Document, document_bytes
from fastctx.errors import (
    BadRequest,
    InvalidPatch,
    MalformedJson,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from fastctx.http.metrics import RequestStats
from fastctx.http.preconditions import expected_version, none_match
from fastctx.http.routes import NO_PARAMETERS, Found, Handler
from fastctx.registry import PatchKind, Registry

PREFIX = "/v1/contexts/"
_PATCH_KINDS: dict[str, PatchKind] = {MERGE_PATCH: "merge", JSON_PATCH: "json"}
_ACCEPT_PATCH = f"{MERGE_PATCH}, {JSON_PATCH}"
_JSON = JSON.encode()
_CACHE_STATES = {state: state.encode() for state in ("hit", "miss", "stale")}

_CREATE_PARAMETERS = frozenset({"ttl", "session"})
# What a read may ask for besides the whole current document. The route of a context takes
# them for its GET and HEAD; its writes check that they are given none (`_no_query`).
_READ_PARAMETERS = frozenset({"path", "slice"})
_ITEM_PARAMETERS = _READ_PARAMETERS | {"version"}
_APPEND_PARAMETERS = frozenset({"path"})
_MGET = msgspec.json.Decoder(MgetRequest)
# The items of an append, each kept as written: they go into the patch as they came.
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
# How msgspec words MgetRequest's bound on tokens: more of them is 413, not a malformed body.
_TOO_MANY = f"Expected `array` of length <= {MGET_LIMIT}"
_JSON_KINDS = {b"{": "an object", b'"': "a string", b"t": "true", b"f": "false", b"n": "null"}


def _require_document(body: bytes) -> bytes:
    """A body that holds something: an empty one gets a problem that says so, not a parser's
    complaint about the end of its input."""
    if not body or body.isspace():
        raise MalformedJson("the body is empty; send a JSON document")
    return body


def _json_patch(body: bytes) -> bytes:
    """A JSON Patch body; one that is not an array is told so in words (422, as any patch that
    cannot be applied), once it is known to be JSON at all."""
    if body[:1] == b"[":
        return body
    start = body.lstrip()[:1]
    if start != b"[":
        _core.validate_json(body)  # malformed JSON is a 400, as for any body
        kind = _JSON_KINDS.get(start, "a number")
        raise InvalidPatch(f"a JSON Patch is an array of operations; this body is {kind}")
    return body


class ReadQuery(NamedTuple):
    """What a read's query asks for besides the whole current document, read before anything
    is looked up: a malformed parameter is a 400 whatever the token."""

    selection: Selection | None = None
    #: An earlier version, while the context's log keeps it (see Registry.read_version).
    version: int | None = None

    @classmethod
    def of(cls, ex: Exchange) -> ReadQuery:
        if not ex.scope["query_string"]:
            return _WHOLE
        version = ex.query("version")
        return cls(
            selection(ex.query("path"), ex.query("slice")),
            None if version is None else _version(version),
        )


def _version(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) < 1:
        raise BadRequest(f"version must be a version number (1 or more); got {text[:40]!r}")
    return int(text)


_WHOLE = ReadQuery()


def _no_query(ex: Exchange) -> None:
    """The writes to a context take none of its reads' query parameters: 400 for any given."""
    if ex.scope["query_string"]:
        ex.check_query(NO_PARAMETERS)


def _item_error(exc: Exception) -> bytes:
    """The problem an mget item answers with in place of its data."""
    error = as_problem(exc)
    assert error is not None  # only a pointer's or a slice's errors come here
    return problem(error)[1]


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
        self._append: dict[str, Handler] = {"POST": self.append}

    def route(self, path: str) -> Found | None:
        """(route template, handlers by method, token, query parameters) for a context path;
        None for others."""
        if path == "/v1/contexts":
            return "/v1/contexts", self._collection, "", _CREATE_PARAMETERS
        if not path.startswith(PREFIX):
            return None
        rest = path[len(PREFIX) :]
        if rest == "mget":
            return "/v1/contexts/mget", self._mget, "", _READ_PARAMETERS
        token, slash, tail = rest.partition("/")
        if not slash:
            return "/v1/contexts/{token}", self._item, token, _ITEM_PARAMETERS
        if tail == "meta":
            return "/v1/contexts/{token}/meta", self._meta, token, NO_PARAMETERS
        if tail == "append":
            return "/v1/contexts/{token}/append", self._append, token, _APPEND_PARAMETERS
        return None

    async def create(self, ex: Exchange, tenant: str, _: str) -> int:
        require_media_type(ex.header(b"content-type"), JSON)
        ttl = ttl_seconds(ex.query("ttl"))
        document = _require_document(await ex.body(self.max_bytes, self.body_timeout))
        created = await self.registry.create(tenant, document, ttl, ex.query("session"))
        token = created.token.encode()
        body = b'{"token":"%s","version":1,"expires_at":"%s"}' % (
            token,
            rfc3339(created.expires_at).encode(),
        )
        headers = [(b"location", PREFIX.encode() + token), (b"etag", b'"1"')]
        return await ex.respond(201, body, headers)

    async def read(self, ex: Exchange, tenant: str, token: str) -> int:
        query = ReadQuery.of(ex)
        cache_control = if_none_match = None
        for name, value in ex.scope["headers"]:
            if name == b"cache-control":
                cache_control = value
            elif name == b"if-none-match":
                if_none_match = value
        fresh = cache_control is not None and _bypasses_cache(cache_control)
        entry = None
        if not fresh and query.version is None:
            entry = self.registry.fresh(context_id(tenant, token))
        document: Document
        if entry is not None:
            document, version, state = entry[0], entry[1], "hit"
        else:
            if query.version is not None:
                found = await self.registry.read_version(tenant, token, query.version)
            else:
                found = await self.registry.read(tenant, token, fresh=fresh)
            document, version, state = found.payload, found.version, found.cache
        self.stats.reads[state] += 1
        headers = [(b"etag", b'"%d"' % version), (b"x-cache", _CACHE_STATES[state])]
        if if_none_match is not None and none_match(if_none_match, version):
            return await ex.respond(304, headers=headers)
        if query.selection is not None:
            payload = query.selection.apply(document)  # its ETag is still the version's
        else:
            payload = document if type(document) is bytes else document_bytes(document)
        # The hottest response of all is sent here rather than through ex.respond: one
        # coroutine less per cached read.
        headers += [(b"content-type", _JSON), (b"content-length", b"%d" % len(payload))]
        ex.started = True
        await ex.send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if ex.scope["method"] == "HEAD" else payload
        await ex.send({"type": "http.response.body", "body": body})
        return 200

    async def replace(self, ex: Exchange, tenant: str, token: str) -> int:
        _no_query(ex)
        require_media_type(ex.header(b"content-type"), JSON)
        if_version = expected_version(ex.header(b"if-match"))
        document = _require_document(await ex.body(self.max_bytes, self.body_timeout))
        version = await self.registry.replace(tenant, token, document, if_version)
        return await ex.respond(200, *_written(token, version))

    async def patch(self, ex: Exchange, tenant: str, token: str) -> int:
        _no_query(ex)
        try:
            kind = _PATCH_KINDS[require_media_type(ex.header(b"content-type"), *_PATCH_KINDS)]
        except UnsupportedMediaType as exc:
            exc.headers["Accept-Patch"] = _ACCEPT_PATCH
            raise
        if_version = expected_version(ex.header(b"if-match"))
        patch = _require_document(await ex.body(self.max_bytes, self.body_timeout))
        if kind == "json":
            patch = _json_patch(patch)
        version = await self.registry.patch(tenant, token, patch, kind, if_version)
        return await ex.respond(200, *_written(token, version))

    async def delete(self, ex: Exchange, tenant: str, token: str) -> int:
        _no_query(ex)
        if_version = expected_version(ex.header(b"if-match"))
        await self.registry.delete(tenant, token, if_version)
        return await ex.respond(204)

    async def append(self, ex: Exchange, tenant: str, token: str) -> int:
        require_media_type(ex.header(b"content-type"), JSON)
        path = ex.query("path")
        if path is None:
            raise BadRequest(
                "say where to append: ?path= a JSON Pointer to the array (empty for the document)"
            )
        pointer(path)
        if_version = expected_version(ex.header(b"if-match"))
        body = _require_document(await ex.body(self.max_bytes, self.body_timeout))
        try:
            items = decode_json(body, _ITEMS)
        except msgspec.ValidationError:
            raise BadRequest("the body must be a JSON array of the items to append") from None
        version = await self.registry.append(
            tenant, token, path, [bytes(item) for item in items], if_version
        )
        return await ex.respond(200, *_written(token, version))

    async def meta(self, ex: Exchange, tenant: str, token: str) -> int:
        found = await self.registry.meta(tenant, token)
        body = encode(
            Meta(
                found.token,
                found.version,
                found.size,
                found.stored_size,
                rfc3339(found.created_at),
                rfc3339(found.updated_at),
                rfc3339(found.expires_at),
                found.session,
                found.oldest_version,
            )
        )
        return await ex.respond(200, body, [(b"etag", b'"%d"' % found.version)])

    async def mget(self, ex: Exchange, tenant: str, _: str) -> int:
        wanted = ReadQuery.of(ex).selection
        require_media_type(ex.header(b"content-type"), JSON)
        body = _require_document(await ex.body(self.max_bytes, self.body_timeout))
        try:
            tokens = decode_json(body, _MGET).tokens
        except msgspec.ValidationError as exc:
            if str(exc).startswith(_TOO_MANY):
                raise PayloadTooLarge(f"at most {MGET_LIMIT} tokens per request") from None
            raise invalid('the body must be {"tokens": [string, ...]}', exc) from None
        items = await self.registry.mget(tenant, tokens)
        # The stored documents (or the parts asked for) are spliced in as they are: no decode,
        # no re-encode.
        parts = []
        for token, item in zip(tokens, items, strict=True):
            if item is None:
                parts.append(b"null")
                continue
            document, version = item
            if wanted is not None:
                try:
                    document = wanted.apply(document)
                except (_core.PathNotFound, _core.SelectError) as exc:
                    error = _item_error(exc)
                    parts.append(
                        b'{"token":%s,"version":%d,"error":%s}' % (encode(token), version, error)
                    )
                    continue
            parts.append(
                b'{"token":%s,"version":%d,"data":%s}' % (encode(token), version, document)
            )
        return await ex.respond(200, b'{"items":[' + b",".join(parts) + b"]}")
