"""Streamable HTTP at /mcp: POST, GET and DELETE, each request routed to its protocol era.

A request whose `MCP-Protocol-Version` names 2026-07-28 is self-contained (its envelope is in
`params._meta`); everything else belongs to the session era, where `initialize` opens a session
that lives in the backend, so any node can continue it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from fastctx import tracing
from fastctx.asgi.body import JSON, require_media_type
from fastctx.asgi.exchange import EVENT_STREAM, STREAM_HEADERS, Exchange, Headers
from fastctx.asgi.guard import StreamLimit
from fastctx.clock import now_ms
from fastctx.config import Settings
from fastctx.errors import BadRequest
from fastctx.mcp import jsonrpc
from fastctx.mcp.jsonrpc import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    UNSUPPORTED_PROTOCOL_VERSION,
    Era,
    Message,
    RpcError,
)
from fastctx.mcp.notifications import Notifications, priming_event, resume_point
from fastctx.mcp.protocol import (
    HANDSHAKE_VERSIONS,
    META_CLIENT_CAPABILITIES,
    META_PROTOCOL_VERSION,
    MODERN_VERSIONS,
    PRIMING_VERSION,
    SUPPORTED_VERSIONS,
    Methods,
    SessionRecord,
)
from fastctx.mcp.tools import PARAM_HEADERS, Tools
from fastctx.oauth import (
    ANY_SCOPE,
    GRANT_SCOPE_KEY,
    READ_SCOPE,
    WRITE_SCOPE,
    require_scope,
)
from fastctx.registry import Registry
from fastctx.sessions import SessionManager
from fastctx.streams import ChangeStream

# Room for the JSON-RPC envelope around a context of the largest allowed size.
ENVELOPE_BYTES = 64 * 1024
ALLOWED_METHODS = "GET, POST, DELETE"
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
# Methods whose 2026-07-28 Mcp-Name header mirrors this member of params.
_NAMED = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}
# 2026-07-28 sends JSON-RPC errors with an HTTP status of their own.
_MODERN_STATUS = {METHOD_NOT_FOUND: 404}
_record_decoder = msgspec.json.Decoder(SessionRecord)
_SUBSCRIPTION_METHODS = ("resources/subscribe", "resources/unsubscribe")
# What an access token must grant for each request (API keys grant everything): reading a
# context or following its changes needs contexts:read, a tool that writes contexts:write, and
# what reads no context (initialize, tools/list, ping, ...) either.
_READING_METHODS = frozenset({"resources/read", "subscriptions/listen", *_SUBSCRIPTION_METHODS})
_READING_TOOLS = frozenset({"context_get", "session_get"})
# What an Mcp-Param-* value may hold as it is (RFC 9110 field value characters).
_FIELD_VALUE = re.compile(rb"[\x20-\x7e\t]*")
_INTEGER = re.compile(r"-?[0-9]+(\.0+)?")


def _header_value(raw: bytes | None) -> str | None:
    """A header as text; 2026-07-28 wraps values that are not plain ASCII as =?base64?...?=."""
    if raw is None:
        return None
    text = raw.decode("latin-1")
    if raw.startswith(b"=?base64?") and raw.endswith(b"?="):
        try:
            return base64.b64decode(text[9:-2], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    return text


class Origins:
    """Which browser origins may use /mcp: loopback ones, and those FASTCTX_MCP_ORIGINS names.

    Browsers send Origin; a page elsewhere (or a DNS-rebound name) must not reach /mcp.
    """

    def __init__(self, allowed: str) -> None:
        names = {item.strip().rstrip("/").lower() for item in allowed.split(",") if item.strip()}
        self.any = "*" in names
        self.names = frozenset(names)

    def allow(self, origin: bytes | None) -> bool:
        if origin is None or self.any:
            return True
        text = origin.decode("latin-1").strip().rstrip("/").lower()
        if text in self.names:
            return True
        try:
            return urlsplit(text).hostname in _LOOPBACK
        except ValueError:  # not a URL (e.g. an unclosed "["), so not a loopback origin
            return False


class McpEndpoint:
    def __init__(
        self,
        registry: Registry,
        sessions: SessionManager,
        settings: Settings,
        changes: ChangeStream,
        streams: StreamLimit | None = None,
    ) -> None:
        self.sessions = sessions
        self.streams = streams or StreamLimit(0)
        self.methods = Methods(Tools(registry, sessions))
        self.max_bytes = settings.max_context_bytes + ENVELOPE_BYTES
        self.body_timeout = settings.body_timeout
        self.origins = Origins(settings.mcp_origins)
        # A session no request has used for this long is gone (every request slides it).
        self.idle_ms = settings.mcp_session_idle * 1000
        self.notifications = Notifications(registry, sessions, changes, self.idle_ms)

    async def __call__(self, ex: Exchange, tenant: str) -> int:
        """Answer one request to /mcp; returns the HTTP status sent."""
        method = ex.scope["method"]
        try:
            if not self.origins.allow(ex.header(b"origin")):
                raise RpcError(INVALID_REQUEST, "this Origin may not use /mcp", status=403)
            if ex.scope["query_string"]:
                _no_query(ex)
            if method == "POST":
                return await self._post(ex, tenant)
            if method == "GET":
                return await self._get(ex, tenant)
            if method == "DELETE":
                return await self._delete(ex, tenant)
            raise RpcError(INVALID_REQUEST, f"use {ALLOWED_METHODS}", status=405)
        except RpcError as exc:
            headers = [(b"allow", ALLOWED_METHODS.encode())] if exc.status == 405 else []
            return await ex.respond(exc.status, jsonrpc.error(None, exc), headers)

    async def _session(self, ex: Exchange, tenant: str) -> tuple[str, SessionRecord]:
        """The request's session and its record (now used, so it lives on): 400 or 404."""
        raw = ex.header(b"mcp-session-id")
        if raw is None:
            if ex.header(b"mcp-protocol-version") is None:
                raise RpcError(
                    INVALID_REQUEST,
                    "send MCP-Protocol-Version: 2026-07-28, or the Mcp-Session-Id of a session "
                    "opened with initialize",
                    status=400,
                )
            raise RpcError(INVALID_REQUEST, "missing Mcp-Session-Id header", status=400)
        session = raw.decode("latin-1")
        record = await self.sessions.use_mcp(tenant, session, self.idle_ms)
        if record is None:
            raise RpcError(INVALID_REQUEST, "no such session: initialize again", status=404)
        decoded = _record_decoder.decode(record)
        if decoded.subscribed:
            # What it subscribed to lives as long as the session does.
            await self.sessions.keep_mcp(tenant, session, self.idle_ms)
        return session, decoded

    async def _delete(self, ex: Exchange, tenant: str) -> int:
        """End the session; on every node at once, since it lives in the backend."""
        require_scope(ex.scope.get(GRANT_SCOPE_KEY), ANY_SCOPE)
        session, _ = await self._session(ex, tenant)
        if not await self.sessions.end_mcp(tenant, session):
            raise RpcError(INVALID_REQUEST, "no such session", status=404)
        return await ex.respond(204)

    async def _post(self, ex: Exchange, tenant: str) -> int:
        accept = (ex.header(b"accept") or b"*/*").lower()
        wants_json = b"application/json" in accept or b"*/*" in accept
        if not wants_json and EVENT_STREAM not in accept:
            raise RpcError(
                INVALID_REQUEST, "accept application/json or text/event-stream", status=406
            )
        require_media_type(ex.header(b"content-type"), JSON)
        message = jsonrpc.decode(await ex.body(self.max_bytes, self.body_timeout))
        grant = ex.scope.get(GRANT_SCOPE_KEY)
        if grant is not None:  # an access token, not an API key: its scopes bound it
            require_scope(grant, _scope_needed(message))
        version = ex.header(b"mcp-protocol-version")
        if message.method == "initialize":
            return await self._initialize(ex, tenant, message, wants_json)
        if version is not None and version.decode("latin-1") in MODERN_VERSIONS:
            return await self._modern(ex, tenant, message, wants_json)
        if version is not None and version.decode("latin-1") not in HANDSHAKE_VERSIONS:
            requested = version.decode("latin-1")
            raise RpcError(
                UNSUPPORTED_PROTOCOL_VERSION,
                f"unsupported MCP-Protocol-Version {requested!r}",
                {"supported": list(SUPPORTED_VERSIONS), "requested": requested},
                status=400,
            )
        session, record = await self._session(ex, tenant)
        if isinstance(message.id, msgspec.UnsetType) or isinstance(
            message.method, msgspec.UnsetType
        ):
            return await ex.respond(202)  # a notification, or a response to us: accepted
        primed = session if _primes(record.version) else None
        if message.method in _SUBSCRIPTION_METHODS:
            return await self._subscription(
                ex, tenant, session, record, message, wants_json, primed
            )
        return await self._answer(ex, tenant, message, "session", wants_json, primed)

    async def _subscription(
        self,
        ex: Exchange,
        tenant: str,
        session: str,
        record: SessionRecord,
        message: Message,
        wants_json: bool,
        primed: str | None,
    ) -> int:
        """resources/subscribe and resources/unsubscribe: they change the session."""
        params = message.params if isinstance(message.params, dict) else {}
        try:
            if message.params is not msgspec.UNSET and not isinstance(message.params, dict):
                raise RpcError(INVALID_PARAMS, "params must be an object")
            if message.method == "resources/unsubscribe":
                await self.notifications.unsubscribe(tenant, session, params.get("uri"))
            else:
                record.subscribed = True
                encoded = jsonrpc.encode(record)
                uri = params.get("uri")
                if not await self.notifications.subscribe(tenant, session, encoded, uri):
                    raise RpcError(INVALID_REQUEST, "no such session: initialize again", status=404)
        except RpcError as exc:
            if exc.status != 200:
                raise
            error = jsonrpc.error(message.id, exc)
            return await self._reply(ex, error, 200, wants_json, primed=primed)
        result = jsonrpc.result(message.id, {})
        return await self._reply(ex, result, 200, wants_json, primed=primed)

    async def _initialize(
        self, ex: Exchange, tenant: str, message: Message, wants_json: bool
    ) -> int:
        if isinstance(message.id, msgspec.UnsetType):
            raise RpcError(INVALID_REQUEST, "initialize is a request: give it an id", status=400)
        try:
            version, result = self.methods.initialize(message.params)
        except RpcError as exc:
            return await self._reply(ex, jsonrpc.error(message.id, exc), 200, wants_json)
        params = message.params if isinstance(message.params, dict) else {}
        record = SessionRecord(
            version, now_ms(), params.get("clientInfo"), params.get("capabilities")
        )
        session = await self.sessions.open_mcp(tenant, jsonrpc.encode(record), self.idle_ms)
        body = jsonrpc.result(message.id, result)
        headers = [(b"mcp-session-id", session.encode())]
        primed = session if _primes(version) else None
        return await self._reply(ex, body, 200, wants_json, headers, primed)

    async def _modern(self, ex: Exchange, tenant: str, message: Message, wants_json: bool) -> int:
        if isinstance(message.id, msgspec.UnsetType):
            return await ex.respond(202)  # 2026-07-28 gives client notifications nothing to do
        if isinstance(message.method, msgspec.UnsetType):
            raise RpcError(INVALID_REQUEST, "a client does not send responses", status=400)
        try:
            _check_envelope(ex, message.method, message.params)
            if message.method == "subscriptions/listen":
                # Its response is a stream, so it is one whatever else the client accepts.
                if not ex.accepts(EVENT_STREAM):
                    raise RpcError(INVALID_REQUEST, "accept text/event-stream", status=406)
                assert message.id is not None  # decode() refuses a null id
                with self.streams:
                    return await self.notifications.listen(ex, tenant, message.id, message.params)
        except RpcError as exc:
            status = 400 if exc.status == 200 else exc.status
            return await self._reply(ex, jsonrpc.error(message.id, exc), status, wants_json)
        return await self._answer(ex, tenant, message, "modern", wants_json)

    async def _answer(
        self,
        ex: Exchange,
        tenant: str,
        message: Message,
        era: Era,
        wants_json: bool,
        primed: str | None = None,
    ) -> int:
        assert isinstance(message.method, str)
        if tracing.TRACER is not None:
            tracing.annotate(mcp_attributes(message.method, message.params))
        try:
            result = await self.methods.call(tenant, message.method, message.params, era)
        except RpcError as exc:
            # The session era reports method errors in the body; 2026-07-28 in the status too.
            status = 200 if era == "session" else _MODERN_STATUS.get(exc.code, 400)
            error = jsonrpc.error(message.id, exc)
            return await self._reply(ex, error, status, wants_json, primed=primed)
        return await self._reply(
            ex, jsonrpc.result(message.id, result), 200, wants_json, primed=primed
        )

    async def _reply(
        self,
        ex: Exchange,
        body: bytes,
        status: int,
        wants_json: bool,
        headers: Headers | None = None,
        primed: str | None = None,
    ) -> int:
        """One JSON-RPC message: as JSON if the client takes it, else as a one-event stream,
        opened with a priming event when `primed` names the session whose revision wants it.
        Its id resumes the session's GET stream from the moment this reply was made."""
        if wants_json:
            return await ex.respond(status, body, headers)
        event = b"event: message\ndata: " + body + b"\n\n"
        if primed is not None:
            event = priming_event(primed, f"{now_ms()}-0") + event
        return await ex.respond(status, event, (headers or []) + STREAM_HEADERS, EVENT_STREAM)

    async def _get(self, ex: Exchange, tenant: str) -> int:
        version = ex.header(b"mcp-protocol-version")
        if version is not None and version.decode("latin-1") in MODERN_VERSIONS:
            # 2026-07-28 has no standing stream: subscriptions/listen replaces it.
            raise RpcError(INVALID_REQUEST, "use POST", status=405)
        require_scope(ex.scope.get(GRANT_SCOPE_KEY), READ_SCOPE)
        session, record = await self._session(ex, tenant)
        if not ex.accepts(EVENT_STREAM):
            raise RpcError(INVALID_REQUEST, "accept text/event-stream", status=406)
        after = resume_point(session, ex.header(b"last-event-id"))
        primed = _primes(record.version)
        with self.streams:
            return await self.notifications.session_stream(ex, tenant, session, after, primed)


