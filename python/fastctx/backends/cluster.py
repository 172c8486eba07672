"""The Redis Cluster backend: the Redis backend's commands, each sent to the master of its slot.

Every key of one context (its frame, its change stream) carries the hash tag
`{tenant/token}`, and every key of one session (its record, members, stream) `{tenant/session}`,
so each of them lives on one slot and the single-slot commands and scripts of the Redis backend
run unchanged, routed by `ClusterPipeline`. What spans a context and its session cannot be one
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
import binascii
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from fastctx import _core
from fastctx.backends import (
    EVENTS_MAX_AGE_MS,
    Outcome,
    StreamEvent,
    context_stream,
    session_stream,
)
from fastctx.backends.notifications import ExpiryListener
from fastctx.backends.pipeline import Address, Breaker, Invalidation, Pipeline
from fastctx.backends.redis import (
    _CREATE,
    _EXPIRED,
    _REMOVE,
    _SWAP,
    CONTEXT_PREFIX,
    READ_COUNT,
    RedisBackend,
    Script,
    _event,
    _text,
    context_key,
    members_key,
    session_key,
)
from fastctx.backends.scripts import EVENTS_LUA
from fastctx.errors import BackendError

logger = logging.getLogger("fastctx")

SLOTS = 16384
REDIRECTS = 5  # MOVED replies followed for one write that waits for replicas
REFRESH_EVERY_S = 10.0  # the slot map (and the replicas) is read again at least this often
STREAM_PREFIXES = ("fc:x:", "fc:y:")  # context streams, session streams
# Commands whose routing key is not their first argument.
_KEYLESS = {b"PING", b"CLIENT", b"INFO", b"CLUSTER", b"WAIT"}
_SCRIPTED = {b"EVALSHA", b"EVAL"}
Node = tuple[str, int]


def key_slot(key: str | bytes) -> int:
    """The cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return binascii.crc_hqx(raw, 0) % SLOTS


