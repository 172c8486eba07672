"""An event store for the official MCP Python SDK's Streamable HTTP transport, kept in fastctx.

With an event store, a client whose SSE stream broke reconnects with `Last-Event-ID` and gets
every message it missed. The SDK ships one in process memory only; this one keeps each stream
as a fastctx context (its events appended, so that a write costs one event, not the stream),
bounded in length and in time, and readable from any process.

The SDK hands one store to every session, and a stream's id is the id of the request it
answers, which repeats from one session to the next: build the app with
`streamable_http_app(server, events)` (or serve a `SessionManager`), which gives each session
a part of the store of its own, as FastMCP does for the stores it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

try:
    from mcp.server.streamable_http import EventCallback, EventId, EventMessage, StreamId
    from mcp.server.streamable_http import EventStore as SDKEventStore
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp_types import JSONRPCMessage
    from pydantic import TypeAdapter
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f'{__name__} needs the MCP SDK: pip install "fastctx[mcp]" ({missing})'
    ) from missing

from fastctx.client import AsyncClient
from fastctx.errors import InvalidPatch, NotFound

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server
    from mcp.server.mcpserver import MCPServer
    from starlette.applications import Starlette

__all__ = ["EventStore", "ScopedEventStore", "SessionManager", "streamable_http_app"]

_MESSAGE: TypeAdapter[JSONRPCMessage] = TypeAdapter(JSONRPCMessage)


class _Stream:
    """What this process knows of a stream it writes: its context and its next event."""

    def __init__(self, opening: asyncio.Future[str]) -> None:
        self.token = opening
        self.next = 0


class EventStore(SDKEventStore):
    """The SDK's `EventStore`, one fastctx context per stream.

    An event's id is `<stream's token>.<n>`, so any process can replay a stream from an id
    alone. A stream keeps its last `max_events` events (up to `trim_every` more between
    trims) for `ttl` seconds after it began.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        max_events: int = 1000,
        ttl: int = 3600,
        trim_every: int = 100,
        streams_held: int = 100_000,
    ) -> None:
        if max_events < 1 or trim_every < 1 or ttl < 1:
            raise ValueError("max_events, trim_every and ttl must be at least 1")
        self.client = client
        self.max_events = max_events
        self.ttl = ttl
        self.trim_every = trim_every
        self.streams_held = streams_held
        self._streams: OrderedDict[StreamId, _Stream] = OrderedDict()

    def scoped(self, scope: str | None = None) -> ScopedEventStore:
        """A part of this store for one session: its stream ids are its own."""
        return ScopedEventStore(self, scope or uuid.uuid4().hex)

    async def _open(self, stream_id: StreamId) -> str:
        return await self.client.create({"stream": stream_id, "events": []}, ttl=self.ttl)

    def _stream(self, stream_id: StreamId) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = _Stream(asyncio.ensure_future(self._open(stream_id)))
            self._streams[stream_id] = stream
            while len(self._streams) > self.streams_held:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(stream_id)
        return stream

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        stream = self._stream(stream_id)
        n = stream.next  # taken before any await: ids are unique and in the order of calls
        stream.next += 1
        stored = None if message is None else message.model_dump(mode="json", by_alias=True)
        event = {"n": n, "message": stored}
        opening = stream.token
        try:
            # Shielded: a caller cancelled while the stream opens leaves it opening for the rest.
            token = await asyncio.shield(opening)
            await self.client.append(token, "/events", event)
        except NotFound:
            # The stream outlived its ttl: it goes on in a context of its own.
            token = await self._reopen(stream_id, stream, opening)
            await self.client.append(token, "/events", event)
        except BaseException:
            failed = opening.done() and (opening.cancelled() or opening.exception() is not None)
            if failed and self._streams.get(stream_id) is stream:
                del self._streams[stream_id]  # the next event tries to open it again
            raise
        beyond = n + 1 - self.max_events  # events written beyond what a stream keeps
        if beyond >= self.trim_every and beyond % self.trim_every == 0:
            await self._trim(token)
        return f"{token}.{n}"

    async def _reopen(self, stream_id: StreamId, stream: _Stream, gone: asyncio.Future[str]) -> str:
        if stream.token is gone:  # the first to find it gone opens the next one for all
            stream.token = asyncio.ensure_future(self._open(stream_id))
        return await asyncio.shield(stream.token)

    async def _trim(self, token: str) -> None:
        # The oldest `trim_every` events, in one write: the stream keeps from max_events to
        # max_events + trim_every. One shorter than that (events lost to errors) is left be.
        removals = [{"op": "remove", "path": "/events/0"}] * self.trim_every
        with contextlib.suppress(InvalidPatch, NotFound):
            await self.client.json_patch(token, removals)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        token, _, number = last_event_id.rpartition(".")
        if len(token) != 22 or not number.isdigit():
            return None
        try:
            stream = await self.client.get(token)
        except NotFound:
            return None
        if not isinstance(stream, dict) or not isinstance(stream.get("stream"), str):
            return None
        events = sorted(stream["events"], key=lambda event: event["n"])
        after = int(number)
        if all(event["n"] != after for event in events):
            return None  # no longer kept: replaying from there would skip what was trimmed
        for event in events:
            if event["n"] > after and event["message"] is not None:
                message = _MESSAGE.validate_python(event["message"])
                await send_callback(EventMessage(message, f"{token}.{event['n']}"))
        stream_id: StreamId = stream["stream"]
        return stream_id


class ScopedEventStore(SDKEventStore):
    """One session's part of an `EventStore`: stream ids prefixed with its scope, and only its
    own events replayed."""

    def __init__(self, store: EventStore, scope: str) -> None:
        self.store = store
        self.prefix = f"{len(scope)}:{scope}:"

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return await self.store.store_event(self.prefix + stream_id, message)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        replayed: list[EventMessage] = []

        async def hold(event: EventMessage) -> None:
            replayed.append(event)

        stream_id = await self.store.replay_events_after(last_event_id, hold)
        if stream_id is None or not stream_id.startswith(self.prefix):
            return None  # another session's: nothing of it is sent
        for event in replayed:
            await send_callback(event)
        return stream_id.removeprefix(self.prefix)


class SessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, giving each session its own part of the event store.

    The SDK reads `event_store` once for each session it opens; an `EventStore` given here is
    handed out as a fresh `ScopedEventStore` each time.
    """

    _shared_events: SDKEventStore | None = None

    @property
    def event_store(self) -> SDKEventStore | None:
        if isinstance(self._shared_events, EventStore):
            return self._shared_events.scoped()
        return self._shared_events

    @event_store.setter
    def event_store(self, store: SDKEventStore | None) -> None:
        self._shared_events = store


def streamable_http_app(
    server: MCPServer | Server[Any], events: EventStore, **settings: Any
) -> Starlette:
    """`server.streamable_http_app(event_store=events, **settings)`, for an `MCPServer` or a
    low-level `Server`, with each of its sessions given a part of `events` of its own."""
    app = server.streamable_http_app(event_store=events, **settings)
    manager = server.session_manager
    # The SDK made its own manager; this one differs only in how it hands out the store.
    vars(manager).pop("event_store", None)
    manager.__class__ = SessionManager
    manager.event_store = events
    return app