def _scope_needed(message: Message) -> str:
    """The scope an access token needs for this message (see _READING_METHODS)."""
    if message.method == "tools/call":
        params = message.params if isinstance(message.params, dict) else {}
        return READ_SCOPE if params.get("name") in _READING_TOOLS else WRITE_SCOPE
    return READ_SCOPE if message.method in _READING_METHODS else ANY_SCOPE


def _primes(version: str) -> bool:
    """Whether a session of this revision opens its event streams with a priming event."""
    return version >= PRIMING_VERSION  # revisions are dates: as strings, they sort as dates


def _no_query(ex: Exchange) -> None:
    """/mcp takes no query parameters: one is refused (400) by its name, as on every route."""
    try:
        ex.check_query(frozenset())
    except BadRequest as exc:
        raise RpcError(INVALID_REQUEST, exc.detail, status=400) from None


def _check_envelope(ex: Exchange, method: str, params: Any) -> None:
    """2026-07-28: the per-request envelope in params._meta, mirrored by the routing headers."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        raise RpcError(INVALID_PARAMS, f"params._meta must carry {META_PROTOCOL_VERSION}")
    if META_PROTOCOL_VERSION not in meta or META_CLIENT_CAPABILITIES not in meta:
        missing = [k for k in (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES) if k not in meta]
        raise RpcError(INVALID_PARAMS, f"params._meta is missing {', '.join(missing)}")
    if _header_value(ex.header(b"mcp-protocol-version")) != meta[META_PROTOCOL_VERSION]:
        raise RpcError(HEADER_MISMATCH, "MCP-Protocol-Version differs from params._meta")
    if _header_value(ex.header(b"mcp-method")) != method:
        raise RpcError(HEADER_MISMATCH, "Mcp-Method differs from the request's method")
    named = _NAMED.get(method)
    if named is None:
        return
    value = params.get(named)
    if value is not None and _header_value(ex.header(b"mcp-name")) != value:
        raise RpcError(HEADER_MISMATCH, f"Mcp-Name differs from params.{named}")
    if method == "tools/call":
        _check_param_headers(ex, params.get("name"), params.get("arguments"))


def _check_param_headers(ex: Exchange, tool: Any, arguments: Any) -> None:
    """2026-07-28: each argument the tool's schema marks with x-mcp-header travels in an
    Mcp-Param-* header too; both must be there (or neither), and agree."""
    declared = PARAM_HEADERS.get(tool) if isinstance(tool, str) else None
    if not declared:
        return
    given = arguments if isinstance(arguments, dict) else {}
    for header, (argument, kind) in declared.items():
        raws = [value for key, value in ex.scope["headers"] if key.lower() == header]
        name = "Mcp-Param-" + header[len(b"mcp-param-") :].decode().title()
        value = given.get(argument)
        if len(raws) > 1:
            raise RpcError(HEADER_MISMATCH, f"{name} appears more than once")
        if value is None:
            if raws:
                raise RpcError(HEADER_MISMATCH, f"{name} is sent but arguments.{argument} is not")
            continue
        if not raws:
            raise RpcError(HEADER_MISMATCH, f"{name} is missing: arguments.{argument} is given")
        text = _header_value(raws[0]) if _FIELD_VALUE.fullmatch(raws[0]) else None
        if text is None or not _same(kind, value, text):
            raise RpcError(HEADER_MISMATCH, f"{name} differs from arguments.{argument}")


def _same(kind: str, value: Any, text: str) -> bool:
    """Whether a header's text mirrors an argument of this JSON type."""
    if isinstance(value, bool):
        return text == ("true" if value else "false")
    if kind == "integer" and isinstance(value, int | float):
        # Compared as numbers: 42 and 42.0 are the same integer.
        if _INTEGER.fullmatch(text) is None or value != int(value):
            return False
        return int(text.partition(".")[0]) == int(value)
    return isinstance(value, str | int | float) and text == str(value)


MAX_TRACED_NAME = 128


def mcp_attributes(method: str, params: Any) -> dict[str, str]:
    """What a request's span says of an MCP call: its method and, for tools/call, the tool."""
    # The client names both: a bound keeps a span small whatever it sends.
    attributes = {"mcp.method.name": method[:MAX_TRACED_NAME]}
    name = params.get("name") if isinstance(params, dict) else None
    if method == "tools/call" and isinstance(name, str):
        attributes["gen_ai.tool.name"] = name[:MAX_TRACED_NAME]
    return attributes
