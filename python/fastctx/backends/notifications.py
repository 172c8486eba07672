"""Keyspace notifications of expired keys, heard on a Redis connection of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import hiredis

from fastctx.backends.pipeline import Address, pack_command

logger = logging.getLogger("fastctx")

RETRY_DELAY = 1.0  # seconds between attempts to (re)connect
IDLE_PING = 15.0  # seconds of silence before asking Redis whether the connection still works
# What Redis must publish: E (keyevent channels) and x (expired); "A" includes "x".
REQUIRED_FLAGS = "Ex"
_INCOMPLETE = object()


def missing_flags(current: str) -> str:
    """The flags `notify-keyspace-events` lacks for expired-key events ("" when it has them)."""
    missing = "" if "E" in current else "E"
    if "x" not in current and "A" not in current:
        missing += "x"
    return missing


class ExpiryListener:
    """Subscribes to `__keyevent@<db>__:expired` and reports each expired key's name.

    Redis publishes a notification to every subscriber and keeps none for later: a key that
    expires while this connection is down goes unreported. At each connection it turns the
    notifications on (CONFIG SET) if they are off and Redis lets it.
    """

    def __init__(self, address: Address, on_expired: Callable[[bytes], None], timeout: float):
        self.address = address
        self.on_expired = on_expired
        self.timeout = timeout
        #: Set while the subscription is in place.
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    @property
    def channel(self) -> bytes:
        return b"__keyevent@%d__:expired" % self.address.db

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="fastctx-expiry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening.clear()

    async def _run_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
            except (OSError, TimeoutError, EOFError, hiredis.HiredisError) as exc:
                if failures == 0:
                    logger.warning("expired-key notifications interrupted (%r); retrying", exc)
                failures += 1
            else:
                failures = 0
            self.listening.clear()
            await asyncio.sleep(RETRY_DELAY)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self.address
        async with asyncio.timeout(self.timeout):
            if address.path is not None:
                return await asyncio.open_unix_connection(address.path)
            return await asyncio.open_connection(address.host, address.port, ssl=address.tls)

    async def _listen(self) -> None:
        reader, writer = await self._open()
        parser = hiredis.Reader(notEnoughData=_INCOMPLETE)

        async def reply(wait: float | None) -> Any:
            while (found := parser.gets()) is _INCOMPLETE:
                async with asyncio.timeout(wait):
                    data = await reader.read(65536)
                if not data:
                    raise EOFError("Redis closed the connection")
                parser.feed(data)
            return found

        async def call(*args: bytes | str) -> Any:
            writer.write(pack_command(args))
            return await reply(self.timeout)

        try:
            address = self.address
            if address.password is not None:
                user = [address.username] if address.username else []
                answer = await call(b"AUTH", *user, address.password)
                if isinstance(answer, hiredis.ReplyError):
                    raise OSError(f"Redis refused the credentials: {answer}")
            await self._enable(call)
            subscribed = await call(b"SUBSCRIBE", self.channel)
            if isinstance(subscribed, hiredis.ReplyError):
                raise OSError(f"Redis refused SUBSCRIBE: {subscribed}")
            self.listening.set()
            quiet = 0
            while True:
                try:
                    message = await reply(IDLE_PING)
                except TimeoutError:
                    quiet += 1
                    if quiet > 1:
                        raise  # not even the PING was answered
                    writer.write(pack_command((b"PING",)))
                    continue
                quiet = 0
                if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                    self.on_expired(message[2])
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _enable(self, call: Callable[..., Any]) -> None:
        current = await call(b"CONFIG", b"GET", b"notify-keyspace-events")
        flags = ""
        if isinstance(current, list) and len(current) == 2:
            flags = current[1].decode()
        missing = missing_flags(flags) if not isinstance(current, hiredis.ReplyError) else "Ex"
        if not missing:
            return
        done = await call(b"CONFIG", b"SET", b"notify-keyspace-events", flags + missing)
        if isinstance(done, hiredis.ReplyError) and not self._warned:
            self._warned = True
            logger.warning(
                "Redis does not publish expired-key events and refused to turn them on (%s): "
                "set notify-keyspace-events to include %r for `expired` change events",
                done,
                REQUIRED_FLAGS,
            )