def cluster_addresses(url: str) -> list[Address]:
    """redis+cluster://[user:pass@]host:port[,host:port...] (rediss+cluster:// for TLS)."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    template = Address.from_url(
        f"{'rediss' if parts.scheme.startswith('rediss') else 'redis'}://"
        f"{credentials + '@' if credentials else ''}127.0.0.1:6379/0"
        f"{'?' + parts.query if parts.query else ''}"
    )
    if parts.path.strip("/") not in ("", "0") or parse_qs(parts.query).get("db", ["0"]) != ["0"]:
        raise ValueError("a Redis Cluster has only database 0")
    seeds = []
    for host in hosts.split(","):
        name, _, port = host.strip().rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"cluster node {host!r} is not host:port")
        seeds.append(replace(template, host=unquote(name).strip("[]"), port=int(port)))
    return seeds


class ClusterPipeline:
    """One auto-pipelined connection per master; `execute` sends a command to its key's master.

    The slot map comes from CLUSTER SLOTS and is refreshed when Redis answers MOVED, when a
    node cannot be reached, and when the cluster says it is down; a command is retried for up
    to `timeout` seconds while the topology settles (only when Redis cannot have run it).
    A changed set of masters flushes the cache: a new master's keys were not tracked before.
    """

    def __init__(
        self,
        seeds: Sequence[Address],
        *,
        timeout: float = 2.0,
        tracking_prefixes: Sequence[str] = (),
        on_invalidate: Invalidation | None = None,
        breaker_failures: int = 5,
        breaker_reset: float = 0.5,
        on_topology: Callable[[], None] | None = None,
    ) -> None:
        self.seeds = list(seeds)
        self.timeout = timeout
        self.tracking_prefixes = tuple(tracking_prefixes)
        self._on_invalidate = on_invalidate
        self._breaker = (breaker_failures, breaker_reset)
        #: Called when the set of masters changes (and when it is first known).
        self.on_topology = on_topology
        self._nodes: dict[Node, Pipeline] = {}
        self._slots: list[Node] | None = None
        self._masters: frozenset[Node] = frozenset()  # the distinct nodes of _slots
        self._replicas_of: dict[Node, list[Node]] = {}
        self._refresh_at = 0.0  # when the slot map is next read again unasked
        self._replica_nodes: dict[Node, Pipeline] = {}  # READONLY connections, made on use
        self._next_replica = 0
        self._refreshing: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # connections to former masters

    @property
    def on_invalidate(self) -> Invalidation | None:
        return self._on_invalidate

    @on_invalidate.setter
    def on_invalidate(self, callback: Invalidation | None) -> None:
        self._on_invalidate = callback
        for node in [*self._nodes.values(), *self._replica_nodes.values()]:
            node.on_invalidate = callback

    @property
    def masters(self) -> frozenset[Node]:
        return self._masters

    @property
    def tracking(self) -> bool:
        """True while every master pushes invalidations of `tracking_prefixes` to us."""
        masters = self.masters
        return bool(masters) and all(self._nodes[node].tracking for node in masters)

    def execute(self, *args: bytes | str | int | float) -> Awaitable[Any]:
        return self._execute(args)

    async def ready(self) -> None:
        """Connect to every master (and have each track its keys); BackendError if one fails."""
        if self._slots is None:
            await self.refresh()
        for node in self.masters:
            if not self._nodes[node].tracking:
                await self._nodes[node].execute(b"PING")

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in [*self._nodes.values(), *self._replica_nodes.values()]:
            await node.close()
        self._nodes.clear()
        self._replica_nodes.clear()

    async def _execute(self, args: tuple[bytes | str | int | float, ...]) -> Any:
        command = args[0].upper() if isinstance(args[0], bytes) else str(args[0]).encode().upper()
        if command == b"SCRIPT":
            # A script is loaded on every master, whichever of them will run it.
            if self._slots is None:
                await self.refresh()
            replies = await asyncio.gather(*(self._nodes[n].execute(*args) for n in self.masters))
            return replies[0]
        key: Any = None
        if command in _SCRIPTED:
            key = args[3] if int(args[2]) > 0 else None
        elif command not in _KEYLESS:
            key = args[1]
        slot = None if key is None else key_slot(key if isinstance(key, bytes) else str(key))
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            try:
                node = await self._node_for(slot)
                return await node.execute(*args)
            except hiredis.ReplyError as exc:
                redirect = str(exc).split()
                if redirect[0] == "MOVED" and len(redirect) == 3:
                    self._moved(int(redirect[1]), redirect[2])
                    continue  # redirections are not retries: Redis ran nothing
                if redirect[0] == "ASK" and len(redirect) == 3:
                    target = self._node(_node(redirect[2]))
                    asking = target.execute(b"ASKING")
                    reply = target.execute(*args)
                    await asking
                    return await reply
                raise
            except BackendError as exc:
                if not exc.unsent or time.monotonic() + delay > deadline:
                    raise
                logger.info("Redis Cluster: %s; retrying after a topology refresh", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
                with contextlib.suppress(BackendError):
                    await self.refresh()

    async def execute_together(
        self, *commands: tuple[bytes | str | int | float, ...], block: float = 0.0
    ) -> list[asyncio.Future[Any]]:
        """`Pipeline.execute_together` on the master of the first command's first key.

        Redirections are the caller's to follow (see `follow`): the commands ran, or did not,
        together, and only the caller knows whether they may be sent again.
        """
        first = commands[0]
        key = first[3] if first[0] in _SCRIPTED else first[1]
        node = await self._node_for(key_slot(key if isinstance(key, bytes) else str(key)))
        return await node.execute_together(*commands, block=block)

    async def replica_for(self, slot: int) -> Pipeline | None:
        """A READONLY connection to a replica of `slot`'s master (each in turn), if it has one.

        It tracks the same key prefixes as the masters' connections: a replica pushes the
        invalidations of the writes it replicates, in order with its replies, so what a node
        caches from a replica is kept coherent with that replica.
        """
        if self._slots is None:
            await self.refresh()
        assert self._slots is not None
        copies = self._replicas_of.get(self._slots[slot])
        if not copies:
            return None
        self._next_replica += 1
        return self._replica(copies[self._next_replica % len(copies)])

    async def ready_replicas(self) -> None:
        """Connect to every replica now rather than on a first read (best effort)."""
        replicas = [self._replica(node) for copies in self._replicas_of.values() for node in copies]
        await asyncio.gather(*(r.execute(b"PING") for r in replicas), return_exceptions=True)

    def _replica(self, node: Node) -> Pipeline:
        pipeline = self._replica_nodes.get(node)
        if pipeline is None:
            failures, reset = self._breaker
            pipeline = Pipeline(
                replace(self.seeds[0], host=node[0], port=node[1]),
                timeout=self.timeout,
                tracking_prefixes=self.tracking_prefixes,
                on_invalidate=self._on_invalidate,
                breaker=Breaker(failures, reset, probe_timeout=self.timeout),
                setup=[(b"READONLY",)],
            )
            self._replica_nodes[node] = pipeline
        return pipeline

    def follow(self, error: hiredis.ReplyError) -> bool:
        """Learn from a MOVED reply (True: send again); False for any other error."""
        redirect = str(error).split()
        if redirect[0] == "MOVED" and len(redirect) == 3:
            self._moved(int(redirect[1]), redirect[2])
            return True
        return False

    async def _node_for(self, slot: int | None) -> Pipeline:
        if self._slots is None:
            await self.refresh()
        elif time.monotonic() > self._refresh_at:
            # Now and then, unasked: replicas come and go without any MOVED to tell.
            self._refresh_at = time.monotonic() + REFRESH_EVERY_S
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.ensure_future(self._refresh_quietly())
        assert self._slots is not None
        if slot is None:
            return self._nodes[self._slots[0]]
        return self._nodes[self._slots[slot]]

    def _node(self, node: Node) -> Pipeline:
        pipeline = self._nodes.get(node)
        if pipeline is None:
            address = replace(self.seeds[0], host=node[0], port=node[1])
            # A breaker per node: one master down must not fail the others' slots fast.
            failures, reset = self._breaker
            pipeline = Pipeline(
                address,
                timeout=self.timeout,
                tracking_prefixes=self.tracking_prefixes,
                on_invalidate=self._on_invalidate,
                breaker=Breaker(failures, reset, probe_timeout=self.timeout),
            )
            self._nodes[node] = pipeline
        return pipeline

    def _moved(self, slot: int, where: str) -> None:
        node = _node(where)
        self._node(node)
        if self._slots is not None:
            self._slots[slot] = node
            self._masters = frozenset(self._slots)
        # One slot moved usually means more did (a resharding, a failover): ask again.
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(BackendError):
            await self.refresh()

    async def refresh(self) -> None:
        """Read the slot map from the first node that answers."""
        candidates = [*self.masters, *((a.host, a.port) for a in self.seeds)]
        last: Exception | None = None
        for node in dict.fromkeys(candidates):
            try:
                reply = await self._node(node).execute(b"CLUSTER", b"SLOTS")
            except (BackendError, hiredis.ReplyError) as exc:
                last = exc
                continue
            self._install(reply, node)
            self._refresh_at = time.monotonic() + REFRESH_EVERY_S
            return
        raise BackendError(f"no Redis Cluster node answers: {last}")

    def _install(self, reply: list[Any], asked: Node) -> None:
        slots: list[Node | None] = [None] * SLOTS
        replicas: dict[Node, list[Node]] = {}
        for start, end, master, *copies in reply:
            host = _text(master[0]) or asked[0]  # an empty host is the node asked
            node = (host, int(master[1]))
            self._node(node)
            slots[start : end + 1] = [node] * (end - start + 1)
            replicas[node] = [(_text(c[0]) or asked[0], int(c[1])) for c in copies]
        self._replicas_of = replicas
        covered = [node for node in slots if node is not None]
        if len(covered) < SLOTS:
            raise BackendError("the Redis Cluster does not cover every slot")
        before = self.masters
        self._slots = covered
        self._masters = frozenset(covered)
        if self.masters == before:
            return
        if before:
            logger.warning("Redis Cluster masters changed: %s", sorted(self.masters))
            for node in before - self.masters:
                closing = asyncio.ensure_future(self._nodes.pop(node).close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            if self._on_invalidate is not None:
                self._on_invalidate(None)  # keys moved to masters we did not track before
        if self.on_topology is not None:
            self.on_topology()


def _node(where: str) -> Node:
    host, _, port = where.rpartition(":")
    return host, int(port)


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
    writes=True,
)

# KEYS: context, stream  ARGV: token
# Undoes a create whose session was gone: nobody has seen the token yet.
_DISCARD = Script(
    """
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""
)

