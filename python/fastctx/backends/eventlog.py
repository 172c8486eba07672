"""Change streams in process memory, with the ids, retention and semantics of Redis Streams."""

from __future__ import annotations

import asyncio

from fastctx.backends import (
    EVENTS_KEPT,
    EVENTS_MAX_AGE_MS,
    TRIM_AGE_MS,
    TRIM_LENGTH,
    Event,
    event_order,
)
from fastctx.clock import now_ms

Fields = tuple[str, str, str, str] | tuple[str, str, str, str, str]
"""An event's type, version, token and session ("" for none), in that order; then, for an
update made by a patch, the patch."""
_Entry = tuple[int, int, Fields]


class EventLog:
    """Streams by name; ids are "<ms>-<seq>" and grow across all streams, as Redis's do per one."""

    def __init__(self) -> None:
        # stream -> its one entry, or a list of them oldest first. Most contexts are written
        # once: a lone tuple of strings is soon untracked by the garbage collector, where a
        # list per stream would make every full collection walk a million of them.
        self._streams: dict[str, _Entry | list[_Entry]] = {}
        # stream -> when it may be dropped (ms), like the expiry of a Redis stream key
        self._expiry: dict[str, int] = {}
        self._last = (0, 0)
        self._wake = asyncio.Event()
        self._interrupted = False

    def append(self, stream: str, fields: Fields, keep_until: int) -> str:
        """Add an event; the stream lives at least until `keep_until` (ms)."""
        now = now_ms()
        ms, seq = (now, 0) if now > self._last[0] else (self._last[0], self._last[1] + 1)
        self._last = (ms, seq)
        entry = (ms, seq, fields)
        entries = self._streams.get(stream)
        if entries is None:
            self._streams[stream] = entry
            entries = [entry]
        elif isinstance(entries, tuple):
            entries = self._streams[stream] = [entries, entry]
        else:
            entries.append(entry)
        if self._expiry.get(stream, 0) < keep_until:
            self._expiry[stream] = keep_until
        if len(entries) > TRIM_LENGTH and entries[0][0] < now - TRIM_AGE_MS:
            # Drop what is both older than the hour and not among the last EVENTS_KEPT.
            cutoff = now - EVENTS_MAX_AGE_MS
            drop = 0
            while len(entries) - drop > EVENTS_KEPT and entries[drop][0] < cutoff:
                drop += 1
            del entries[:drop]
        self._wake.set()
        return f"{ms}-{seq}"

    def _live(self, stream: str, now: int) -> list[_Entry]:
        entries = self._streams.get(stream)
        if entries is None:
            return []
        if self._expiry.get(stream, 0) <= now:
            del self._streams[stream]
            self._expiry.pop(stream, None)
            return []
        return [entries] if isinstance(entries, tuple) else entries

    def since(self, stream: str, after: str) -> list[Event]:
        start = event_order(after)
        found: list[Event] = []
        # From the newest back: a waiter usually wants the last few of a long stream.
        for ms, seq, fields in reversed(self._live(stream, now_ms())):
            if (ms, seq) <= start:
                break
            kind, version, token, session, *patch = fields
            event = {"type": kind, "version": version, "token": token, "session": session}
            if patch:
                event["patch"] = patch[0]
            found.append((f"{ms}-{seq}", event))
        found.reverse()
        return found

    def last_id(self, stream: str) -> str:
        entries = self._live(stream, now_ms())
        return f"{entries[-1][0]}-{entries[-1][1]}" if entries else "0-0"

    def keep(self, stream: str, until: int) -> None:
        """Keep an existing stream at least until `until` (ms), like PEXPIRE on a Redis key."""
        if stream in self._streams and self._expiry.get(stream, 0) < until:
            self._expiry[stream] = until

    def sweep(self, now: int) -> None:
        for stream in [s for s, at in self._expiry.items() if at <= now]:
            self._live(stream, now)

    async def wait(self, cursors: dict[str, str], timeout_ms: int) -> list[tuple[str, Event]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            found = [
                (stream, event) for stream, after in cursors.items()
                for event in self.since(stream, after)
            ]  # fmt: skip
            remaining = deadline - loop.time()
            if found or remaining <= 0:
                return found
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                return []
            if self._interrupted:
                self._interrupted = False
                return []

    def interrupt(self) -> None:
        self._interrupted = True
        self._wake.set()
