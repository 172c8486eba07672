"""Keyspace notifications of expired keys, heard on a Redis connection of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import hiredis

from fastctx.backends.pipeline import Address, Breaker, Pipeline
from fastctx.errors import BackendError

logger = logging.getLogger("fastctx")

RETRY_DELAY = 1.0  # seconds between attempts to (re)connect
IDLE_PING = 15.0  # seconds between PINGs that ask Redis whether the connection still works
# What Redis must publish: E (keyevent channels) and x (expired); "A" includes "x".
REQUIRED_FLAGS = "Ex"


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
        listened = False
        while True:
            try:
                await self._listen()
            except (BackendError, OSError, TimeoutError, hiredis.HiredisError) as exc:
                # Before the first subscription, a Redis that does not answer is what start-up
                # reports (once, naming the URL); an interruption after it is news.
                listened = listened or self.listening.is_set()
                if failures == 0 and listened:
                    logger.warning("expired-key notifications interrupted (%r); retrying", exc)
                elif failures == 0:
                    logger.debug("expired-key notifications wait for Redis (%r)", exc)
                failures += 1
            else:
                failures = 0
            self.listening.clear()
            await asyncio.sleep(RETRY_DELAY)

    async def _listen(self) -> None:
        """One connection's life: subscribe, then hear messages until the connection drops.

        The connection is a `Pipeline`, whose reader loop hands replies to their callers and
        pushes (in RESP3, the subscription's confirmation and its messages) to `pushed`.
        """
        lost = asyncio.Event()
        subscribed = asyncio.Event()

        def pushed(message: list[Any]) -> None:
            kind = message[0] if message else None
            if kind == b"message" and len(message) == 3:
                self.on_expired(message[2])
            elif kind == b"subscribe":
                subscribed.set()

        connection = Pipeline(
            self.address,
            timeout=self.timeout,
            breaker=Breaker(failures=0, probe_timeout=self.timeout),  # it retries on its own
            on_push=pushed,
            on_lost=lost.set,
        )
        try:
            await self._enable(connection)
            await connection.send_unanswered(b"SUBSCRIBE", self.channel)
            async with asyncio.timeout(self.timeout):
                await subscribed.wait()
            self.listening.set()
            while True:
                try:
                    async with asyncio.timeout(IDLE_PING):
                        await lost.wait()
                except TimeoutError:
                    # Whether the connection still works: unanswered, the pipeline drops it.
                    await connection.execute(b"PING")
                    continue
                raise BackendError("Redis closed the connection")
        finally:
            await connection.close()

    async def _enable(self, connection: Pipeline) -> None:
        flags = ""
        try:
            current = await connection.execute(b"CONFIG", b"GET", b"notify-keyspace-events")
        except hiredis.ReplyError:
            missing = "Ex"
        else:
            if isinstance(current, dict):  # RESP3 answers a map
                current = [item for pair in current.items() for item in pair]
            if isinstance(current, list) and len(current) == 2:
                flags = current[1].decode()
            missing = missing_flags(flags)
        if not missing:
            return
        try:
            await connection.execute(b"CONFIG", b"SET", b"notify-keyspace-events", flags + missing)
        except hiredis.ReplyError as refused:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "Redis does not publish expired-key events and refused to turn them on (%s): "
                    "set notify-keyspace-events to include %r for `expired` change events",
                    refused,
                    REQUIRED_FLAGS,
                )
