"""The Redis Cluster backend: the Redis backend's commands, each sent to the master of its slot.

Every key of one context (its frame, its change stream) carries the hash tag
`{tenant/token}`, and every key of one session (its record, members, stream) `{tenant/session}`,
so each of them lives on one slot and the single-slot commands and scripts of the Redis backend
run unchanged, routed by `ClusterPipeline` (a connection per master): the backend composes the
Redis parts that only touch one slot (session records, stream reads, MCP state) with parts of
its own for the rest. What spans a context and its session cannot be one
script on a cluster, so it is two, in an order that never shows a half-made state:

- create in a session: the context is created first (nobody knows its token yet), then it
  joins the session; if the session is gone by then, the context is dropped again and the
  create fails as it would on one Redis;
- an update or delete of a member: the context's script, then the session's event;
- a session's delete: the session record goes first (no context can join it any more), then
  each member is deleted by its own script, then the session stream gets their events.

Change streams are followed without a blocking XREAD (which cannot span slots): a connection
to every master tracks the stream keys (`CLIENT TRACKING ... BCAST PREFIX fc:x: PREFIX fc:y:`),
and a stream that Redis says has changed is read with XRANGE from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import hiredis

from fastctx import _core
from fastctx.backends import (
    EVENT_PATCH_MAX_BYTES,
    EVENTS_MAX_AGE_MS,
    VERSION_RANGE,
    Backend,
    ChangeCallback,
    Contexts,
    Outcome,
    Since,
    Stored,
    StreamEvent,
    invalidations,
)
from fastctx.backends.changelog import READ_COUNT, Expiries, StreamReads
from fastctx.backends.cluster_pipeline import ClusterPipeline, Node, cluster_addresses, key_slot
from fastctx.backends.commands import (
    APPEND_SCRIPT,
    CATCH_UP_SCRIPT,
    CREATE_SCRIPT,
    EXPIRED_SCRIPT,
    REMOVE_SCRIPT,
    RESEAL_SCRIPT,
    SWAP_SCRIPT,
    Arg,
    Commands,
    Script,
    event,
    text,
)
from fastctx.backends.keys import (
    CONTEXT_PREFIX,
    STREAM_PREFIXES,
    context_id_of,
    context_key,
    context_stream,
    log_key,
    members_key,
    session_key,
    session_stream,
)
from fastctx.backends.notifications import ExpiryListener
from fastctx.backends.redis import (
    RedisMcp,
    RedisQuotas,
    RedisSessions,
    appended,
    scan_keys,
    since,
    token_taken,
)
from fastctx.backends.scripts import EVENTS_LUA, OPENED_LUA
from fastctx.backends.writers import Writers
from fastctx.errors import BackendError

logger = logging.getLogger("fastctx")


# KEYS: session, members, session stream  ARGV: token, session
# The member's half of a create in a session; 0 if the session does not exist (any more).
_JOIN = Script(
    EVENTS_LUA
    + """
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], pttl)
session_event(KEYS[3], KEYS[1], 'created', 1, ARGV[1], ARGV[2])
return 1
""",
    "join",
    writes=True,
)

# KEYS: context, stream  ARGV: token
# Undoes a create whose session was gone: nobody has seen the token yet.
_DISCARD = Script(
    """
redis.call('DEL', KEYS[1], KEYS[2])
return 1
""",
    "discard",
)

# KEYS: session, session stream[, members]
# ARGV: kind, session, token, version, patch[, token, version, patch ...]
# The session's events for changes its members' own scripts made; with members, a deleted
# member leaves the set too.
_NOTE = Script(
    EVENTS_LUA
    + """
for i = 3, #ARGV, 3 do
  session_event(KEYS[2], KEYS[1], ARGV[1], ARGV[i + 1], ARGV[i], ARGV[2], ARGV[i + 2])
  if KEYS[3] then redis.call('SREM', KEYS[3], ARGV[i]) end
end
return 1
""",
    "note",
)

# KEYS: session, members  ->  {existed, token...}
_SESSION_DROP = Script(
    """
local existed = redis.call('DEL', KEYS[1])
local tokens = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
table.insert(tokens, 1, existed)
return tokens
""",
    "session_drop",
    writes=True,
)

# KEYS: context, log, stream  ARGV: token, session  ->  the deleted version, or false
_DROP = Script(
    EVENTS_LUA
    + OPENED_LUA
    + f"""
