"""SSE endpoints: /v1/contexts/{token}/events and /v1/sessions/{id}/events.

Both are answered by `Front`, as bare ASGI handlers: a stream holds its request open for as
long as the client listens, and needs the raw `send` and `receive` anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Literal

from fastctx import _core
from fastctx.backends import Event, context_stream, event_order, session_stream
from fastctx.clock import now_ms
from fastctx.errors import BadRequest, NotFound
from fastctx.http.exchange import Exchange
from fastctx.registry import Registry
from fastctx.streams import ChangeStream, Subscription

PING_INTERVAL = 15.0  # seconds between `: ping` comments, which keep proxies from timing out
RETRY_MS = 1000  # how soon a client should reconnect after the stream ends
CONTEXTS = "/v1/contexts/"
SESSIONS = "/v1/sessions/"
SUFFIX = "/events"

Handler = Callable[[Exchange, str, str], Awaitable[int]]
_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx would otherwise hold events back
]


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


def _data_lines(document: bytes) -> bytes:
    # A stored document may span lines; SSE joins `data:` lines with "\n", which JSON reads as
    # the whitespace it was (CR only ever occurs as whitespace in JSON, so it becomes LF).
    return document.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\ndata: ")


class EventRoutes:
    def __init__(self, registry: Registry, changes: ChangeStream) -> None:
        self.registry = registry
        self.backend = registry.backend
        self.changes = changes
        self._context: dict[str, Handler] = {"GET": self.context_events}
        self._session: dict[str, Handler] = {"GET": self.session_events}

    def route(self, path: str) -> tuple[str, dict[str, Handler], str] | None:
        """(route template, handlers by method, token or session id) for an /events path."""
        if not path.endswith(SUFFIX):
            return None
        if path.startswith(CONTEXTS):
            ident = path[len(CONTEXTS) : -len(SUFFIX)]
            template, handlers = "/v1/contexts/{token}/events", self._context
        elif path.startswith(SESSIONS):
            ident = path[len(SESSIONS) : -len(SUFFIX)]
            template, handlers = "/v1/sessions/{session}/events", self._session
        else:
            return None
        return (template, handlers, ident) if ident and "/" not in ident else None

    async def context_events(self, ex: Exchange, tenant: str, token: str) -> int:
        after = last_event_id(ex)
        if not _core.is_token(token):
            raise NotFound("no such context")
        live = await self.backend.get(tenant, token) is not None
        stream = context_stream(tenant, token)
        return await self._serve(ex, tenant, stream, after, live, "context")

    async def session_events(self, ex: Exchange, tenant: str, session: str) -> int:
        after = last_event_id(ex)
        if not _core.is_token(session):
            raise NotFound("no such session")
        live = await self.backend.session_touch(tenant, session, now_ms()) is not None
        stream = session_stream(tenant, session)
        return await self._serve(ex, tenant, stream, after, live, "session")

    async def _serve(
        self,
        ex: Exchange,
        tenant: str,
        stream: str,
        after: str | None,
        live: bool,
        of: Literal["context", "session"],
    ) -> int:
        """Replay what the client missed, then follow the stream until either side ends it.

        A context's stream ends with its `deleted` event; a session's lasts while the client
        listens.
        """
        include_data = ex.query("include") == "data"
        ends = of == "context"
        if not live:
            # Gone, but its stream may still tell how it ended: replay that, then stop.
            events = await self.backend.events_since(stream, after or "0-0")
            if not events and await self.backend.last_event_id(stream) == "0-0":
                raise NotFound(f"no such {of}")
            if after is None:
                events = events[-1:]
            await self._start(ex)
            for event in events:
                await self._send(ex, tenant, event, include_data)
            await ex.send({"type": "http.response.body", "body": b""})
            return 200
        start = after if after is not None else await self.backend.last_event_id(stream)
        subscription = self.changes.subscribe(stream, start)
        watcher = asyncio.create_task(_until_disconnect(ex, subscription))
        try:
            # Subscribed first, then read what is already there: nothing falls in between.
            replay = await self.backend.events_since(stream, start)
            await self._start(ex)
            sent = event_order(start)
            ended = False
            for event in replay:
                ended = await self._send(ex, tenant, event, include_data) and ends
                sent = event_order(event[0])
            while not ended and await _wait(subscription, ex):
                while subscription.events and not ended:
                    event = subscription.events.popleft()
                    if event_order(event[0]) > sent:
                        ended = await self._send(ex, tenant, event, include_data) and ends
                        sent = event_order(event[0])
            if not watcher.done():  # the client is still there to be told the stream ended
                await ex.send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went while we wrote (the ASGI server raises OSError then)
        finally:
            self.changes.unsubscribe(subscription)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return 200

    async def _start(self, ex: Exchange) -> None:
        ex.started = True
        await ex.send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        # Some servers hold the headers back until the first body bytes.
        await ex.send(
            {"type": "http.response.body", "body": b"retry: %d\n\n" % RETRY_MS, "more_body": True}
        )

    async def _send(self, ex: Exchange, tenant: str, event: Event, include_data: bool) -> bool:
        """Send one event; True when it says a context was deleted."""
        event_id, fields = event
        kind = fields.get("type", "updated")
        token = fields.get("token", "")
        session = fields.get("session") or None
        version = int(fields.get("version", "0"))
        data = b'{"token":"%s","version":%d,"session":%s' % (
            token.encode(),
            version,
            b'"%s"' % session.encode() if session else b"null",
        )
        if include_data and kind == "updated":
            # Read at send time: when the context has moved on, this is its newer document
            # (the event for that version follows).
            with contextlib.suppress(NotFound):
                found = await self.registry.read(tenant, token)
                if found.version < version:
                    # This node's cache has not yet heard of the write the event reports.
                    found = await self.registry.read(tenant, token, fresh=True)
                data += b',"data":' + _data_lines(found.payload)
        body = b"id: %s\nevent: %s\ndata: %s}\n\n" % (event_id.encode(), kind.encode(), data)
        await ex.send({"type": "http.response.body", "body": body, "more_body": True})
        return kind == "deleted"


async def _wait(subscription: Subscription, ex: Exchange) -> bool:
    """Wait for events, pinging every PING_INTERVAL; False once the subscription is closed."""
    while not subscription.events:
        if subscription.closed:
            return False
        subscription.ready.clear()
        try:
            async with asyncio.timeout(PING_INTERVAL):
                await subscription.ready.wait()
        except TimeoutError:
            await ex.send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
    return True


async def _until_disconnect(ex: Exchange, subscription: Subscription) -> None:
    while (await ex.receive())["type"] != "http.disconnect":
        pass
    subscription.close()
