"""The per-node ChangeStream: one backend read for every watched stream, fanned out in process."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from fastctx.backends import Backend, Event, event_order
from fastctx.errors import BackendError

logger = logging.getLogger("fastctx")

# How long one read waits for events before it starts over; subscribing to a new stream
# interrupts it, so this bounds nothing a client sees.
WAIT_MS = 5000
RETRY_DELAY = 0.5  # after a failed read (the backend is down)
BUFFER = 1000  # events a subscriber may fall behind before it is cut off (it can resume)
# What an idle subscriber's `events` is: empty, and it stays so (maxlen 0 drops an append).
_NO_EVENTS: collections.deque[Event] = collections.deque(maxlen=0)


class Ready:
    """A flag that one task waits on: asyncio.Event's interface without its deque of waiters.

    A node holds one per subscriber, ten thousand of them when as many clients listen, so
    what each costs counts: asyncio.Event allocates a deque of waiters up front, and its
    `wait` a coroutine and a future per call, where this one's `wait` is just the future.
    """

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[bool] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def clear(self) -> None:
        self._flag = False

    def wait(self) -> asyncio.Future[bool]:
        """Resolved (True) once the flag is set. One waiter only: when a wait is cancelled
        (a timeout), so is the future, and the next `wait` makes a new one."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            if self._flag:
                waiter.set_result(True)
        return waiter


class Subscription:
    """One subscriber's bounded buffer; closed when it overflows or the node stops.

    `ready` is set whenever events arrive or the subscription closes; a caller that serves
    several subscriptions from one task may replace it with one flag (an asyncio.Event) of
    its own for all of them.
    """

    __slots__ = ("_events", "closed", "limit", "overflowed", "ready", "stream")

    def __init__(self, stream: str, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self._events: collections.deque[Event] | None = None  # made by the first event
        self.ready: Ready | asyncio.Event = Ready()
        self.closed = False
        self.overflowed = False

    @property
    def events(self) -> collections.deque[Event]:
        """The events received and not yet taken, oldest first."""
        return _NO_EVENTS if self._events is None else self._events

    def offer(self, event: Event) -> None:
        if self.closed:
            return
        if self._events is None:
            self._events = collections.deque()
        elif len(self._events) >= self.limit:
            self.overflowed = True
            self.close()
            return
        self._events.append(event)
        self.ready.set()

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class ChangeStream:
    """Watches the streams that have local subscribers with one blocking backend read at a time.

    However many subscribers a stream has here, this node reads it once; each event is then
    copied to every subscriber's buffer. A subscriber that lets its buffer fill is closed
    rather than let the node hold an unbounded backlog for it.
    """

    def __init__(self, backend: Backend, buffer: int = BUFFER) -> None:
        self.changes = backend.changes
        self.buffer = buffer
        self._subscribers: dict[str, set[Subscription]] = {}
        self._cursors: dict[str, str] = {}  # stream -> id of the last event read
        self._reader: asyncio.Task[None] | None = None

    @property
    def watched(self) -> int:
        """How many streams have subscribers on this node."""
        return len(self._subscribers)

    def subscribe(self, stream: str, after: str) -> Subscription:
        """Follow `stream` from the event after `after` (events at or before it may arrive too:
        the caller drops what it has already sent)."""
        subscription = Subscription(stream, self.buffer)
        watchers = self._subscribers.setdefault(stream, set())
        cursor = self._cursors.get(stream)
        if not watchers or cursor is None or event_order(after) < event_order(cursor):
            # Reading again from an earlier point repeats events to the others, who drop
            # what they have sent; a client's cursor from the future must not hide the present.
            self._cursors[stream] = after
            self.changes.interrupt()  # the read in progress does not include it
        watchers.add(subscription)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="fastctx-changes")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        watchers = self._subscribers.get(subscription.stream)
        if watchers is None:
            return
        watchers.discard(subscription)
        if not watchers:
            del self._subscribers[subscription.stream]
            self._cursors.pop(subscription.stream, None)

    async def close(self) -> None:
        for watchers in list(self._subscribers.values()):
            for subscription in list(watchers):
                subscription.close()
        self._subscribers.clear()
        self._cursors.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _read_forever(self) -> None:
        while self._subscribers:
            try:
                found = await self.changes.wait(dict(self._cursors), WAIT_MS)
            except (BackendError, OSError) as exc:
                logger.warning("cannot read change streams (%s); retrying", exc)
                await asyncio.sleep(RETRY_DELAY)
                continue
            for stream, event in found:
                cursor = self._cursors.get(stream)
                if cursor is None or event_order(event[0]) <= event_order(cursor):
                    continue  # nobody watches it any more, or it was re-subscribed from later
                self._cursors[stream] = event[0]
                for subscription in list(self._subscribers.get(stream, ())):
                    subscription.offer(event)
