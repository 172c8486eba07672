"""One auto-pipelined Redis connection: commands issued in one event-loop tick go out in one write.

Every coroutine that calls `Pipeline.execute` appends its packed command to a buffer and waits
on a future; the buffer is written once, at the end of the current loop iteration, and hiredis
parses the replies, which Redis sends in order, so each is handed to the oldest waiter. Many
concurrent requests thus cost one syscall each way instead of one each.

The connection speaks RESP3 and subscribes itself to invalidations of its key prefixes
(`CLIENT TRACKING ON BCAST ... NOLOOP`): Redis pushes them on the same stream as the replies,
ordered with them, so a reply is never newer than an invalidation that arrives after it.

Every command has a deadline (the timeout, plus the time a blocking command asks to block);
a connection whose oldest command is past it is dropped, which fails every command on it.
A `Breaker` counts such failures: once Redis keeps failing, commands fail at once instead of
each waiting for its deadline, until one probe gets an answer again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from fastctx.errors import BackendError

logger = logging.getLogger("fastctx")

Invalidation = Callable[[list[bytes] | None], None]
"""Called with the changed keys, or with None when any key may have changed unseen."""

_INCOMPLETE = object()
# hiredis's stub types the argument as a 1-tuple; it takes a command of any length.
pack_command = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


@dataclass(frozen=True, slots=True)
class Address:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_url(cls, url: str) -> Address:
        """redis://[user:pass@]host:port/db, rediss://... (TLS), unix:///path?db=N."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        db_text = query.get("db", [parts.path.strip("/") if parts.scheme != "unix" else ""])[0]
        tls = None
        if parts.scheme == "rediss":
            tls = ssl.create_default_context()
            if query.get("ssl_cert_reqs", [""])[0].lower() in ("none", "optional"):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            path=parts.path if parts.scheme == "unix" else None,
            db=int(db_text or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


# Replies that mean "Redis cannot take this now", as opposed to a bug in a command.
_UNAVAILABLE_REPLIES = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
_REFUSED_UNRUN = ("CLUSTERDOWN", "TRYAGAIN")


class Breaker:
    """A circuit breaker: `failures` consecutive failed calls open it; while open, calls fail
    at once; `reset_after` seconds later one call goes through as a probe, and the first answer
    from Redis closes it again (a failed probe opens it for another `reset_after`).

    A call that fails is one that got no answer: its connection dropped, timed out or could not
    be opened. Error replies are answers. `failures=0` never opens it.
    """

    def __init__(self, failures: int = 5, reset_after: float = 0.5, probe_timeout: float = 2.0):
        self.threshold = failures
        self.reset_after = reset_after
        self.probe_timeout = probe_timeout
        #: True while calls go to Redis; read on every call, so a plain attribute.
        self.closed = True
        self.failures = 0  # consecutive, since the last answer
        self.opened = 0  # how many times it has opened, for /metrics
        self._retry_at = 0.0
        self._probe_until = 0.0  # while a probe is out: when it counts as lost

    def admit(self) -> BackendError | None:
        """None when a call may go to Redis now; otherwise the error to fail it with."""
        if self.closed:
            return None
        now = time.monotonic()
        if now >= self._retry_at and now >= self._probe_until:
            # This call is the probe; the others keep failing fast until it is answered.
            self._probe_until = now + self.probe_timeout
            return None
        wait = max(self._retry_at, self._probe_until) - now
        return BackendError(
            "Redis keeps failing; calls fail at once until it answers a probe again",
            retry_after=max(1, math.ceil(wait)),
            unsent=True,
        )

    def answered(self) -> None:
        self.failures = 0
        if not self.closed:
            self.closed = True
            self._probe_until = 0.0
            logger.warning("Redis answers again; circuit closed")

    def failed(self, calls: int = 1) -> None:
        self.failures += calls
        probing = self._probe_until > 0.0
        if not self.closed or (self.threshold and self.failures >= self.threshold):
            if self.closed:
                self.opened += 1
                logger.warning(
                    "%d calls to Redis failed in a row; circuit open: failing fast", self.failures
                )
            elif probing:
                logger.info("Redis probe failed; circuit stays open")
            self.closed = False
            self._probe_until = 0.0
            self._retry_at = time.monotonic() + self.reset_after


def _refusal(error: hiredis.ReplyError) -> Exception:
    """Redis refusing for now is `BackendError` (503); any other error reply stays as it is."""
    if str(error).startswith(_UNAVAILABLE_REPLIES):
        # A cluster that is down or moving a slot refuses before running anything.
        unsent = str(error).startswith(_REFUSED_UNRUN)
        return BackendError(f"Redis refused the command: {error}", unsent=unsent)
    return error


class _Protocol(asyncio.Protocol):
    def __init__(
        self,
        on_push: Callable[[list[Any]], None],
        on_lost: Callable[[int], None],
        breaker: Breaker,
    ) -> None:
        self._reader = hiredis.Reader(notEnoughData=_INCOMPLETE)
        # (reply future, deadline): replies come in order, so the oldest is the one to watch.
        self._waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._buffer: list[bytes] = []
        self._on_push = on_push
        self._on_lost = on_lost
        self._breaker = breaker
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        self.timeout = 2.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, though they implement it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A pipelined write must leave at once, not wait for the previous one's ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, command: bytes, block: float = 0.0) -> asyncio.Future[Any]:
        """Queue `command`; `block` is how long Redis may hold its reply back on purpose."""
        if self.closed:
            raise BackendError("Redis connection closed", unsent=True)
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self._buffer:
            self._loop.call_soon(self._flush)
        self._buffer.append(command)
        self._waiters.append((future, time.monotonic() + self.timeout + block))
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self.timeout, self._check_timeout)
        return future

    def send_unanswered(self, command: bytes) -> None:
        """Queue a command whose only answer is a push (SUBSCRIBE, in RESP3): no reply to wait
        for, so nothing to hand the next reply to by mistake."""
        if self.closed:
            raise BackendError("Redis connection closed", unsent=True)
        if not self._buffer:
            self._loop.call_soon(self._flush)
        self._buffer.append(command)

    def _flush(self) -> None:
        if self.transport is not None and not self.closed and self._buffer:
            self.transport.write(b"".join(self._buffer))
        self._buffer.clear()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        breaker = self._breaker
        if breaker.failures or not breaker.closed:
            breaker.answered()  # bytes from Redis: it is alive
        try:
            while (reply := reader.gets()) is not _INCOMPLETE:
                if isinstance(reply, hiredis.PushNotification):
                    self._on_push(reply)
                    continue
                future, _ = self._waiters.popleft()
                if future.done():  # its caller was cancelled; the reply still had to be read
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_refusal(reply))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            logger.error("Redis sent what cannot be parsed (%s); reconnecting", exc)
            self.abort()

    def _check_timeout(self) -> None:
        self._watchdog = None
        if not self._waiters or self.closed:
            return
        due = self._waiters[0][1] - time.monotonic()
        if due <= 0:
            logger.warning("Redis did not answer in time (%.1f s); reconnecting", self.timeout)
            self.abort()
        else:
            self._watchdog = self._loop.call_later(due, self._check_timeout)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        error = BackendError(f"Redis connection lost: {exc}" if exc else "Redis connection lost")
        failed = 0
        while self._waiters:
            future, _ = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)
                failed += 1
        self._on_lost(failed)