local head = redis.call('GETRANGE', KEYS[1], 0, 11)
if head == '' then return false end
opened(KEYS[3], KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[1], KEYS[2])
local version = version_of(head)
local now = event(KEYS[3], 'deleted', version, ARGV[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[3], now + {EVENTS_MAX_AGE_MS})
return version
""",
    "drop",
    writes=True,
)


async def _note(
    commands: Commands,
    tenant: str,
    session: str,
    kind: str,
    changes: list[tuple[str, int, bytes]],
    leave: bool,
) -> None:
    """The session's events for changes its members' own scripts made (see _NOTE): each a
    token, its version and the patch for the event (b"" for none)."""
    keys = [session_key(tenant, session), session_stream(tenant, session)]
    if leave:
        keys.append(members_key(tenant, session))
    args: list[Arg] = [kind, session]
    for token, version, patch in changes:
        args += [token, version, patch]
    await commands.script(_NOTE, keys, args)


class ClusterContexts(Contexts):
    """A context's own script, then its session's (see the module's docstring)."""

    def __init__(self, commands: Commands, cluster: ClusterPipeline, replica_reads: bool) -> None:
        self._commands = commands
        self._run = commands.run
        self._script = commands.script
        self._cluster = cluster
        #: Cache misses are read from replicas (see load_relaxed).
        self.replica_reads = replica_reads

    async def get(self, tenant: str, token: str) -> bytes | None:
        frame: bytes | None = await self._run(b"GET", context_key(tenant, token))
        return frame

    async def version(self, tenant: str, token: str) -> int | None:
        head: bytes = await self._run(b"GETRANGE", context_key(tenant, token), *VERSION_RANGE)
        return int.from_bytes(head, "little") if head else None

    async def load(self, tenant: str, token: str) -> Stored | None:
        # The frame and its log share a slot: one MGET.
        frame, log = await self._run(b"MGET", context_key(tenant, token), log_key(tenant, token))
        return None if frame is None else Stored(frame, log or b"")

    async def load_relaxed(self, tenant: str, token: str) -> Stored | None:
        """With `read_from=replicas`, a cache miss is read from a replica of its slot: as old
        as that replica's lag, which is what it would have been served from the cache anyway
        had the invalidation not come yet. Reads that must be current (`no-cache`, the read
        before a write) use `load`, on the master. Any failure there falls back to the master."""
        if not self.replica_reads:
            return await self.load(tenant, token)
        key = context_key(tenant, token)
        replica = await self._cluster.replica_for(key_slot(key))
        if replica is not None:
            try:
                frame, log = await replica.execute(b"MGET", key, log_key(tenant, token))
                return None if frame is None else Stored(frame, log or b"")
            except (BackendError, hiredis.ReplyError) as exc:
                logger.debug("replica read failed (%s); reading from the master", exc)
        return await self.load(tenant, token)

    async def load_many(self, tenant: str, tokens: Sequence[str]) -> list[Stored | None]:
        # MGET cannot span slots; MGETs issued together leave in one write per master.
        return list(await asyncio.gather(*(self.load(tenant, t) for t in tokens)))

    async def catch_up(
        self, tenant: str, token: str, version: int, base: int, offset: int
    ) -> Since | None:
        args: list[Arg] = [base.to_bytes(8, "little"), offset, version.to_bytes(8, "little")]
        return since(await self._script(CATCH_UP_SCRIPT, [context_key(tenant, token)], args))

    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[bytes | None]:
        # MGET cannot span slots; GETs issued together leave in one write per master.
        return list(
            await asyncio.gather(*(self._run(b"GET", context_key(tenant, t)) for t in tokens))
        )

    async def insert(
        self, tenant: str, token: str, frame: bytes, expires_at: int, session: str | None
    ) -> bool:
        key = context_key(tenant, token)
        if session is None:  # as on one Redis: a plain SET, its stream made at its first change
            if await self._commands.write(b"SET", key, frame, b"PXAT", expires_at, b"NX") is None:
                raise token_taken(token)
            return True
        context = [key, context_stream(tenant, token)]
        # The create of a member, with its stream, naming the session it will join (_JOIN).
        done = await self._script(CREATE_SCRIPT, context, [frame, expires_at, token, session])
        if done == -1:
            raise token_taken(token)
        keys = [
            session_key(tenant, session),
            members_key(tenant, session),
            session_stream(tenant, session),
        ]
        if await self._script(_JOIN, keys, [token, session]):
            return True
        await self._script(_DISCARD, context, [token])
        return False

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
        # The context's script alone (its event names the session); then the session's event.
        keys = [context_key(tenant, token), log_key(tenant, token), context_stream(tenant, token)]
        version = _core.frame_version(frame)
        args: list[Arg] = [expected, frame, expires_at, token, version, session or "", log, patch]
        outcome = Outcome(await self._script(SWAP_SCRIPT, keys, args))
        if outcome is Outcome.DONE and session is not None:
            changes = [(token, version, patch)]
            await _note(self._commands, tenant, session, "updated", changes, False)
        return outcome

    async def append(
        self, tenant: str, token: str, head: bytes, session: str | None, patches: Sequence[bytes]
    ) -> tuple[Outcome, int]:
        # The context's script alone (its events name the session); then the session's events.
        args: list[Arg] = [head, session or "", *patches]
        outcome, size = appended(
            await self._script(APPEND_SCRIPT, [context_key(tenant, token)], args)
        )
        if outcome is Outcome.DONE and session is not None:
            first = int.from_bytes(head[:8], "little") - len(patches) + 1
            changes = [
                (token, version, patch if len(patch) <= EVENT_PATCH_MAX_BYTES else b"")
                for version, patch in enumerate(patches, first)
            ]
            await _note(self._commands, tenant, session, "updated", changes, False)
        return outcome, size

    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        keys = [context_key(tenant, token), log_key(tenant, token), context_stream(tenant, token)]
        version = int.from_bytes(expected, "little")
        args: list[Arg] = [expected, token, version, session or ""]
        outcome = Outcome(await self._script(REMOVE_SCRIPT, keys, args))
        if outcome is Outcome.DONE and session is not None:
            await _note(self._commands, tenant, session, "deleted", [(token, version, b"")], True)
        return outcome

    async def reseal(self, tenant: str, token: str, expected: bytes, frame: bytes) -> Outcome:
        keys = [context_key(tenant, token), log_key(tenant, token)]
        return Outcome(await self._script(RESEAL_SCRIPT, keys, [expected, frame]))

    async def tokens(self) -> AsyncIterator[tuple[str, str]]:
        for master in await self._cluster.master_connections():
            async for key in scan_keys(master.execute, CONTEXT_PREFIX + "*"):
                tenant, _, token = context_id_of(key).rpartition("/")
                yield tenant, token


class ClusterSessions(RedisSessions):
    """A session's record is one slot's, as on one Redis; its members are spread over many."""

    def __init__(self, commands: Commands, cluster: ClusterPipeline) -> None:
        super().__init__(commands)
        self._commands = commands
        self._cluster = cluster

    async def _scan(self, match: str) -> AsyncIterator[bytes]:
        for master in await self._cluster.master_connections():
            async for key in scan_keys(master.execute, match):
                yield key

    async def members(self, tenant: str, session: str) -> list[str]:
        members = members_key(tenant, session)
        tokens = [text(t) for t in await self._run(b"SMEMBERS", members)]
        alive = await asyncio.gather(
            *(self._run(b"EXISTS", context_key(tenant, t)) for t in tokens)
        )
        gone = [t for t, exists in zip(tokens, alive, strict=True) if not exists]
        if gone:
            await self._run(b"SREM", members, *gone)
        return sorted(t for t, exists in zip(tokens, alive, strict=True) if exists)

    async def delete(self, tenant: str, session: str) -> list[str] | None:
        existed, *members = await self._script(
            _SESSION_DROP, [session_key(tenant, session), members_key(tenant, session)]
        )
        tokens = [text(t) for t in members]
        versions = await asyncio.gather(
            *(
                self._script(
                    _DROP,
                    [context_key(tenant, t), log_key(tenant, t), context_stream(tenant, t)],
                    [t, session],
                )
                for t in tokens
            )
        )
        deleted = [(t, int(v), b"") for t, v in zip(tokens, versions, strict=True) if v is not None]
        if deleted:
            await _note(self._commands, tenant, session, "deleted", deleted, False)
        return sorted(t for t, _, _ in deleted) if existed else None


class ClusterChangeLog(StreamReads):
    """Waits on Redis's word that streams changed, not by a blocking XREAD: `watch` tracks the
    stream keys on every master, and a stream it names is read with XRANGE from its cursor."""

    def __init__(self, commands: Commands, watch: ClusterPipeline) -> None:
        super().__init__(commands)
        self.watch = watch
        watch.on_invalidate = self._streams_changed
        self._changed: set[str] = set()
        self._all_changed = True
        self._checked: set[str] = set()
        self._wake = asyncio.Event()
        self._interrupted = False

    def _streams_changed(self, keys: list[bytes] | None) -> None:
        if keys is None:
            self._all_changed = True  # a tracking connection came or went: check them all
        else:
            self._changed.update(key.decode() for key in keys)
        self._wake.set()

    def interrupt(self) -> None:
        self._interrupted = True
        self._wake.set()

    async def wait(self, cursors: dict[str, str], timeout_ms: int) -> list[StreamEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        self._interrupted = False
        while True:
            # Tracking first: a change after the reads below is then sure to be announced.
            await self.watch.ready()
            self._wake.clear()
            due = [
                stream
                for stream in cursors
                if self._all_changed or stream in self._changed or stream not in self._checked
            ]
            self._all_changed = False
            self._changed.clear()
            self._checked = set(cursors)
            if due:
                replies = await asyncio.gather(
                    *(
                        self._run(b"XRANGE", s, f"({cursors[s]}", b"+", b"COUNT", READ_COUNT)
                        for s in due
                    )
                )
                found = [
                    (stream, event(entry))
                    for stream, reply in zip(due, replies, strict=True)
                    for entry in reply or ()
                ]
                if found:
                    return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return []
            if self._interrupted:
                return []  # the caller has other streams to follow: it asks again

    async def close(self) -> None:
        await self.watch.close()


class ClusterExpiries(Expiries):
    """A context's `expired` event by its own script, then its session's."""

    def __init__(self, commands: Commands, streams: StreamReads) -> None:
        super().__init__(commands, streams)
        self._commands = commands

    async def context_expired(self, tenant: str, token: str) -> bool:
        stream = context_stream(tenant, token)
        last = await self.streams.last(stream)
        fields = last[1] if last is not None else {}
        session = fields.get("session", "")
        keys = [context_key(tenant, token), stream]
        if not await self._script(EXPIRED_SCRIPT, keys, [token, session]):
            return False
        if session:
            version = int(fields.get("version", 0))
            changes = [(token, version, b"")]
            await _note(self._commands, tenant, session, "expired", changes, False)
        return True


class ClusterBackend(Backend):
    """The Redis backend's parts over `ClusterPipeline`, a connection per master; see the
    module's docstring for what differs."""

    contexts: ClusterContexts
    changes: ClusterChangeLog

    def __init__(
        self,
        url: str,
        timeout: float = 2.0,
        *,
        breaker_failures: int = 5,
        breaker_reset: float = 0.5,
        write_replicas: int = 0,
    ) -> None:
        seeds = cluster_addresses(url)
        self._seeds = seeds
        read_from = parse_qs(urlsplit(url).query).get("read_from", ["masters"])[0]
        if read_from not in ("masters", "replicas"):
            raise ValueError("read_from must be masters or replicas")
        self.timeout = timeout
        connect = functools.partial(
            ClusterPipeline,
            seeds,
            timeout=timeout,
            breaker_failures=breaker_failures,
            breaker_reset=breaker_reset,
        )
        self._cluster = connect(
            tracking_prefixes=[CONTEXT_PREFIX], on_topology=self._masters_changed
        )
        # As on one Redis: a write that WAITs gets a connection to its master of its own,
        # routed (and redirected, and retried through a failover) by the shared slot map.
        writer = (
            Writers(self._cluster.master_of, self._cluster, timeout) if write_replicas else None
        )
        self.commands = commands = Commands(
            self._cluster,
            timeout=timeout,
            write_replicas=write_replicas,
            writer=writer,
            retry=self._cluster.retry if writer is not None else None,
        )
        self.contexts = ClusterContexts(commands, self._cluster, read_from == "replicas")
        self.sessions = ClusterSessions(commands, self._cluster)
        self.changes = ClusterChangeLog(commands, connect(tracking_prefixes=STREAM_PREFIXES))
        self.mcp = RedisMcp(commands)
        self.quotas = RedisQuotas(commands)
        self.expiries = ClusterExpiries(commands, self.changes)
        # Keyspace notifications are each node's own: one expiry listener per master.
        self._listeners: dict[Node, ExpiryListener] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    @property
    def replica_reads(self) -> bool:
        """Cache misses are read from replicas (`read_from=replicas`)."""
        return self.contexts.replica_reads

    @property
    def coherent(self) -> bool:
        return self._cluster.tracking

    def watch(self, on_change: ChangeCallback) -> None:
        self._cluster.on_invalidate = invalidations(on_change)

    async def start(self) -> None:
        # Not fatal, as on one Redis: /readyz says 503 until the cluster answers.
        with contextlib.suppress(BackendError):
            await self._cluster.ready()
            if self.replica_reads:
                await self._cluster.ready_replicas()
        listening = [listener.listening.wait() for listener in self._listeners.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*listening), self.timeout)

    async def close(self) -> None:
        for listener in self._listeners.values():
            await listener.close()
        self._listeners.clear()
        await self.expiries.close()
        await self.changes.close()
        await self.commands.close()

    def _masters_changed(self) -> None:
        masters = self._cluster.masters
        for node in masters - self._listeners.keys():
            address = replace(self._seeds[0], host=node[0], port=node[1])
            listener = ExpiryListener(address, self.expiries.heard, self.timeout)
            listener.start()
            self._listeners[node] = listener
        for node in self._listeners.keys() - masters:
            stopping = asyncio.ensure_future(self._listeners.pop(node).close())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    async def ping(self) -> None:
        await self._cluster.ready()
        await self._cluster.execute(b"PING")

    def health(self) -> None:
        # A breaker per master: no one circuit speaks for the cluster.
        return None
