"""The Session Manager: sessions that group contexts, with a sliding TTL and cascade delete."""

from __future__ import annotations

import dataclasses

from fastctx import _core
from fastctx.backends import Backend, context_stream
from fastctx.clock import now_ms
from fastctx.errors import NotFound
from fastctx.registry import Registry
from fastctx.sealing import key_id


@dataclasses.dataclass(frozen=True, slots=True)
class SessionView:
    session: str
    created_at: int
    expires_at: int
    meta: bytes  # a JSON object
    contexts: list[str]


class SessionManager:
    """Every use of a session (reading it, creating a context in it) extends its life by its
    ttl; its contexts expire no later than the session did when they were created, and are
    deleted with it.

    MCP sessions (the protocol's own, opened by `initialize`) are kept here too, apart from
    these: a record the MCP endpoint gives, which lives while requests keep using it, and the
    contexts it subscribed to (see fastctx.mcp.notifications).
    """

    def __init__(self, backend: Backend, registry: Registry) -> None:
        self.sessions = backend.sessions
        self.mcp = backend.mcp
        self.changes = backend.changes
        self.registry = registry

    async def create(
        self, tenant: str, ttl: int | None = None, meta: bytes = b"{}"
    ) -> tuple[str, int]:
        """A new session; returns its id and when it expires (ms since the epoch)."""
        session = _core.new_token()
        now = now_ms()
        ttl_ms = (ttl or self.registry.default_ttl) * 1000
        stored = self.registry.sealing.seal_meta(meta, tenant, session)
        await self.sessions.create(tenant, session, now, ttl_ms, stored)
        return session, now + ttl_ms

    async def get(self, tenant: str, session: str) -> SessionView:
        if not _core.is_token(session):
            raise NotFound("no such session")
        record = await self.sessions.touch(tenant, session, now_ms())
        if record is None:
            raise NotFound("no such session")
        contexts = await self.sessions.members(tenant, session)
        meta = self.registry.sealing.open_meta(record.meta, tenant, session)
        return SessionView(session, record.created_at, record.expires_at, meta, contexts)

    async def delete(self, tenant: str, session: str) -> None:
        """Delete the session and every context in it."""
        if not _core.is_token(session):
            raise NotFound("no such session")
        deleted = await self.sessions.delete(tenant, session)
        if deleted is None:
            raise NotFound("no such session")
        for token in deleted:
            self.registry.forget(tenant, token)
        if self.registry.storage is not None:
            await self.registry.storage.release(tenant, deleted)

    async def reseal(self, tenant: str, session: str, stored: bytes) -> bool:
        """Write the session's meta (`stored`, as read) again under the sealing key, unless it
        is under that key already (`fastctx rekey`); False when there was nothing to do."""
        sealing = self.registry.sealing
        assert sealing.ring is not None, "reseal needs FASTCTX_ENCRYPTION_KEYS"
        if key_id(stored) == sealing.ring.primary:
            return False
        meta = sealing.open_meta(stored, tenant, session)
        resealed = sealing.seal_meta(meta, tenant, session)
        return await self.sessions.replace_meta(tenant, session, stored, resealed)

    async def open_mcp(self, tenant: str, record: bytes, idle_ms: int) -> str:
        """A new MCP session holding `record`; its id is 128 bits from the OS CSPRNG."""
        session = _core.new_token()
        await self.mcp.put(tenant, session, record, idle_ms)
        return session

    async def use_mcp(self, tenant: str, session: str, idle_ms: int) -> bytes | None:
        """The MCP session's record, its life extended by `idle_ms`; None when there is none."""
        if not _core.is_token(session):
            return None
        return await self.mcp.touch(tenant, session, idle_ms)

    async def end_mcp(self, tenant: str, session: str) -> bool:
        """End an MCP session on every node; False when there was none."""
        if not _core.is_token(session):
            return False
        return await self.mcp.delete(tenant, session)

    async def subscribe_mcp(
        self, tenant: str, session: str, token: str, record: bytes, idle_ms: int
    ) -> bool:
        """Subscribe the MCP session to the context's changes after its latest (a repeated
        subscription keeps its place), its record now `record`. False: the session is gone."""
        cursor = await self.changes.last_id(context_stream(tenant, token))
        return await self.mcp.subscribe(tenant, session, token, cursor, record, idle_ms)

    async def unsubscribe_mcp(self, tenant: str, session: str, token: str) -> bool:
        """False when the session was not subscribed to the context."""
        return await self.mcp.unsubscribe(tenant, session, token)

    async def keep_mcp(self, tenant: str, session: str, idle_ms: int) -> None:
        """Slide the life of a session's subscriptions along with the session's own."""
        await self.mcp.keep(tenant, session, idle_ms)
