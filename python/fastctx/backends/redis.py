"""The Redis backend: one server (or primary), over one auto-pipelined RESP3 connection.

Its parts are written against `Commands`, so the cluster backend composes the ones whose keys
all share one slot (session records, MCP state) over its own connections; the change log's
parts are in changelog.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastctx import _core
from fastctx.backends import (
    VERSION_RANGE,
    Backend,
    ChangeCallback,
    Contexts,
    Health,
    McpState,
    Outcome,
    Quotas,
    SessionRecord,
    Sessions,
    Since,
    Stored,
    invalidations,
)
from fastctx.backends.changelog import Expiries, RedisChangeLog
from fastctx.backends.commands import (
    APPEND_SCRIPT,
    CATCH_UP_SCRIPT,
    INSERT_SCRIPT,
    KEEP_SCRIPT,
    MCP_NOTIFY_SCRIPT,
    MCP_SUBSCRIBE_SCRIPT,
    MCP_UNSUBSCRIBE_SCRIPT,
    RATE_TAKE_SCRIPT,
    REMOVE_SCRIPT,
    REPLACE_META_SCRIPT,
    RESEAL_SCRIPT,
    SESSION_CREATE_SCRIPT,
    SESSION_DELETE_SCRIPT,
    SESSION_MEMBERS_SCRIPT,
    SESSION_TOUCH_SCRIPT,
    SWAP_SCRIPT,
    Arg,
    Commands,
    text,
)
from fastctx.backends.keys import (
    CONTEXT_PREFIX,
    SESSION_PREFIX,
    context_id_of,
    context_key,
    context_stream,
    kept_keys,
    log_key,
    mcp_session_key,
    mcp_stream,
    mcp_subscriptions_key,
    members_key,
    rate_key,
    session_key,
    session_stream,
    tenant_context_prefix,
    tenant_log_prefix,
    tenant_stream_prefix,
)
from fastctx.backends.notifications import ExpiryListener
from fastctx.backends.pipeline import Address, Breaker, Pipeline
from fastctx.backends.writers import Writers
from fastctx.errors import BackendError


class RedisContexts(Contexts):
    """Each write is one script: the version check, the write and its events, atomically; a
    create outside a session is one `SET ... NX`, its `created` event implied (scripts.CREATE)."""

    def __init__(self, commands: Commands) -> None:
        self._run = commands.run
        self._script = commands.script
        self._write = commands.write

    async def get(self, tenant: str, token: str) -> bytes | None:
        frame: bytes | None = await self._run(b"GET", context_key(tenant, token))
        return frame

    async def version(self, tenant: str, token: str) -> int | None:
        head: bytes = await self._run(b"GETRANGE", context_key(tenant, token), *VERSION_RANGE)
        return int.from_bytes(head, "little") if head else None

    async def load(self, tenant: str, token: str) -> Stored | None:
        # One slot (the hash tag): one MGET, on a cluster too.
        frame, log = await self._run(b"MGET", context_key(tenant, token), log_key(tenant, token))
        return None if frame is None else Stored(frame, log or b"")

    async def load_many(self, tenant: str, tokens: Sequence[str]) -> list[Stored | None]:
        if not tokens:
            return []
        keys = [
            key for token in tokens for key in (context_key(tenant, token), log_key(tenant, token))
        ]
        values = await self._run(b"MGET", *keys)
        return [
            None if frame is None else Stored(frame, log or b"")
            for frame, log in zip(values[::2], values[1::2], strict=True)
        ]

    async def catch_up(
        self, tenant: str, token: str, version: int, base: int, offset: int
    ) -> Since | None:
        args: list[Arg] = [_u64(base), offset, _u64(version)]
        return since(await self._script(CATCH_UP_SCRIPT, [context_key(tenant, token)], args))

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
        key = context_key(tenant, token)
        if session is None:
            # No script and no stream yet (see scripts.CREATE): the write costs Redis a SET.
            if await self._write(b"SET", key, frame, b"PXAT", expires_at, b"NX") is None:
                raise token_taken(token)
            return True
        keys = [
            key,
            context_stream(tenant, token),
            session_key(tenant, session),
            members_key(tenant, session),
            session_stream(tenant, session),
        ]
        done = await self._script(INSERT_SCRIPT, keys, [frame, expires_at, token, session])
        if done == -1:
            raise token_taken(token)
        return bool(done)

    async def swap(
        self,
        tenant: str,
        token: str,
        expected: bytes,
        frame: bytes,
        expires_at: int,
        session: str | None = None,
        log: bytes = b"",
        patch: bytes = b"",
    ) -> Outcome:
        keys = [context_key(tenant, token), log_key(tenant, token), context_stream(tenant, token)]
        if session is not None:
            keys += [session_key(tenant, session), session_stream(tenant, session)]
        version = _core.frame_version(frame)
        args: list[Arg] = [expected, frame, expires_at, token, version, session or "", log, patch]
        return Outcome(await self._script(SWAP_SCRIPT, keys, args))

    async def append(
        self, tenant: str, token: str, head: bytes, session: str | None, patches: Sequence[bytes]
    ) -> tuple[Outcome, int]:
        keys = [context_key(tenant, token)]
        if session is not None:
            keys += [session_key(tenant, session), session_stream(tenant, session)]
        args: list[Arg] = [head, session or "", *patches]
        return appended(await self._script(APPEND_SCRIPT, keys, args))

    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        keys = [context_key(tenant, token), log_key(tenant, token), context_stream(tenant, token)]
        if session is not None:
            keys += [
                members_key(tenant, session),
                session_key(tenant, session),
                session_stream(tenant, session),
            ]
        version = int.from_bytes(expected, "little")
        args: list[Arg] = [expected, token, version, session or ""]
        return Outcome(await self._script(REMOVE_SCRIPT, keys, args))

    async def reseal(self, tenant: str, token: str, expected: bytes, frame: bytes) -> Outcome:
        keys = [context_key(tenant, token), log_key(tenant, token)]
        return Outcome(await self._script(RESEAL_SCRIPT, keys, [expected, frame]))

    async def tokens(self) -> AsyncIterator[tuple[str, str]]:
        async for key in scan_keys(self._run, CONTEXT_PREFIX + "*"):
            tenant, _, token = context_id_of(key).rpartition("/")
            yield tenant, token


def token_taken(token: str) -> RuntimeError:
    """What a create that finds its token taken raises: with 128 random bits, that means a
    broken random source."""
    return RuntimeError(f"token {token} is already taken: is the OS CSPRNG sound?")


async def scan_keys(run: Callable[..., Any], match: str) -> AsyncIterator[bytes]:
    """The keys of one Redis that `match`, by SCAN (each at least once)."""
    cursor = b"0"
    while True:
        cursor, found = await run(b"SCAN", cursor, b"MATCH", match, b"COUNT", 1000)
        for key in found:
            yield key
        if cursor in (b"0", 0, "0"):
            return


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def appended(reply: int) -> tuple[Outcome, int]:
    """The APPEND script's reply: the log's length, or what stopped it."""
    return (Outcome.DONE, reply) if reply > 0 else (Outcome(reply), 0)


def since(reply: Any) -> Since | None:
    """The CATCH_UP script's reply (see scripts.CATCH_UP)."""
    if isinstance(reply, bytes):
        return Since(reply, None)
    if reply == 0:
        return None
    if reply == 1:
        return Since(b"", None)
    frame, log = reply
    return Since(b"", Stored(frame, log or b""))


