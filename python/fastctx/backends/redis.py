"""The Redis backend: one server (or primary), over one auto-pipelined RESP3 connection."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
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
    mcp_stream,
    session_stream,
)
from fastctx.backends.notifications import ExpiryListener
from fastctx.backends.pipeline import Address, Breaker, Pipeline
from fastctx.backends.scripts import (
    CREATE,
    EXPIRED,
    INSERT,
    MCP_NOTIFY,
    MCP_SUBSCRIBE,
    MCP_UNSUBSCRIBE,
    REMOVE,
    SESSION_CREATE,
    SESSION_DELETE,
    SESSION_EXPIRED,
    SESSION_MEMBERS,
    SESSION_TOUCH,
    SWAP,
)
from fastctx.errors import BackendError, NotDurable

logger = logging.getLogger("fastctx")

CONTEXT_PREFIX = "fc:c:"
SESSION_PREFIX = "fc:s:"
READ_COUNT = 1000  # events per stream per XREAD, at most
EXPIRY_BATCH = 256  # expired keys announced concurrently, at most


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
    return f"{SESSION_PREFIX}{{{tenant}/{session}}}"


def session_expired_key(tenant: str, session: str) -> str:
    """Set once a session's `expired` event is appended, so that no other node appends it."""
    return f"fc:sx:{{{tenant}/{session}}}"


def _expired_target(key: bytes) -> tuple[str, str, str] | None:
    """("c" or "s", tenant, token or session) for an expired context or session key."""
    for kind, prefix in (("c", CONTEXT_PREFIX), ("s", SESSION_PREFIX)):
        start = prefix.encode() + b"{"
        if key.startswith(start) and key.endswith(b"}"):
            tenant, _, ident = key[len(start) : -1].decode(errors="replace").rpartition("/")
            return (kind, tenant, ident) if tenant and ident else None
    return None


def mcp_session_key(tenant: str, session: str) -> str:
    return f"fc:mcp:{{{tenant}/{session}}}"


def mcp_subscriptions_key(tenant: str, session: str) -> str:
    return f"fc:mq:{{{tenant}/{session}}}"


def members_key(tenant: str, session: str) -> str:
    return f"fc:m:{{{tenant}/{session}}}"


