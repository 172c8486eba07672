"""The embedded backend: contexts and sessions in this process's memory, for one worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import math
from collections.abc import AsyncIterator, Sequence

from fastctx import _core
from fastctx.backends import (
    EVENT_PATCH_MAX_BYTES,
    EVENTS_MAX_AGE_MS,
    Backend,
    ChangeLog,
    Contexts,
    Event,
    McpState,
    Outcome,
    Quotas,
    SessionRecord,
    Sessions,
    Since,
    Stored,
    StreamEvent,
    patchlog,
)
from fastctx.backends.eventlog import EventLog, Fields
from fastctx.backends.keys import context_stream, mcp_stream, session_stream
from fastctx.clock import now_ms

_VERSION = slice(_core.VERSION_OFFSET, _core.VERSION_OFFSET + 8)
_HEAD = slice(_core.VERSION_OFFSET, _core.VERSION_OFFSET + 24)  # version, created, updated
_LIVE = ("created", "updated")  # events after which the context still exists
SWEEP_INTERVAL = 1.0
SWEEP_BATCH = 10_000


@dataclasses.dataclass(slots=True)
class _Session:
    created_at: int
    ttl: int
    expires_at: int
    meta: bytes
    members: set[str] = dataclasses.field(default_factory=set)


class MemoryStore:
    """What the memory backend's parts share: contexts and sessions expire into each other,
    and every change goes to the one change log. No method awaits, so each one is atomic on
    the loop."""

    def __init__(self) -> None:
        # (tenant, token) -> (frame, expires_at, session); a frame's version moves in place
        self.frames: dict[tuple[str, str], tuple[bytearray, int, str | None]] = {}
        # (tenant, token) -> its patch log, for the contexts that have one
        self.logs: dict[tuple[str, str], bytearray] = {}
        self.sessions: dict[tuple[str, str], _Session] = {}
        # MCP sessions: (tenant, id) -> (record, expires_at)
        self.mcp: dict[tuple[str, str], tuple[bytes, int]] = {}
        # their subscriptions: (tenant, id) -> {token: cursor}
        self.mcp_subscriptions: dict[tuple[str, str], dict[str, str]] = {}
        # (expires_at, kind, tenant, id), kind c(ontext), s(ession) or m(cp session); entries
        # whose deadline moved are skipped (or, for MCP sessions, pushed again) when popped.
        self.deadlines: list[tuple[int, str, str, str]] = []
        self.events = EventLog()

    def live_frame(self, key: tuple[str, str], now: int) -> bytearray | None:
        item = self.frames.get(key)
        if item is None:
            return None
        if item[1] <= now:
            self.drop_frame(key, item[2])
            self.changed(key[0], key[1], "expired", _version(item[0]), item[1], item[2])
            return None
        return item[0]

    def live_session(self, key: tuple[str, str], now: int) -> _Session | None:
        session = self.sessions.get(key)
        if session is not None and session.expires_at <= now:
            # Its contexts expired no later than it did; those the sweep has not reached yet
            # expire now, each with its event, before the session's own.
            for token in sorted(session.members):
                item = self.frames.get((key[0], token))
                if item is not None:
                    self.drop_frame((key[0], token), item[2])
                    self.changed(key[0], token, "expired", _version(item[0]), item[1], item[2])
            self.drop_session(key)
            fields = ("expired", "0", "", key[1])
            self.events.append(session_stream(*key), fields, now_ms() + EVENTS_MAX_AGE_MS)
            return None
        return session

    def live_mcp(self, key: tuple[str, str], now: int) -> bytes | None:
        item = self.mcp.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self.mcp[key]
            self.mcp_subscriptions.pop(key, None)
            return None
        return item[0]

    def drop_frame(self, key: tuple[str, str], session_id: str | None) -> None:
        del self.frames[key]
        self.logs.pop(key, None)
        if session_id is not None:
            session = self.sessions.get((key[0], session_id))
            if session is not None:
                session.members.discard(key[1])

    def drop_session(self, key: tuple[str, str]) -> None:
        session = self.sessions.pop(key)
        for token in session.members:
            self.frames.pop((key[0], token), None)
            self.logs.pop((key[0], token), None)

    def changed(
        self,
        tenant: str,
        token: str,
        kind: str,
        version: int,
        expires_at: int,
        session: str | None,
        patch: bytes = b"",
    ) -> None:
        """Append the change to the context's stream and its session's."""
        fields: Fields = (kind, str(version), token, session or "")
        if patch:
            fields = (*fields, patch.decode())
        keep_until = (expires_at if kind in _LIVE else now_ms()) + EVENTS_MAX_AGE_MS
        self.events.append(context_stream(tenant, token), fields, keep_until)
        if session is not None:
            record = self.sessions.get((tenant, session))
            until = max(keep_until, record.expires_at + EVENTS_MAX_AGE_MS if record else 0)
            self.events.append(session_stream(tenant, session), fields, until)

    def sweep(self, now: int, limit: int = SWEEP_BATCH) -> int:
        """Drop up to `limit` expired contexts and sessions; returns how many deadlines it saw."""
        seen = 0
        while self.deadlines and self.deadlines[0][0] <= now and seen < limit:
            _, kind, tenant, ident = heapq.heappop(self.deadlines)
            seen += 1
            if kind == "c":
                self.live_frame((tenant, ident), now)
            elif kind == "s":
                self.live_session((tenant, ident), now)
            elif self.live_mcp((tenant, ident), now) is not None:
                # Used since this deadline was set: look again at its current one.
                heapq.heappush(self.deadlines, (self.mcp[(tenant, ident)][1], kind, tenant, ident))
        return seen


class MemoryContexts(Contexts):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def get(self, tenant: str, token: str) -> bytes | None:
        frame = self._store.live_frame((tenant, token), now_ms())
        return None if frame is None else bytes(frame)

    async def load(self, tenant: str, token: str) -> Stored | None:
        return self._stored((tenant, token), now_ms())

    load_relaxed = load  # one copy, always current: no coroutine around `load`

    async def version(self, tenant: str, token: str) -> int | None:
        frame = self._store.live_frame((tenant, token), now_ms())
        return None if frame is None else _version(frame)

    def _stored(self, key: tuple[str, str], now: int) -> Stored | None:
        frame = self._store.live_frame(key, now)
        if frame is None:
            return None
        return Stored(bytes(frame), bytes(self._store.logs.get(key, b"")))

    async def load_many(self, tenant: str, tokens: Sequence[str]) -> list[Stored | None]:
        now = now_ms()
        return [self._stored((tenant, token), now) for token in tokens]

    async def catch_up(
        self, tenant: str, token: str, version: int, base: int, offset: int
    ) -> Since | None:
        key = (tenant, token)
        frame = self._store.live_frame(key, now_ms())
        if frame is None:
            return None
        log = self._store.logs.get(key)
        if log is not None and patchlog.base_version(bytes(log[: patchlog.HEADER_SIZE])) == base:
            return Since(bytes(log[offset:]), None)
        if _version(frame) == version:
            return Since(b"", None)
        return Since(b"", Stored(bytes(frame), bytes(log or b"")))

    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[bytes | None]:
        now = now_ms()
        live_frame = self._store.live_frame
        return [None if (f := live_frame((tenant, t), now)) is None else bytes(f) for t in tokens]

    async def insert(
        self, tenant: str, token: str, frame: bytes, expires_at: int, session: str | None
    ) -> bool:
        store = self._store
        now = now_ms()
        if session is not None:
            record = store.live_session((tenant, session), now)
            if record is None:
                return False
            record.members.add(token)
        store.frames[(tenant, token)] = (bytearray(frame), expires_at, session)
        heapq.heappush(store.deadlines, (expires_at, "c", tenant, token))
        store.changed(tenant, token, "created", 1, expires_at, session)
        return True

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
        store = self._store
        key = (tenant, token)
        refused = self._refused(key, expected)
        if refused is not None:
            return refused
        member_of = store.frames[key][2]
        store.frames[key] = (bytearray(frame), expires_at, member_of)
        if log:
            store.logs[key] = bytearray(log)
        else:
            store.logs.pop(key, None)
        store.changed(tenant, token, "updated", _version(frame), expires_at, member_of, patch)
        return Outcome.DONE

    def _refused(self, key: tuple[str, str], expected: bytes) -> Outcome | None:
        """Why a conditional write of the context may not go ahead (MISSING, CONFLICT); None
        when its version is still `expected`."""
        current = self._store.live_frame(key, now_ms())
        if current is None:
            return Outcome.MISSING
        return Outcome.CONFLICT if current[_VERSION] != expected else None

    async def reseal(self, tenant: str, token: str, expected: bytes, frame: bytes) -> Outcome:
        store = self._store
        key = (tenant, token)
        refused = self._refused(key, expected)
        if refused is not None:
            return refused
        _, expires_at, member_of = store.frames[key]
        store.frames[key] = (bytearray(frame), expires_at, member_of)
        store.logs.pop(key, None)
        return Outcome.DONE

    async def tokens(self) -> AsyncIterator[tuple[str, str]]:
        now = now_ms()
        for key in list(self._store.frames):
            if self._store.live_frame(key, now) is not None:
                yield key

    async def append(
        self,
        tenant: str,
        token: str,
        head: bytes,
        session: str | None,
        patches: Sequence[bytes],
    ) -> tuple[Outcome, int]:
        store = self._store
        key = (tenant, token)
        frame = store.live_frame(key, now_ms())
        if frame is None:
            return Outcome.MISSING, 0
        first = int.from_bytes(head[:8], "little") - len(patches) + 1
        if _version(frame) != first - 1:
            return Outcome.CONFLICT, 0
        if frame[2] != 2:
            return Outcome.REBASE, 0
        log = store.logs.get(key)
        if log is None:
            log = store.logs[key] = bytearray(patchlog.header(_version(frame)))
        updated_at = int.from_bytes(head[16:], "little")
        for version, patch in enumerate(patches, first):
            log += patchlog.entry(version, updated_at, patch)
        frame[_HEAD] = head
        expires_at, member_of = store.frames[key][1:]
        for version, patch in enumerate(patches, first):
            event_patch = patch if len(patch) <= EVENT_PATCH_MAX_BYTES else b""
            store.changed(tenant, token, "updated", version, expires_at, member_of, event_patch)
        return Outcome.DONE, len(log)

    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        store = self._store
        key = (tenant, token)
        refused = self._refused(key, expected)
        if refused is not None:
            return refused
        frame, expires_at, member_of = store.frames[key]
        store.drop_frame(key, member_of)
        store.changed(tenant, token, "deleted", _version(frame), expires_at, member_of)
        return Outcome.DONE


def _version(frame: bytes | bytearray) -> int:
    return int.from_bytes(frame[_VERSION], "little")


class MemorySessions(Sessions):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def create(
        self, tenant: str, session: str, created_at: int, ttl: int, meta: bytes
    ) -> None:
        expires_at = created_at + ttl
        self._store.sessions[(tenant, session)] = _Session(created_at, ttl, expires_at, meta)
        heapq.heappush(self._store.deadlines, (expires_at, "s", tenant, session))

    async def touch(self, tenant: str, session: str, now: int) -> SessionRecord | None:
        record = self._store.live_session((tenant, session), now)
        if record is None:
            return None
        record.expires_at = now + record.ttl
        heapq.heappush(self._store.deadlines, (record.expires_at, "s", tenant, session))
        return SessionRecord(record.created_at, record.ttl, record.expires_at, record.meta)

    async def members(self, tenant: str, session: str) -> list[str]:
        store = self._store
        now = now_ms()
        record = store.live_session((tenant, session), now)
        if record is None:
            return []
        return sorted(t for t in list(record.members) if store.live_frame((tenant, t), now))

    async def metas(self) -> AsyncIterator[tuple[str, str, bytes]]:
        now = now_ms()
        for key in list(self._store.sessions):
            record = self._store.live_session(key, now)
            if record is not None:
                yield key[0], key[1], record.meta

    async def replace_meta(self, tenant: str, session: str, old: bytes, new: bytes) -> bool:
        record = self._store.live_session((tenant, session), now_ms())
        if record is None or record.meta != old:
            return False
        record.meta = new
        return True

    async def delete(self, tenant: str, session: str) -> list[str] | None:
        store = self._store
        key = (tenant, session)
        record = store.live_session(key, now_ms())
        if record is None:
            return None
        frames = [(t, store.frames.get((tenant, t))) for t in record.members]
        store.drop_session(key)
        for token, item in frames:
            if item is not None:
                store.changed(tenant, token, "deleted", _version(item[0]), item[1], session)
        return sorted(record.members)


class MemoryChangeLog(ChangeLog):
    def __init__(self, events: EventLog) -> None:
        self._events = events

    async def since(self, stream: str, after: str) -> list[Event]:
        return self._events.since(stream, after)

    async def last_id(self, stream: str) -> str:
        return self._events.last_id(stream)

    async def wait(self, cursors: dict[str, str], timeout_ms: int) -> list[StreamEvent]:
        return await self._events.wait(cursors, timeout_ms)

    def interrupt(self) -> None:
        self._events.interrupt()


class MemoryMcp(McpState):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def put(self, tenant: str, session: str, record: bytes, idle: int) -> None:
        key = (tenant, session)
        expires_at = now_ms() + idle
        if key not in self._store.mcp:
            heapq.heappush(self._store.deadlines, (expires_at, "m", tenant, session))
        self._store.mcp[key] = (record, expires_at)

    async def touch(self, tenant: str, session: str, idle: int) -> bytes | None:
        key = (tenant, session)
        now = now_ms()
        record = self._store.live_mcp(key, now)
        if record is not None:
            # Every request touches its session: the sweep finds the moved deadline rather
            # than the heap taking one entry per request.
            self._store.mcp[key] = (record, now + idle)
        return record

    async def delete(self, tenant: str, session: str) -> bool:
        found = self._store.live_mcp((tenant, session), now_ms()) is not None
        self._store.mcp.pop((tenant, session), None)
        self._store.mcp_subscriptions.pop((tenant, session), None)
        return found

    async def subscribe(
        self, tenant: str, session: str, token: str, cursor: str, record: bytes, idle: int
    ) -> bool:
        store = self._store
        now = now_ms()
        if store.live_mcp((tenant, session), now) is None:
            return False
        store.mcp[(tenant, session)] = (record, now + idle)
        subscriptions = store.mcp_subscriptions.setdefault((tenant, session), {})
        if token not in subscriptions:
            subscriptions[token] = cursor
            fields = ("subscribe", cursor, token, "")
            store.events.append(mcp_stream(tenant, session), fields, now + idle)
        return True

    async def unsubscribe(self, tenant: str, session: str, token: str) -> bool:
        subscriptions = self._store.mcp_subscriptions.get((tenant, session), {})
        if subscriptions.pop(token, None) is None:
            return False
        fields = ("unsubscribe", "0", token, "")
        self._store.events.append(mcp_stream(tenant, session), fields, now_ms())
        return True

    async def subscriptions(self, tenant: str, session: str) -> dict[str, str]:
        return dict(self._store.mcp_subscriptions.get((tenant, session), {}))

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
        subscriptions = self._store.mcp_subscriptions.get((tenant, session), {})
        current = subscriptions.get(token)
        if current is None or current != expected:
            return current
        fields = (kind, version, token, "")
        self._store.events.append(mcp_stream(tenant, session), fields, now_ms() + idle)
        subscriptions[token] = cursor
        return cursor

    async def keep(self, tenant: str, session: str, idle: int) -> None:
        self._store.events.keep(mcp_stream(tenant, session), now_ms() + idle)


@dataclasses.dataclass(slots=True)
class _Kept:
    """The bytes one tenant's contexts keep: token -> (bytes, expires_at), their total, and
    their expiries in order (an entry whose token has since been counted anew is skipped)."""

    total: int = 0
    contexts: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    expiries: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    def expire(self, now: int) -> None:
        while self.expiries and self.expiries[0][0] <= now:
            expires_at, token = heapq.heappop(self.expiries)
            kept = self.contexts.get(token)
            if kept is not None and kept[1] == expires_at:
                self.total -= kept[0]
                del self.contexts[token]


class MemoryQuotas(Quotas):
    """The token buckets of one process, tenant -> (tokens, when they were counted, in ms), and
    the bytes each tenant's contexts keep."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, int]] = {}
        self._kept: dict[str, _Kept] = {}

    async def keep(
        self, tenant: str, quota: int, kept: Sequence[tuple[str, int, int]], now: int
    ) -> tuple[bool, int]:
        usage = self._kept.setdefault(tenant, _Kept())
        usage.expire(now)
        change = sum(size - usage.contexts.get(token, (0, 0))[0] for token, size, _ in kept)
        if change > 0 and quota and usage.total + change > quota:
            return False, usage.total
        for token, size, expires_at in kept:
            if size:
                before = usage.contexts.get(token)
                usage.contexts[token] = (size, expires_at)
                if before is None or before[1] != expires_at:  # one heap entry per expiry
                    heapq.heappush(usage.expiries, (expires_at, token))
            else:
                usage.contexts.pop(token, None)
        usage.total += change
        return True, usage.total

    async def take(self, tenant: str, want: int, rate: int, burst: int) -> tuple[int, int]:
        now = now_ms()
        tokens, at = self._buckets.get(tenant, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate / 1000)
        granted = min(want, int(tokens))
        tokens -= granted
        if tokens >= burst:
            self._buckets.pop(tenant, None)  # full again: as good as none
        else:
            self._buckets[tenant] = (tokens, now)
        wait = 0 if granted == want else math.ceil((1 - tokens) * 1000 / rate)
        return granted, wait


class MemoryBackend(Backend):
    """The five parts over one `MemoryStore`, swept now and then for what has expired."""

    in_process = True

    def __init__(self) -> None:
        self.store = store = MemoryStore()
        self.contexts = MemoryContexts(store)
        self.sessions = MemorySessions(store)
        self.changes = MemoryChangeLog(store.events)
        self.mcp = MemoryMcp(store)
        self.quotas = MemoryQuotas()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="fastctx-memory-sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def ping(self) -> None:
        return None

    def sweep(self, now: int, limit: int = SWEEP_BATCH) -> int:
        """Drop up to `limit` expired contexts and sessions; returns how many deadlines it saw."""
        return self.store.sweep(now, limit)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = now_ms()
            self.store.sweep(now)
            self.store.events.sweep(now)