class RedisSessions(Sessions):
    def __init__(self, commands: Commands) -> None:
        self._run = commands.run
        self._script = commands.script

    async def create(
        self, tenant: str, session: str, created_at: int, ttl: int, meta: bytes
    ) -> None:
        keys = [session_key(tenant, session)]
        await self._script(SESSION_CREATE_SCRIPT, keys, [created_at, ttl, meta])

    async def touch(self, tenant: str, session: str, now: int) -> SessionRecord | None:
        reply = await self._script(
            SESSION_TOUCH_SCRIPT, [session_key(tenant, session), members_key(tenant, session)]
        )
        if not reply:
            return None
        ttl, created_at, meta = int(reply[0]), int(reply[1]), bytes(reply[2])
        return SessionRecord(created_at=created_at, ttl=ttl, expires_at=now + ttl, meta=meta)

    async def members(self, tenant: str, session: str) -> list[str]:
        reply = await self._script(
            SESSION_MEMBERS_SCRIPT, [members_key(tenant, session)], [tenant_context_prefix(tenant)]
        )
        return sorted(token.decode() for token in reply)

    async def metas(self) -> AsyncIterator[tuple[str, str, bytes]]:
        async for key in self._scan(SESSION_PREFIX + "*"):
            tenant, _, session = key[len(SESSION_PREFIX) + 1 : -1].decode().rpartition("/")
            meta = await self._run(b"HGET", key, b"meta")
            if meta is not None:
                yield tenant, session, bytes(meta)

    def _scan(self, match: str) -> AsyncIterator[bytes]:
        return scan_keys(self._run, match)

    async def replace_meta(self, tenant: str, session: str, old: bytes, new: bytes) -> bool:
        keys = [session_key(tenant, session)]
        return bool(await self._script(REPLACE_META_SCRIPT, keys, [old, new]))

    async def delete(self, tenant: str, session: str) -> list[str] | None:
        existed, *tokens = await self._script(
            SESSION_DELETE_SCRIPT,
            [
                session_key(tenant, session),
                members_key(tenant, session),
                session_stream(tenant, session),
            ],
            [
                tenant_context_prefix(tenant),
                tenant_stream_prefix(tenant),
                session,
                tenant_log_prefix(tenant),
            ],
        )
        return sorted(token.decode() for token in tokens) if existed else None