class Pipeline:
    """A self-healing pipelined connection; `execute` is safe from any task on one event loop."""

    def __init__(
        self,
        address: Address,
        *,
        timeout: float = 2.0,
        tracking_prefixes: Sequence[str] = (),
        on_invalidate: Invalidation | None = None,
        breaker: Breaker | None = None,
        setup: Sequence[tuple[bytes, ...]] = (),
        on_push: Callable[[list[Any]], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        #: Commands every new connection sends after it authenticates (e.g. READONLY).
        self.setup = tuple(setup)
        #: Shared by every connection to the same Redis, so that they fail fast together.
        self.breaker = breaker or Breaker(probe_timeout=timeout)
        self.tracking_prefixes = tuple(tracking_prefixes)
        self.on_invalidate = on_invalidate
        #: Told every push that is not an invalidation (a subscription's messages).
        self.on_push = on_push
        #: Told when a connection drops: what it had subscribed to is gone with it.
        self.on_lost = on_lost
        #: True while Redis is pushing invalidations for `tracking_prefixes` to this connection.
        self.tracking = False
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (one is made on the next command if not)."""
        return self._protocol is not None and not self._protocol.closed

    def execute(self, *args: bytes | str | int | float) -> Awaitable[Any]:
        """Send a command; await the result for its reply.

        Connected, this is the reply's future itself, not a coroutine around it: one frame
        less on every Redis call of every request. While the breaker is open, it is a future
        that has already failed.
        """
        protocol = self._protocol
        if protocol is not None and self.breaker.closed and not protocol.closed:
            return protocol.send(pack_command(args))
        return self._slow_path(args, 0.0)

    def execute_blocking(self, block: float, *args: bytes | str | int | float) -> Awaitable[Any]:
        """As `execute`, for a command that Redis may hold for up to `block` seconds (XREAD
        BLOCK, WAIT): its deadline is that much later."""
        protocol = self._protocol
        if protocol is not None and self.breaker.closed and not protocol.closed:
            return protocol.send(pack_command(args), block)
        return self._slow_path(args, block)

    async def execute_together(
        self, *commands: tuple[bytes | str | int | float, ...], block: float = 0.0
    ) -> list[asyncio.Future[Any]]:
        """Send `commands` back to back on one connection, in one write; their reply futures.

        `block` extends the deadline of the last one (e.g. a WAIT behind a write).
        """
        refused = self.breaker.admit()
        if refused is not None:
            raise refused
        protocol = await self._connected()
        *first, last = commands
        futures = [protocol.send(pack_command(command)) for command in first]
        return [*futures, protocol.send(pack_command(last), block)]

    def _slow_path(
        self, args: tuple[bytes | str | int | float, ...], block: float
    ) -> Awaitable[Any]:
        refused = self.breaker.admit()
        if refused is not None:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(refused)
            return failed
        return self._connect_and_send(args, block)

    async def _connect_and_send(
        self, args: tuple[bytes | str | int | float, ...], block: float
    ) -> Any:
        protocol = await self._connected()
        return await protocol.send(pack_command(args), block)

    async def send_unanswered(self, *args: bytes | str | int | float) -> None:
        """Send a command that Redis answers with a push only (see `_Protocol.send_unanswered`),
        connecting first if need be."""
        refused = self.breaker.admit()
        if refused is not None:
            raise refused
        protocol = await self._connected()
        protocol.send_unanswered(pack_command(args))

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    def _lost(self, failed: int) -> None:
        # A connection that drops while idle fails nothing now, but tells as much about Redis.
        self.breaker.failed(max(failed, 1))
        self.tracking = False
        if self.on_invalidate is not None:
            # Invalidations may have been sent while nobody was listening.
            self.on_invalidate(None)
        if self.on_lost is not None:
            self.on_lost()

    def _push(self, message: list[Any]) -> None:
        if message and message[0] == b"invalidate":
            if self.on_invalidate is not None:
                self.on_invalidate(message[1])
        elif self.on_push is not None:
            self.on_push(message)

    async def _connected(self) -> _Protocol:
        """The open connection, made first if there is none (or it closed)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return protocol

    async def _connect(self) -> _Protocol:
        # One connection attempt at a time; every caller waiting meanwhile shares its outcome.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        address = self.address
        protocol: _Protocol | None = None

        def make() -> _Protocol:
            made = _Protocol(self._push, self._lost, self.breaker)
            made.timeout = self.timeout
            return made

        try:
            async with asyncio.timeout(self.timeout):
                if address.path is not None:
                    _, protocol = await loop.create_unix_connection(make, address.path)
                else:
                    _, protocol = await loop.create_connection(
                        make, address.host, address.port, ssl=address.tls
                    )
                await self._handshake(protocol)
        except BaseException as exc:
            if protocol is None:
                self.breaker.failed()
            else:
                protocol.abort()  # a half-open connection is dropped, and counts as a failure
            if isinstance(exc, OSError | TimeoutError):
                detail = exc or type(exc).__name__
                raise BackendError(f"cannot connect to Redis: {detail}", unsent=True) from exc
            raise
        self._protocol = protocol
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        address = self.address
        hello: list[bytes | str] = [b"HELLO", b"3"]
        if address.password is not None:
            hello += [b"AUTH", address.username or "default", address.password]
        try:
            await protocol.send(pack_command(tuple(hello)))
            resp3 = True
        except hiredis.ReplyError as exc:
            if "NOPROTO" not in str(exc) and "unknown command" not in str(exc).lower():
                raise BackendError(f"Redis refused the connection: {exc}", unsent=True) from exc
            resp3 = False  # Redis before 6: no RESP3, so no invalidation pushes either
            if address.password is not None:
                auth = [
                    b"AUTH",
                    *([address.username] if address.username else []),
                    address.password,
                ]
                await protocol.send(pack_command(tuple(auth)))
        if address.db:
            await protocol.send(pack_command((b"SELECT", address.db)))
        for extra in self.setup:
            await protocol.send(pack_command(extra))
        self.tracking = False
        if resp3 and self.tracking_prefixes:
            command: list[bytes | str] = [b"CLIENT", b"TRACKING", b"ON", b"BCAST"]
            for prefix in self.tracking_prefixes:
                command += [b"PREFIX", prefix]
            command.append(b"NOLOOP")
            try:
                await protocol.send(pack_command(tuple(command)))
                self.tracking = True
            except hiredis.ReplyError as exc:
                logger.warning("Redis cannot track keys for this node's cache: %s", exc)
        if self.on_invalidate is not None:
            # Whatever was cached before this connection existed was not tracked by it.
            self.on_invalidate(None)
