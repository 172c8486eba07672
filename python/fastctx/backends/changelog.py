"""Change streams on Redis: reading them, waiting for them with a blocking XREAD, and the
`expired` events that Redis's keyspace notifications call for. A stream lives on one slot,
so the reads and the expired events serve the cluster backend too."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastctx.backends import ChangeLog, Event, StreamEvent, event_order
from fastctx.backends.commands import (
    CONTEXT_EVENTS_SCRIPT,
    EXPIRED_SCRIPT,
    SESSION_EXPIRED_SCRIPT,
    Commands,
    event,
    ignore_result,
    text,
)
from fastctx.backends.keys import (
    context_key,
    context_stream,
    expired_target,
    session_expired_key,
    session_key,
    session_stream,
    stream_context,
)
from fastctx.backends.pipeline import Pipeline

logger = logging.getLogger("fastctx")

READ_COUNT = 1000  # events per stream per XREAD, at most
EXPIRY_BATCH = 256  # expired keys announced concurrently, at most


class StreamReads(ChangeLog):
    """Reads of one stream, which lives on one slot: the same on one Redis and on a cluster;
    how to wait for new events is each backend's own.

    A context made outside a session has no stream until its first change (scripts.CREATE):
    its stream's reads take its `created` event from its frame until then, under the id the
    first change will append it with.
    """

    def __init__(self, commands: Commands) -> None:
        self._run = commands.run
        self._script = commands.script

    async def since(self, stream: str, after: str) -> list[Event]:
        context = stream_context(stream)
        if context is None:
            reply = await self._run(b"XRANGE", stream, f"({after}", b"+")
            return [event(entry) for entry in reply or ()]
        return await self._context_events(stream, context, after)

    async def last_id(self, stream: str) -> str:
        context = stream_context(stream)
        if context is None:
            reply = await self._run(b"XREVRANGE", stream, b"+", b"-", b"COUNT", 1)
            return text(reply[0][0]) if reply else "0-0"
        found = await self._context_events(stream, context, "")
        return found[-1][0] if found else "0-0"

    async def _context_events(
        self, stream: str, context: tuple[str, str], after: str
    ) -> list[Event]:
        """A context stream's events after `after` (its last alone for ""); with no stream yet,
        the `created` event its frame implies, unless `after` is past it."""
        key, token = context
        found = await self._script(CONTEXT_EVENTS_SCRIPT, [stream, key], [after])
        if not isinstance(found, bytes):
            return [event(entry) for entry in found]
        if not found:
            return []  # no stream, and the context is gone too
        # The id scripts.OPENED_LUA appends it under at the context's first change.
        created_id = f"{max(int.from_bytes(found, 'little'), 1)}-0"
        if after and event_order(created_id) <= event_order(after):
            return []
        return [(created_id, {"type": "created", "version": "1", "token": token, "session": ""})]

    async def last(self, stream: str) -> Event | None:
        """The newest event written to `stream`, if it has one (an unwritten `created` event
        is not: the expiry that asks has no frame to take it from)."""
        reply = await self._run(b"XREVRANGE", stream, b"+", b"-", b"COUNT", 1)
        return event(reply[0]) if reply else None


class RedisChangeLog(StreamReads):
    """Waits with a blocking XREAD, on a connection of its own (`reader`): on the shared
    pipeline it would hold up every reply queued behind it."""

    def __init__(self, commands: Commands, reader: Pipeline) -> None:
        super().__init__(commands)
        self.reader = reader
        self._reader_id: int | None = None  # its CLIENT ID while an XREAD blocks on it
        self._interrupted = False

    async def wait(self, cursors: dict[str, str], timeout_ms: int) -> list[StreamEvent]:
        if not cursors:
            return []
        self._interrupted = False
        # Sent in one write: once CLIENT ID is answered, Redis has taken the XREAD too, so an
        # interruption after that point finds it blocked.
        asking_id = asyncio.ensure_future(self.reader.execute(b"CLIENT", b"ID"))
        reading = asyncio.ensure_future(
            self.reader.execute_blocking(
                timeout_ms / 1000, b"XREAD", b"COUNT", READ_COUNT, b"BLOCK", timeout_ms,
                b"STREAMS", *cursors, *cursors.values(),
            )
        )  # fmt: skip
        try:
            self._reader_id = await asking_id
            if self._interrupted:
                self.interrupt()
            reply = await reading
        finally:
            self._reader_id = None
            reading.cancel()
        if not reply:
            return []
        streams = reply.items() if isinstance(reply, dict) else reply
        return [(text(stream), event(entry)) for stream, entries in streams for entry in entries]

    def interrupt(self) -> None:
        self._interrupted = True
        if self._reader_id is not None:
            unblock = self._run(b"CLIENT", b"UNBLOCK", self._reader_id)
            asyncio.ensure_future(unblock).add_done_callback(ignore_result)

    async def close(self) -> None:
        await self.reader.close()


class Expiries:
    """Appends the `expired` events of contexts and sessions whose keys Redis let expire,
    as the keyspace notifications of their expiry come in (`heard`)."""

    def __init__(self, commands: Commands, streams: StreamReads) -> None:
        self._script = commands.script
        self.streams = streams
        self._heard: list[tuple[str, str, str]] = []  # heard of, event not yet appended
        self._announcer: asyncio.Task[None] | None = None

    def heard(self, key: bytes) -> None:
        target = expired_target(key)
        if target is None:
            return
        self._heard.append(target)
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._announce(), name="fastctx-expired")

    async def close(self) -> None:
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer

    async def _announce(self) -> None:
        while self._heard:
            batch = self._heard[:EXPIRY_BATCH]
            del self._heard[:EXPIRY_BATCH]
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
            for _, fields in await self.streams.since(session_stream(tenant, ident), "0-0"):
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
            return bool(await self._script(SESSION_EXPIRED_SCRIPT, keys, [ident]))
        return await self.context_expired(tenant, ident)

    async def context_expired(self, tenant: str, token: str) -> bool:
        """The context's `expired` event and, in the same script, its session's."""
        stream = context_stream(tenant, token)
        last = await self.streams.last(stream)
        session = last[1].get("session", "") if last is not None else ""
        keys = [context_key(tenant, token), stream]
        if session:
            keys += [session_key(tenant, session), session_stream(tenant, session)]
        return bool(await self._script(EXPIRED_SCRIPT, keys, [token, session]))
