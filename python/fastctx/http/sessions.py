"""REST endpoints for sessions: /v1/sessions and /v1/sessions/{id}."""

from __future__ import annotations

import msgspec

from fastctx.asgi.body import JSON, decode_json, require_media_type
from fastctx.asgi.exchange import Exchange
from fastctx.asgi.responses import encode
from fastctx.asgi.shapes import SessionCreate, SessionCreated, invalid, session_view
from fastctx.clock import rfc3339
from fastctx.config import Settings
from fastctx.http.routes import NO_PARAMETERS, Found, Handler
from fastctx.sessions import SessionManager

COLLECTION = "/v1/sessions"
PREFIX = "/v1/sessions/"
_SESSION_CREATE = msgspec.json.Decoder(SessionCreate)


class SessionRoutes:
    def __init__(self, sessions: SessionManager, settings: Settings) -> None:
        self.sessions = sessions
        self.max_bytes = settings.max_context_bytes
        self.body_timeout = settings.body_timeout
        self._collection: dict[str, Handler] = {"POST": self.create}
        self._item: dict[str, Handler] = {
            "GET": self.read,
            "HEAD": self.read,
            "DELETE": self.delete,
        }

    def route(self, path: str) -> Found | None:
        """(route template, handlers by method, session id, query parameters) for a session
        path; None for others (its /events are EventRoutes')."""
        if path == COLLECTION:
            return COLLECTION, self._collection, "", NO_PARAMETERS
        if path.startswith(PREFIX):
            session = path[len(PREFIX) :]
            if session and "/" not in session:
                return "/v1/sessions/{id}", self._item, session, NO_PARAMETERS
        return None

    async def create(self, ex: Exchange, tenant: str, _: str) -> int:
        body = b""
        length = ex.header(b"content-length")
        if (length is not None and length != b"0") or ex.header(b"transfer-encoding"):
            require_media_type(ex.header(b"content-type"), JSON)
            body = await ex.body(self.max_bytes, self.body_timeout)
        spec = SessionCreate()
        if body.strip():
            try:
                spec = decode_json(body, _SESSION_CREATE)
            except msgspec.ValidationError as exc:
                what = 'the body must be {"ttl": seconds, "meta": {...}}, both optional'
                raise invalid(what, exc) from None
        assert spec.ttl is None or isinstance(spec.ttl, int)  # __post_init__ made it one
        meta = encode(spec.meta)
        session, expires_at = await self.sessions.create(tenant, spec.ttl, meta)
        body = encode(SessionCreated(session, rfc3339(expires_at)))
        return await ex.respond(201, body, [(b"location", (PREFIX + session).encode())])

    async def read(self, ex: Exchange, tenant: str, session: str) -> int:
        view = await self.sessions.get(tenant, session)
        return await ex.respond(200, encode(session_view(view)))

    async def delete(self, ex: Exchange, tenant: str, session: str) -> int:
        await self.sessions.delete(tenant, session)
        return await ex.respond(204)