class RedisQuotas(Quotas):
    """A tenant's bucket is one key in a slot of its own: the same on one Redis and a cluster."""

    def __init__(self, commands: Commands) -> None:
        self._script = commands.script

    async def take(self, tenant: str, want: int, rate: int, burst: int) -> tuple[int, int]:
        granted, wait = await self._script(
            RATE_TAKE_SCRIPT, [rate_key(tenant)], [want, rate, burst]
        )
        return int(granted), int(wait)

    async def keep(
        self, tenant: str, quota: int, kept: Sequence[tuple[str, int, int]], now: int
    ) -> tuple[bool, int]:
        args: list[Arg] = [now, quota]
        for token, size, expires_at in kept:
            args += (token, size, expires_at)
        counted, total = await self._script(KEEP_SCRIPT, kept_keys(tenant), args)
        return bool(counted), int(total)


class RedisMcp(McpState):
    """Every key of one MCP session shares its slot: the same on one Redis and on a cluster."""

    def __init__(self, commands: Commands) -> None:
        self._run = commands.run
        self._script = commands.script

    async def put(self, tenant: str, session: str, record: bytes, idle: int) -> None:
        await self._run(b"SET", mcp_session_key(tenant, session), record, b"PX", idle)

    async def touch(self, tenant: str, session: str, idle: int) -> bytes | None:
        # GETEX reads and slides the expiry in one command (Redis 6.2+).
        record: bytes | None = await self._run(
            b"GETEX", mcp_session_key(tenant, session), b"PX", idle
        )
        return record

    async def delete(self, tenant: str, session: str) -> bool:
        ended, _ = await asyncio.gather(
            self._run(b"DEL", mcp_session_key(tenant, session)),
            self._run(b"DEL", mcp_subscriptions_key(tenant, session), mcp_stream(tenant, session)),
        )
        return bool(ended)

    async def subscribe(
        self, tenant: str, session: str, token: str, cursor: str, record: bytes, idle: int
    ) -> bool:
        keys = [
            mcp_session_key(tenant, session),
            mcp_subscriptions_key(tenant, session),
            mcp_stream(tenant, session),
        ]
        return bool(await self._script(MCP_SUBSCRIBE_SCRIPT, keys, [token, cursor, record, idle]))

    async def unsubscribe(self, tenant: str, session: str, token: str) -> bool:
        keys = [mcp_subscriptions_key(tenant, session), mcp_stream(tenant, session)]
        return bool(await self._script(MCP_UNSUBSCRIBE_SCRIPT, keys, [token]))

    async def subscriptions(self, tenant: str, session: str) -> dict[str, str]:
        reply = await self._run(b"HGETALL", mcp_subscriptions_key(tenant, session))
        pairs = (
            reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
        )
        return {text(token): text(cursor) for token, cursor in pairs}

    async def notify(
        self,
        tenant: str,
        session: str,
        token: str,
        expected: str,
        cursor: str,
        kind: str,
        version: str,
        idle: int,
    ) -> str | None:
        keys = [mcp_subscriptions_key(tenant, session), mcp_stream(tenant, session)]
        args: list[Arg] = [token, expected, cursor, kind, version, idle]
        current = await self._script(MCP_NOTIFY_SCRIPT, keys, args)
        return None if current is None else text(current)

    async def keep(self, tenant: str, session: str, idle: int) -> None:
        await asyncio.gather(
            self._run(b"PEXPIRE", mcp_subscriptions_key(tenant, session), idle),
            self._run(b"PEXPIRE", mcp_stream(tenant, session), idle),
        )