# KEYS: session, session stream[, members]  ARGV: kind, session, token, version[, token, version]
# The session's events for changes its members' own scripts made; with members, a deleted
# member leaves the set too.
_NOTE = Script(
    EVENTS_LUA
    + """
for i = 3, #ARGV, 2 do
  session_event(KEYS[2], KEYS[1], ARGV[1], ARGV[i + 1], ARGV[i], ARGV[2])
  if KEYS[3] then redis.call('SREM', KEYS[3], ARGV[i]) end
end
return 1
"""
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
    writes=True,
)

# KEYS: context, stream  ARGV: token, session  ->  the deleted version, or false
_DROP = Script(
    EVENTS_LUA
    + f"""
local frame = redis.call('GET', KEYS[1])
if not frame then return false end
redis.call('DEL', KEYS[1])
local version = version_of(frame)
local now = event(KEYS[2], 'deleted', version, ARGV[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[2], now + {EVENTS_MAX_AGE_MS})
return version
""",
    writes=True,
)


class ClusterBackend(RedisBackend):
    """The Redis backend over `ClusterPipeline`; see the module's docstring for what differs."""

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
        #: Cache misses are read from replicas (see get_relaxed).
        self.replica_reads = read_from == "replicas"
        # Not RedisBackend.__init__: it would connect to one Redis; the state it keeps, though.
        self._init_state(timeout, write_replicas)
        connect = functools.partial(
            ClusterPipeline,
            seeds,
            timeout=timeout,
            breaker_failures=breaker_failures,
            breaker_reset=breaker_reset,
        )
        self._pipeline = connect(  # type: ignore[assignment]
            tracking_prefixes=[CONTEXT_PREFIX], on_topology=self._masters_changed
        )
        # As on one Redis: writes that WAIT get connections of their own.
        self._writer = connect() if write_replicas else self._pipeline  # type: ignore[assignment]
        self._watch = connect(
            tracking_prefixes=STREAM_PREFIXES, on_invalidate=self._streams_changed
        )
        self._changed: set[str] = set()
        self._all_changed = True
        self._checked: set[str] = set()
        self._wake = asyncio.Event()
        # Keyspace notifications are each node's own: one expiry listener per master.
        self._listeners: dict[Node, ExpiryListener] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    @property
    def _cluster(self) -> ClusterPipeline:
        return self._pipeline  # type: ignore[return-value]

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
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
        await self._watch.close()
        if self._writer is not self._pipeline:
            await self._writer.close()
        await self._cluster.close()

    def _masters_changed(self) -> None:
        masters = self._cluster.masters
        for node in masters - self._listeners.keys():
            address = replace(self._seeds[0], host=node[0], port=node[1])
            listener = ExpiryListener(address, self._heard_expired, self.timeout)
            listener.start()
            self._listeners[node] = listener
        for node in self._listeners.keys() - masters:
            stopping = asyncio.ensure_future(self._listeners.pop(node).close())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    async def expired(self, kind: str, tenant: str, ident: str) -> bool:
        if kind == "s":  # the session's keys share one slot (its contexts come back here)
            return await super().expired(kind, tenant, ident)
        stream = context_stream(tenant, ident)
        last = await self._last_event(stream)
        fields = last[1] if last is not None else {}
        session = fields.get("session", "")
        keys = [context_key(tenant, ident), stream]
        if not await self._script(_EXPIRED, keys, [ident, session]):
            return False
        if session:
            version = int(fields.get("version", 0))
            await self._note(tenant, session, "expired", [(ident, version)], leave=False)
        return True

    async def _replicated(
        self, script: Script, keys: Sequence[str], args: Sequence[bytes | str | int]
    ) -> Any:
        """The Redis backend's write + WAIT, sent to the slot's master as `execute` would:
        MOVED followed, and retried while a failover settles when Redis cannot have run it."""
        writer: ClusterPipeline = self._writer  # type: ignore[assignment]
        deadline = time.monotonic() + self.timeout
        delay, redirects = 0.02, 0
        while True:
            try:
                return await super()._replicated(script, keys, args)
            except hiredis.ReplyError as exc:
                # MOVED: nothing ran there, neither the script nor its WAIT.
                if not writer.follow(exc):
                    raise
                redirects += 1
                if redirects > REDIRECTS:
                    raise BackendError("the Redis Cluster kept redirecting a write") from exc
            except BackendError as exc:
                if not exc.unsent or time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
                with contextlib.suppress(BackendError):
                    await writer.refresh()

    async def ping(self) -> None:
        await self._cluster.ready()
        await self._run(b"PING")

    async def get_relaxed(self, tenant: str, token: str) -> bytes | None:
        """With `read_from=replicas`, a cache miss is read from a replica of its slot: as old
        as that replica's lag, which is what it would have been served from the cache anyway
        had the invalidation not come yet. Reads that must be current (`no-cache`, the read
        before a write) use `get`, on the master. Any failure there falls back to the master."""
        if not self.replica_reads:
            return await self.get(tenant, token)
        key = context_key(tenant, token)
        replica = await self._cluster.replica_for(key_slot(key))
        if replica is not None:
            try:
                frame: bytes | None = await replica.execute(b"GET", key)
                return frame
            except (BackendError, hiredis.ReplyError) as exc:
                logger.debug("replica read failed (%s); reading from the master", exc)
        return await self.get(tenant, token)

    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[bytes | None]:
        # MGET cannot span slots; GETs issued together leave in one write per master.
        return list(
            await asyncio.gather(*(self._run(b"GET", context_key(tenant, t)) for t in tokens))
        )

    async def insert(
        self, tenant: str, token: str, frame: bytes, expires_at: int, session: str | None
    ) -> bool:
        context = [context_key(tenant, token), context_stream(tenant, token)]
        # The Redis backend's create, naming the session its member will join (_JOIN).
        done = await self._script(_CREATE, context, [frame, expires_at, token, session or ""])
        if done == -1:
            raise RuntimeError(f"token {token} is already taken: is the OS CSPRNG sound?")
        if session is None:
            return True
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
    ) -> Outcome:
        # The context's script alone (its event names the session); then the session's event.
        keys = [context_key(tenant, token), context_stream(tenant, token)]
        version = _core.frame_version(frame)
        args: list[bytes | str | int] = [expected, frame, expires_at, token, version, session or ""]
        outcome = Outcome(await self._script(_SWAP, keys, args))
        if outcome is Outcome.DONE and session is not None:
            await self._note(tenant, session, "updated", [(token, version)], leave=False)
        return outcome

    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        keys = [context_key(tenant, token), context_stream(tenant, token)]
        version = int.from_bytes(expected, "little")
        args: list[bytes | str | int] = [expected, token, version, session or ""]
        outcome = Outcome(await self._script(_REMOVE, keys, args))
        if outcome is Outcome.DONE and session is not None:
            await self._note(tenant, session, "deleted", [(token, version)], leave=True)
        return outcome

    async def _note(
        self, tenant: str, session: str, kind: str, changes: list[tuple[str, int]], leave: bool
    ) -> None:
        keys = [session_key(tenant, session), session_stream(tenant, session)]
        if leave:
            keys.append(members_key(tenant, session))
        args: list[bytes | str | int] = [kind, session]
        for token, version in changes:
            args += [token, version]
        await self._script(_NOTE, keys, args)

    async def session_members(self, tenant: str, session: str) -> list[str]:
        members = members_key(tenant, session)
        tokens = [_text(t) for t in await self._run(b"SMEMBERS", members)]
        alive = await asyncio.gather(
            *(self._run(b"EXISTS", context_key(tenant, t)) for t in tokens)
        )
        gone = [t for t, exists in zip(tokens, alive, strict=True) if not exists]
        if gone:
            await self._run(b"SREM", members, *gone)
        return sorted(t for t, exists in zip(tokens, alive, strict=True) if exists)

    async def session_delete(self, tenant: str, session: str) -> list[str] | None:
        existed, *members = await self._script(
            _SESSION_DROP, [session_key(tenant, session), members_key(tenant, session)]
        )
        tokens = [_text(t) for t in members]
        versions = await asyncio.gather(
            *(
                self._script(
                    _DROP,
                    [context_key(tenant, t), context_stream(tenant, t)],
                    [t, session],
                )
                for t in tokens
            )
        )
        deleted = [(t, int(v)) for t, v in zip(tokens, versions, strict=True) if v is not None]
        if deleted:
            await self._note(tenant, session, "deleted", deleted, leave=False)
        return sorted(t for t, _ in deleted) if existed else None

    # Change streams: read on Redis's word that they changed, not by a blocking XREAD.

    def _streams_changed(self, keys: list[bytes] | None) -> None:
        if keys is None:
            self._all_changed = True  # a tracking connection came or went: check them all
        else:
            self._changed.update(key.decode() for key in keys)
        self._wake.set()

    def events_interrupt(self) -> None:
        self._interrupted = True
        self._wake.set()

    async def events_wait(self, cursors: dict[str, str], timeout_ms: int) -> list[StreamEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        self._interrupted = False
        while True:
            # Tracking first: a change after the reads below is then sure to be announced.
            await self._watch.ready()
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
                    (stream, _event(entry))
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