class Script:
    """A Lua script run by its SHA1, loaded on the first NOSCRIPT (e.g. after a restart)."""

    def __init__(self, source: str, *, writes: bool = False) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest()
        #: It changes what a client is told is stored: with FASTCTX_WRITE_REPLICAS, it waits
        #: for the replicas.
        self.writes = writes

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
        self._init_state(timeout, write_replicas)
        #: One breaker for every connection to this Redis: when it fails, all fail fast.
        self.breaker = Breaker(breaker_failures, breaker_reset, probe_timeout=timeout)
        self._pipeline = Pipeline(
            address, timeout=timeout, tracking_prefixes=[CONTEXT_PREFIX], breaker=self.breaker
        )
        # Blocking stream reads get a connection of their own: on the shared pipeline they
        # would hold up every reply queued behind them.
        self._reader = Pipeline(address, timeout=timeout, breaker=self.breaker)
        # So would a WAIT for replicas: writes that wait get a connection of their own too.
        self._writer = (
            Pipeline(address, timeout=timeout, breaker=self.breaker)
            if write_replicas
            else self._pipeline
        )
        self._reader_id: int | None = None  # its CLIENT ID while an XREAD blocks on it
        # Expired contexts and sessions, heard of by keyspace notification, get their events.
        self._expiry = ExpiryListener(address, self._heard_expired, timeout)

    def _init_state(self, timeout: float, write_replicas: int) -> None:
        """The state this class's methods keep whatever the connections are: the cluster
        backend, which makes connections of its own, starts from it too."""
        self.timeout = timeout
        self.write_replicas = write_replicas
        self._on_change: ChangeCallback | None = None
        self._interrupted = False
        self._expired: list[tuple[str, str, str]] = []  # heard of, event not yet appended
        self._announcer: asyncio.Task[None] | None = None

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
        self._expiry.start()
        with contextlib.suppress(TimeoutError):
            # Listening before the first request, when Redis is there to listen to.
            await asyncio.wait_for(self._expiry.listening.wait(), self._pipeline.timeout)

    async def close(self) -> None:
        await self._expiry.close()
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
        await self._reader.close()
        if self._writer is not self._pipeline:
            await self._writer.close()
        await self._pipeline.close()

    def _heard_expired(self, key: bytes) -> None:
        target = _expired_target(key)
        if target is None:
            return
        self._expired.append(target)
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._announce(), name="fastctx-expired")

    async def _announce(self) -> None:
        while self._expired:
            batch = self._expired[:EXPIRY_BATCH]
            del self._expired[:EXPIRY_BATCH]
            outcomes = await asyncio.gather(
                *(self.expired(*target) for target in batch), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    logger.warning("could not append an expired event: %r", outcome)

    async def expired(self, kind: str, tenant: str, ident: str) -> bool:
        """Append the `expired` event of a context ("c") or session ("s") whose key is gone,
        unless another node has; True when this call appended it."""
        if kind == "s":
            # Its contexts expired no later than it did, but Redis may report them after it:
            # their events go first, so that the session's own is its stream's last.
            open_tokens: dict[str, None] = {}
            for _, fields in await self.events_since(session_stream(tenant, ident), "0-0"):
                if fields.get("type") in ("created", "updated"):
                    open_tokens[fields.get("token", "")] = None
                else:
                    open_tokens.pop(fields.get("token", ""), None)
            open_tokens.pop("", None)
            await asyncio.gather(*(self.expired("c", tenant, token) for token in open_tokens))
            keys = [
                session_key(tenant, ident),
                session_stream(tenant, ident),
                session_expired_key(tenant, ident),
            ]
            return bool(await self._script(_SESSION_EXPIRED, keys, [ident]))
        stream = context_stream(tenant, ident)
        last = await self._last_event(stream)
        session = last[1].get("session", "") if last is not None else ""
        keys = [context_key(tenant, ident), stream]
        if session:
            keys += [session_key(tenant, session), session_stream(tenant, session)]
        return bool(await self._script(_EXPIRED, keys, [ident, session]))

    async def _last_event(self, stream: str) -> Event | None:
        """The newest event of `stream`, if it has one."""
        reply = await self._run(b"XREVRANGE", stream, b"+", b"-", b"COUNT", 1)
        return _event(reply[0]) if reply else None

    def _run(self, *args: bytes | str | int) -> Awaitable[Any]:
        return self._pipeline.execute(*args)

    async def _script(
        self, script: Script, keys: Sequence[str], args: Sequence[bytes | str | int] = ()
    ) -> Any:
        if self.write_replicas and script.writes:
            return await self._replicated(script, keys, args)
        return await script(self._pipeline, keys, args)

    async def _replicated(
        self, script: Script, keys: Sequence[str], args: Sequence[bytes | str | int]
    ) -> Any:
        """Run a write script with `WAIT replicas timeout` right behind it, in one write.

        WAIT answers how many replicas have acknowledged every write sent before it on this
        connection, ours included; fewer than asked is `NotDurable` (the write stands on the
        primary).
        """
        wait = (b"WAIT", self.write_replicas, max(1, int(self.timeout * 1000)))
        for attempt in (1, 2):
            ran, waited = await self._writer.execute_together(
                (b"EVALSHA", script.sha, len(keys), *keys, *args), wait, block=self.timeout
            )
            try:
                result = await ran
            except BaseException as exc:
                waited.add_done_callback(_ignore_result)
                if attempt == 2 or not str(exc).startswith("NOSCRIPT"):
                    raise
                await self._writer.execute(b"SCRIPT", b"LOAD", script.source)
                continue
            acked = int(await waited)
            if acked < self.write_replicas:
                raise NotDurable(
                    f"the write was applied on the Redis primary, but {acked} of the "
                    f"{self.write_replicas} replicas asked for acknowledged it in time: it may "
                    "be lost if the primary fails now; read it back before writing it again"
                )
            return result
        raise AssertionError("unreachable")

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
            done = await self._script(_CREATE, keys, [frame, expires_at, token, ""])
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
            self._reader.execute_blocking(
                timeout_ms / 1000, b"XREAD", b"COUNT", READ_COUNT, b"BLOCK", timeout_ms,
                b"STREAMS", *cursors, *cursors.values(),
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
        ended, _ = await asyncio.gather(
            self._run(b"DEL", mcp_session_key(tenant, session)),
            self._run(b"DEL", mcp_subscriptions_key(tenant, session), mcp_stream(tenant, session)),
        )
        return bool(ended)

    async def mcp_subscribe(
        self, tenant: str, session: str, token: str, cursor: str, record: bytes, idle: int
    ) -> bool:
        keys = [
            mcp_session_key(tenant, session),
            mcp_subscriptions_key(tenant, session),
            mcp_stream(tenant, session),
        ]
        return bool(await self._script(_MCP_SUBSCRIBE, keys, [token, cursor, record, idle]))

    async def mcp_unsubscribe(self, tenant: str, session: str, token: str) -> bool:
        keys = [mcp_subscriptions_key(tenant, session), mcp_stream(tenant, session)]
        return bool(await self._script(_MCP_UNSUBSCRIBE, keys, [token]))

    async def mcp_subscriptions(self, tenant: str, session: str) -> dict[str, str]:
        reply = await self._run(b"HGETALL", mcp_subscriptions_key(tenant, session))
        pairs = (
            reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
        )
        return {_text(token): _text(cursor) for token, cursor in pairs}

    async def mcp_notify(
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
        args: list[bytes | str | int] = [token, expected, cursor, kind, version, idle]
        current = await self._script(_MCP_NOTIFY, keys, args)
        return None if current is None else _text(current)

    async def mcp_keep(self, tenant: str, session: str, idle: int) -> None:
        await asyncio.gather(
            self._run(b"PEXPIRE", mcp_subscriptions_key(tenant, session), idle),
            self._run(b"PEXPIRE", mcp_stream(tenant, session), idle),
        )


def _ignore_result(future: asyncio.Future[Any]) -> None:
    # An UNBLOCK that finds nothing blocked, or a lost connection, changes nothing.
    if not future.cancelled():
        future.exception()


_CREATE = Script(CREATE, writes=True)
_INSERT = Script(INSERT, writes=True)
_SWAP = Script(SWAP, writes=True)
_REMOVE = Script(REMOVE, writes=True)
_SESSION_CREATE = Script(SESSION_CREATE, writes=True)
_SESSION_TOUCH = Script(SESSION_TOUCH)
_SESSION_MEMBERS = Script(SESSION_MEMBERS)
_SESSION_DELETE = Script(SESSION_DELETE, writes=True)
_MCP_SUBSCRIBE = Script(MCP_SUBSCRIBE)
_MCP_UNSUBSCRIBE = Script(MCP_UNSUBSCRIBE)
_MCP_NOTIFY = Script(MCP_NOTIFY)
_EXPIRED = Script(EXPIRED)
_SESSION_EXPIRED = Script(SESSION_EXPIRED)
