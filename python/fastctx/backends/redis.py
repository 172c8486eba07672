"""The Redis backend: one server (or primary), over one auto-pipelined RESP3 connection."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Sequence
from typing import Any

import hiredis

from fastctx import _core
from fastctx.backends import (
    Backend,
    ChangeCallback,
    Event,
    Outcome,
    SessionRecord,
    StreamEvent,
    context_stream,
    session_stream,
)
from fastctx.backends.pipeline import Address, Pipeline
from fastctx.backends.scripts import (
    CREATE,
    INSERT,
    REMOVE,
    SESSION_CREATE,
    SESSION_DELETE,
    SESSION_MEMBERS,
    SESSION_TOUCH,
    SWAP,
)
from fastctx.errors import BackendError

CONTEXT_PREFIX = "fc:c:"
READ_COUNT = 1000  # events per stream per XREAD, at most
READER_BLOCK_LIMIT_S = 30.0  # the longest XREAD BLOCK a caller may ask for


def _context_prefix(tenant: str) -> str:
    return f"{CONTEXT_PREFIX}{{{tenant}/"


def _stream_prefix(tenant: str) -> str:
    return context_stream(tenant, "")[:-1]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _event(entry: list[Any]) -> Event:
    """An XRANGE/XREAD entry: [id, [field, value, ...]] (a map in some RESP3 replies)."""
    raw = entry[1]
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    return _text(entry[0]), {_text(k): _text(v) for k, v in pairs}


def context_key(tenant: str, token: str) -> str:
    # The hash tag keeps every key of one context on one cluster slot; its content is the
    # context's id, which is also what the invalidation of this key names.
    return f"{CONTEXT_PREFIX}{{{tenant}/{token}}}"


def session_key(tenant: str, session: str) -> str:
    return f"fc:s:{{{tenant}/{session}}}"


def mcp_session_key(tenant: str, session: str) -> str:
    return f"fc:mcp:{{{tenant}/{session}}}"


def members_key(tenant: str, session: str) -> str:
    return f"fc:m:{{{tenant}/{session}}}"


class Script:
    """A Lua script run by its SHA1, loaded on the first NOSCRIPT (e.g. after a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest()

    async def __call__(
        self, pipeline: Pipeline, keys: Sequence[str], args: Sequence[bytes | str | int] = ()
    ) -> Any:
        try:
            return await pipeline.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except hiredis.ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await pipeline.execute(b"SCRIPT", b"LOAD", self.source)
        return await pipeline.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)


