"""The connections to a Redis Cluster: one auto-pipelined connection per master, and each
command sent to the master of its key's slot, following the cluster as it changes."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from fastctx.backends.commands import text
from fastctx.backends.pipeline import Address, Breaker, Invalidation, Pipeline
from fastctx.errors import BackendError

logger = logging.getLogger("fastctx")

SLOTS = 16384
REDIRECTS = 5  # MOVED replies followed for one write that waits for replicas
REFRESH_EVERY_S = 10.0  # the slot map (and the replicas) is read again at least this often
# Commands whose routing key is not their first argument.
_KEYLESS = {b"PING", b"CLIENT", b"INFO", b"CLUSTER", b"WAIT"}
_SCRIPTED = {b"EVALSHA", b"EVAL"}
Node = tuple[str, int]
T = TypeVar("T")


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

    async def master_of(
        self, command: tuple[bytes | str | int | float, ...]
    ) -> tuple[Address, Breaker]:
        """Where `command` goes (its first key's master, by the slot map this knows), and the
        breaker of that master's calls: what `Writers` needs to open a connection of its own."""
        key = command[3] if command[0] in _SCRIPTED else command[1]
        node = await self._node_for(key_slot(key if isinstance(key, bytes) else str(key)))
        return node.address, node.breaker

    async def master_connections(self) -> list[Pipeline]:
        """A connection to each master (for what must ask every one of them: a SCAN)."""
        if self._slots is None:
            await self.refresh()
        return [self._nodes[node] for node in sorted(self.masters)]

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

    async def retry(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` (commands sent together, see `execute_together`) as `execute` runs a
        command: again after a MOVED, which ran nothing (neither a write nor the WAIT behind
        it), and while a failover settles when Redis cannot have run it."""
        deadline = time.monotonic() + self.timeout
        delay, redirects = 0.02, 0
        while True:
            try:
                return await attempt()
            except hiredis.ReplyError as exc:
                if not self.follow(exc):
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
                    await self.refresh()

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
            host = text(master[0]) or asked[0]  # an empty host is the node asked
            node = (host, int(master[1]))
            self._node(node)
            slots[start : end + 1] = [node] * (end - start + 1)
            replicas[node] = [(text(c[0]) or asked[0], int(c[1])) for c in copies]
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
