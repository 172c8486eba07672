"""SSE endpoints: /v1/contexts/{token}/events and /v1/sessions/{id}/events.

Both are answered by `Front`, as bare ASGI handlers: a stream holds its request open for as
long as the client listens, and needs the raw `send` and `receive` anyway.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
from typing import Literal

from fastctx import _core
from fastctx.asgi.exchange import Exchange
from fastctx.asgi.guard import StreamLimit
from fastctx.backends import Backend, Event, context_stream, event_order, session_stream
from fastctx.clock import now_ms
from fastctx.errors import BadRequest, NotFound
from fastctx.http.includes import NOTHING, Include, Includes, parse_include
from fastctx.http.routes import Found, Handler
from fastctx.registry import Registry
from fastctx.streams import ChangeStream, Subscription

PING_INTERVAL = 15.0  # seconds between `: ping` comments, which keep proxies from timing out
RETRY_MS = 1000  # how soon a client should reconnect after the stream ends
# How long after a followed context's expiry this node reads it, so that the backend notices
# the expiry then (Redis expires keys it is not asked for only as its sampling comes upon
# them, which in a large keyspace can be many minutes later).
EXPIRY_LOOK_DELAY = 0.05
CONTEXTS = "/v1/contexts/"
SESSIONS = "/v1/sessions/"
SUFFIX = "/events"

_PARAMETERS = frozenset({"include"})
_WITH_DATA = ("created", "updated")  # the events `?include=` adds members to


def last_event_id(ex: Exchange) -> str | None:
    """The client's `Last-Event-ID`, checked; None when it sent none."""
    raw = ex.header(b"last-event-id")
    if raw is None or not raw.strip():
        return None
    try:
        text = raw.decode("ascii").strip()
        event_order(text)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest('Last-Event-ID must be an event id ("<ms>-<seq>")') from None
    return text