class RedisBackend(Backend):
    """Every command goes through one auto-pipelined connection per process (see pipeline.py)."""

    changes: RedisChangeLog

    def __init__(
        self,
        url: str,
        timeout: float = 2.0,
        *,
        breaker_failures: int = 5,
        breaker_reset: float = 0.5,
        write_replicas: int = 0,
    ) -> None:
        address = Address.from_url(url)
        self.timeout = timeout
        #: One breaker for every connection to this Redis: when it fails, all fail fast.
        self.breaker = Breaker(breaker_failures, breaker_reset, probe_timeout=timeout)
        self._pipeline = Pipeline(
            address, timeout=timeout, tracking_prefixes=[CONTEXT_PREFIX], breaker=self.breaker
        )
        # A WAIT for replicas would hold up every reply queued behind it: a write that waits
        # gets a connection of its own (see writers.py).
        writer = None
        if write_replicas:

            async def route(_: tuple[Any, ...]) -> tuple[Address, Breaker]:
                return address, self.breaker

            writer = Writers(route, self._pipeline, timeout)
        self.commands = commands = Commands(
            self._pipeline, timeout=timeout, write_replicas=write_replicas, writer=writer
        )
        self.contexts = RedisContexts(commands)
        self.sessions = RedisSessions(commands)
        self.changes = RedisChangeLog(
            commands, Pipeline(address, timeout=timeout, breaker=self.breaker)
        )
        self.mcp = RedisMcp(commands)
        self.quotas = RedisQuotas(commands)
        # Expired contexts and sessions, heard of by keyspace notification, get their events.
        self.expiries = Expiries(commands, self.changes)
        self._expiry = ExpiryListener(address, self.expiries.heard, timeout)

    @property
    def coherent(self) -> bool:
        return self._pipeline.tracking

    def watch(self, on_change: ChangeCallback) -> None:
        self._pipeline.on_invalidate = invalidations(on_change)

    async def start(self) -> None:
        # Not fatal: the server starts, /readyz says 503, and it connects when Redis is there.
        with contextlib.suppress(BackendError):
            await self._pipeline.execute(b"PING")
        self._expiry.start()
        with contextlib.suppress(TimeoutError):
            # Listening before the first request, when Redis is there to listen to.
            await asyncio.wait_for(self._expiry.listening.wait(), self._pipeline.timeout)

    async def close(self) -> None:
        await self._expiry.close()
        await self.expiries.close()
        await self.changes.close()
        await self.commands.close()

    async def ping(self) -> None:
        await self._pipeline.execute(b"PING")

    def health(self) -> Health:
        breaker = self.breaker
        return Health(circuit_open=not breaker.closed, circuit_opened=breaker.opened)