class RedisBackend(Backend):
    """Every command goes through one auto-pipelined connection per process (see pipeline.py)."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self._pipeline = Pipeline(
            Address.from_url(url), timeout=timeout, tracking_prefixes=[CONTEXT_PREFIX]
        )
        self._on_change: ChangeCallback | None = None
        # Blocking stream reads get a connection of their own: on the shared pipeline they
        # would hold up every reply queued behind them. Its timeout covers the longest block.
        self._reader = Pipeline(Address.from_url(url), timeout=timeout + READER_BLOCK_LIMIT_S)
        self._reader_id: int | None = None  # its CLIENT ID while an XREAD blocks on it
        self._interrupted = False

    @property
    def coherent(self) -> bool:
        return self._pipeline.tracking

    def watch(self, on_change: ChangeCallback) -> None:
        self._on_change = on_change
        self._pipeline.on_invalidate = self._invalidated

    def _invalidated(self, keys: list[bytes] | None) -> None:
        assert self._on_change is not None
        if keys is None:
            self._on_change(None)
            return
        start = len(CONTEXT_PREFIX) + 1  # fc:c:{tenant/token} -> tenant/token
        self._on_change([key[start:-1].decode() for key in keys])

    async def start(self) -> None:
        # Not fatal: the server starts, /readyz says 503, and it connects when Redis is there.
        with contextlib.suppress(BackendError):
            await self._pipeline.execute(b"PING")

    async def close(self) -> None:
        await self._reader.close()
        await self._pipeline.close()

    def _run(self, *args: bytes | str | int) -> Awaitable[Any]:
        return self._pipeline.execute(*args)

    async def _script(
        self, script: Script, keys: Sequence[str], args: Sequence[bytes | str | int] = ()
    ) -> Any:
        return await script(self._pipeline, keys, args)

    async def ping(self) -> None:
        await self._run(b"PING")

    async def get(self, tenant: str, token: str) -> bytes | None:
        frame: bytes | None = await self._run(b"GET", context_key(tenant, token))
        return frame

    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[bytes | None]:
        if not tokens:
            return []
        frames: list[bytes | None] = await self._run(
            b"MGET", *[context_key(tenant, token) for token in tokens]
        )
        return frames

    async def insert(
        self, tenant: str, token: str, frame: bytes, expires_at: int, session: str | None
    ) -> bool:
        keys = [context_key(tenant, token), context_stream(tenant, token)]
        if session is None:
            done = await self._script(_CREATE, keys, [frame, expires_at, token])
        else:
            keys += [
                session_key(tenant, session),
                members_key(tenant, session),
                session_stream(tenant, session),
            ]
            done = await self._script(_INSERT, keys, [frame, expires_at, token, session])
        if done == -1:
            # With 128 random bits a taken token means a broken random source.
            raise RuntimeError(f"token {token} is already taken: is the OS CSPRNG sound?")
        return bool(done)

    async def swap(
        self,
        tenant: str,
        token: str,
        expected: bytes,
        frame: bytes,
        expires_at: int,
        session: str | None = None,
    ) -> Outcome:
        keys = [context_key(tenant, token), context_stream(tenant, token)]
        if session is not None:
            keys += [session_key(tenant, session), session_stream(tenant, session)]
        version = _core.frame_version(frame)
        args: list[bytes | str | int] = [expected, frame, expires_at, token, version, session or ""]
        return Outcome(await self._script(_SWAP, keys, args))

    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        keys = [context_key(tenant, token), context_stream(tenant, token)]
        if session is not None:
            keys += [
                members_key(tenant, session),
                session_key(tenant, session),
                session_stream(tenant, session),
            ]
        version = int.from_bytes(expected, "little")
        args: list[bytes | str | int] = [expected, token, version, session or ""]
        return Outcome(await self._script(_REMOVE, keys, args))

    async def events_since(self, stream: str, after: str) -> list[Event]:
        reply = await self._run(b"XRANGE", stream, f"({after}", b"+")
        return [_event(entry) for entry in reply or ()]

    async def last_event_id(self, stream: str) -> str:
        reply = await self._run(b"XREVRANGE", stream, b"+", b"-", b"COUNT", 1)
        return _text(reply[0][0]) if reply else "0-0"

    async def events_wait(self, cursors: dict[str, str], timeout_ms: int) -> list[StreamEvent]:
        if not cursors:
            return []
        self._interrupted = False
        # Sent in one write: once CLIENT ID is answered, Redis has taken the XREAD too, so an
        # interruption after that point finds it blocked.
        asking_id = asyncio.ensure_future(self._reader.execute(b"CLIENT", b"ID"))
        reading = asyncio.ensure_future(
            self._reader.execute(
                b"XREAD", b"COUNT", READ_COUNT, b"BLOCK", timeout_ms, b"STREAMS",
                *cursors, *cursors.values(),
            )
        )  # fmt: skip
        try:
            self._reader_id = await asking_id
            if self._interrupted:
                self.events_interrupt()
            reply = await reading
        finally:
            self._reader_id = None
            reading.cancel()
        if not reply:
            return []
        streams = reply.items() if isinstance(reply, dict) else reply
        return [(_text(stream), _event(entry)) for stream, entries in streams for entry in entries]

    def events_interrupt(self) -> None:
        self._interrupted = True
        if self._reader_id is not None:
            unblock = self._pipeline.execute(b"CLIENT", b"UNBLOCK", self._reader_id)
            asyncio.ensure_future(unblock).add_done_callback(_ignore_result)

    async def session_create(
        self, tenant: str, session: str, created_at: int, ttl: int, meta: bytes
    ) -> None:
        await self._script(_SESSION_CREATE, [session_key(tenant, session)], [created_at, ttl, meta])

    async def session_touch(self, tenant: str, session: str, now: int) -> SessionRecord | None:
        reply = await self._script(
            _SESSION_TOUCH, [session_key(tenant, session), members_key(tenant, session)]
        )
        if not reply:
            return None
        ttl, created_at, meta = int(reply[0]), int(reply[1]), bytes(reply[2])
        return SessionRecord(created_at=created_at, ttl=ttl, expires_at=now + ttl, meta=meta)

    async def session_members(self, tenant: str, session: str) -> list[str]:
        reply = await self._script(
            _SESSION_MEMBERS, [members_key(tenant, session)], [_context_prefix(tenant)]
        )
        return sorted(token.decode() for token in reply)

    async def session_delete(self, tenant: str, session: str) -> list[str] | None:
        existed, *tokens = await self._script(
            _SESSION_DELETE,
            [
                session_key(tenant, session),
                members_key(tenant, session),
                session_stream(tenant, session),
            ],
            [_context_prefix(tenant), _stream_prefix(tenant), session],
        )
        return sorted(token.decode() for token in tokens) if existed else None

    async def mcp_session_put(self, tenant: str, session: str, record: bytes, idle: int) -> None:
        await self._run(b"SET", mcp_session_key(tenant, session), record, b"PX", idle)

    async def mcp_session_touch(self, tenant: str, session: str, idle: int) -> bytes | None:
        # GETEX reads and slides the expiry in one command (Redis 6.2+).
        record: bytes | None = await self._run(
            b"GETEX", mcp_session_key(tenant, session), b"PX", idle
        )
        return record

    async def mcp_session_delete(self, tenant: str, session: str) -> bool:
        return bool(await self._run(b"DEL", mcp_session_key(tenant, session)))


def _ignore_result(future: asyncio.Future[Any]) -> None:
    # An UNBLOCK that finds nothing blocked, or a lost connection, changes nothing.
    if not future.cancelled():
        future.exception()


_CREATE = Script(CREATE)
_INSERT = Script(INSERT)
_SWAP = Script(SWAP)
_REMOVE = Script(REMOVE)
_SESSION_CREATE = Script(SESSION_CREATE)
_SESSION_TOUCH = Script(SESSION_TOUCH)
_SESSION_MEMBERS = Script(SESSION_MEMBERS)
_SESSION_DELETE = Script(SESSION_DELETE)