class EventRoutes:
    def __init__(
        self, registry: Registry, changes: ChangeStream, streams: StreamLimit | None = None
    ) -> None:
        self.registry = registry
        self.streams = streams or StreamLimit(0)
        self.backend = registry.backend
        self.changes = changes
        self.pinger = Pinger()
        self.looks = ExpiryLooks(registry.backend)
        self.includes = Includes(registry)
        self._context: dict[str, Handler] = {"GET": self.context_events}
        self._session: dict[str, Handler] = {"GET": self.session_events}

    def route(self, path: str) -> Found | None:
        """(route template, handlers by method, token or session id, query parameters) for an
        /events path."""
        if not path.endswith(SUFFIX):
            return None
        if path.startswith(CONTEXTS):
            ident = path[len(CONTEXTS) : -len(SUFFIX)]
            template, handlers = "/v1/contexts/{token}/events", self._context
        elif path.startswith(SESSIONS):
            ident = path[len(SESSIONS) : -len(SUFFIX)]
            template, handlers = "/v1/sessions/{id}/events", self._session
        else:
            return None
        return (template, handlers, ident, _PARAMETERS) if ident and "/" not in ident else None

    # Each holds one of the worker's stream slots from the start (503 when none is left): in
    # the handler itself, not in a wrapper around it, whose frame every idle stream would keep.
    async def context_events(self, ex: Exchange, tenant: str, token: str) -> int:
        with self.streams:
            after = last_event_id(ex)
            include = parse_include(ex.query("include"))
            if not _core.is_token(token):
                raise NotFound("no such context")
            frame = await self.backend.contexts.get(tenant, token)
            stream = context_stream(tenant, token)
            if frame is None:
                return await self._serve(ex, tenant, stream, after, False, "context", include)
            self.looks.follow(tenant, token, _expires_at(frame))
            try:
                return await self._serve(ex, tenant, stream, after, True, "context", include)
            finally:
                self.looks.leave(tenant, token)

    async def session_events(self, ex: Exchange, tenant: str, session: str) -> int:
        with self.streams:
            after = last_event_id(ex)
            include = parse_include(ex.query("include"))
            if not _core.is_token(session):
                raise NotFound("no such session")
            live = await self.backend.sessions.touch(tenant, session, now_ms()) is not None
            stream = session_stream(tenant, session)
            return await self._serve(ex, tenant, stream, after, live, "session", include)

    async def _serve(
        self,
        ex: Exchange,
        tenant: str,
        stream: str,
        after: str | None,
        live: bool,
        of: Literal["context", "session"],
        include: Include,
    ) -> int:
        """Replay what the client missed, then follow the stream until either side ends it.

        A context's stream ends with its `deleted` or `expired` event; a session's with its own
        `expired` event (the one without a token), or when the client leaves.
        """
        if not live:
            # Gone, but its stream may still tell how it ended: replay that, then stop.
            events = await self.backend.changes.since(stream, after or "0-0")
            if not events and await self.backend.changes.last_id(stream) == "0-0":
                raise NotFound(f"no such {of}")
            if after is None:
                events = events[-1:]
            await self._start(ex)
            for event in events:
                await self._send(ex, tenant, event, include)
            await ex.send({"type": "http.response.body", "body": b""})
            return 200
        start = after if after is not None else await self.backend.changes.last_id(stream)
        subscription = self.changes.subscribe(stream, start)
        watcher = asyncio.create_task(ex.until_disconnect(subscription.close))
        self.pinger.add(subscription)
        try:
            # Subscribed first, then read what is already there: nothing falls in between.
            replay = await self.backend.changes.since(stream, start)
            await self._start(ex)
            sent = event_order(start)
            ended = False
            for event in replay:
                ended = await self._send(ex, tenant, event, include) and _ends(event, of)
                sent = event_order(event[0])
            while not ended and await _wait(subscription, ex, self.pinger):
                while subscription.events and not ended:
                    event = subscription.events.popleft()
                    if event_order(event[0]) > sent:
                        ended = await self._send(ex, tenant, event, include)
                        ended = ended and _ends(event, of)
                        sent = event_order(event[0])
            if not watcher.done():  # the client is still there to be told the stream ended
                await ex.send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went while we wrote (the ASGI server raises OSError then)
        finally:
            self.pinger.remove(subscription)
            self.changes.unsubscribe(subscription)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return 200

    async def _start(self, ex: Exchange) -> None:
        await ex.start_stream()
        # Some servers hold the headers back until the first body bytes.
        await ex.send(
            {"type": "http.response.body", "body": b"retry: %d\n\n" % RETRY_MS, "more_body": True}
        )

    async def _send(self, ex: Exchange, tenant: str, event: Event, include: Include) -> bool:
        """Send one event; True when it says a context or session is gone."""
        event_id, fields = event
        kind = fields.get("type", "updated")
        token = fields.get("token", "")
        session = fields.get("session") or None
        version = int(fields.get("version", "0"))
        data = b'{"token":%s,"version":%d,"session":%s' % (
            b'"%s"' % token.encode() if token else b"null",  # none: the session's own event
            version,
            b'"%s"' % session.encode() if session else b"null",
        )
        if include != NOTHING and kind in _WITH_DATA:
            data += await self.includes.members(tenant, event, include)
        body = b"id: %s\nevent: %s\ndata: %s}\n\n" % (event_id.encode(), kind.encode(), data)
        await ex.send({"type": "http.response.body", "body": body, "more_body": True})
        return kind in ("deleted", "expired")


def _ends(event: Event, of: Literal["context", "session"]) -> bool:
    """Whether a gone-event ends a stream of `of`: any does a context's; a session's ends
    only with the session's own (its contexts come and go within it)."""
    return of == "context" or not event[1].get("token")


class ExpiryLooks:
    """Reads each followed context just after it expires, from one timer per node.

    Redis expires a key nobody asks for only when its sampling comes upon it, which in a large
    keyspace can be many minutes later; the read makes it notice, and the backend appends the
    expired event. One heap entry per followed context, however many streams follow it: a
    timer per stream would cost each one a timer handle and a libuv timer (~700 bytes).
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._followers: collections.Counter[tuple[str, str]] = collections.Counter()
        self._due: dict[tuple[str, str], float] = {}  # when each context is to be read
        self._heap: list[tuple[float, str, str]] = []  # (due, tenant, token), earliest first
        self._timer: asyncio.TimerHandle | None = None
        self._reads: set[asyncio.Task[bytes | None]] = set()

    @property
    def scheduled(self) -> int:
        """Reads waiting in the heap, including those of contexts nobody follows any more."""
        return len(self._heap)

    def follow(self, tenant: str, token: str, expires_at_ms: int) -> None:
        key = (tenant, token)
        self._followers[key] += 1
        if key in self._due:
            return  # another stream of this node waits for the same expiry
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, (expires_at_ms - now_ms()) / 1000) + EXPIRY_LOOK_DELAY
        self._due[key] = due
        heapq.heappush(self._heap, (due, tenant, token))
        if self._timer is None or due < self._timer.when():
            self._arm(loop)

    def leave(self, tenant: str, token: str) -> None:
        key = (tenant, token)
        if self._followers[key] > 1:
            self._followers[key] -= 1
            return
        del self._followers[key]
        self._due.pop(key, None)
        if not self._due:
            self._heap.clear()
            self._arm(asyncio.get_running_loop())
        elif len(self._heap) > 2 * len(self._due) + 64:
            # Entries of contexts nobody follows any more wait in the heap until they are due;
            # rebuilt when they outnumber the rest, it stays the size of what is followed.
            self._heap = [(due, *key) for key, due in self._due.items()]
            heapq.heapify(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(self._heap[0][0], self._fire, loop) if self._heap else None

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._heap and self._heap[0][0] <= now:
            due, tenant, token = heapq.heappop(self._heap)
            if self._due.get((tenant, token)) != due:
                continue  # nobody follows it any more
            del self._due[(tenant, token)]  # read once; its followers stay counted
            read = asyncio.ensure_future(self.backend.contexts.get(tenant, token))
            self._reads.add(read)
            read.add_done_callback(self._read)
        self._arm(loop)

    def _read(self, task: asyncio.Task[bytes | None]) -> None:
        self._reads.discard(task)
        if not task.cancelled():
            task.exception()  # a backend that fails now leaves it to its own expiry sweep


class Pinger:
    """Tells each idle stream of the node when to send its `: ping`, from one timer.

    A timer per stream would cost ten thousand timers, and as many timeouts raised, every
    PING_INTERVAL when as many clients listen; this one wakes one TICKS-th of the streams at
    a time, so their pings are spread over the interval, not sent in one burst.
    """

    TICKS = 15

    def __init__(self) -> None:
        self._wheel: list[set[Subscription]] = [set() for _ in range(self.TICKS)]
        self._tick = 0
        self._count = 0
        self.due: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, subscription: Subscription) -> None:
        # The slot just served comes round again in one whole interval.
        self._wheel[self._tick].add(subscription)
        self._count += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="fastctx-sse-pings")

    def remove(self, subscription: Subscription) -> None:
        for slot in self._wheel:
            if subscription in slot:
                slot.discard(subscription)
                self._count -= 1
                break
        self.due.discard(subscription)
        if not self._count and self._task is not None:
            self._task.cancel()  # nothing left to ping: no timer outlives the streams
            self._task = None

    async def _run(self) -> None:
        while self._count:
            await asyncio.sleep(PING_INTERVAL / self.TICKS)
            self._tick = (self._tick + 1) % self.TICKS
            for subscription in self._wheel[self._tick]:
                self.due.add(subscription)
                subscription.ready.set()


async def _wait(subscription: Subscription, ex: Exchange, pinger: Pinger) -> bool:
    """Wait for events, pinging when told to; False once the subscription is closed."""
    while not subscription.events:
        if subscription.closed:
            return False
        if subscription in pinger.due:
            pinger.due.discard(subscription)
            await ex.send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
        subscription.ready.clear()
        await subscription.ready.wait()
    return True


def _expires_at(frame: bytes) -> int:
    """A frame's expires_at, from its header alone (a sealed payload need not be opened)."""
    _core.frame_version(frame)  # checks the header: FrameError for one that is not a frame
    return int.from_bytes(frame[_EXPIRES_AT], "little")


_EXPIRES_AT = slice(28, 36)  # see rust_core/src/frame.rs
