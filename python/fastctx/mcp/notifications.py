"""Resource subscriptions: `notifications/resources/updated` for ctx:// resources, both eras.

Session era: resources/subscribe, the GET stream, Last-Event-ID.
A session's subscriptions live in the backend with the session (token -> cursor: the id of the
last event of that context's change stream the session has been notified of). Notifications
go into a stream of the session's own (`fastctx.backends.mcp_stream`, kept like the change
streams: at least its last 1000 entries and its last hour), and the GET stream sends exactly
that stream's entries under their ids, so a client that reconnects with Last-Event-ID to any
node is sent what follows that id.

Nothing on the write path knows of MCP: a write appends to its context's change stream as it
always does, and costs the same whether anybody subscribes or not. Notifications are derived
from the change streams by whichever node serves the session's GET stream:
- when the stream opens (or reopens), each change after a subscription's cursor becomes a
  notification first, so changes made while no node held the stream (the client was away)
  reach the client when it comes back, as long as the change streams still hold them;
- while it is open, the node watches the subscribed contexts through its ChangeStream and
  does the same as their changes arrive.
Appending a notification and moving the cursor past the changes it covers are one atomic
step, taken only if the cursor is still where this node read it (`Backend.mcp_notify`), so
two nodes (two GET streams, or a stream and its replacement) never notify one change twice.
A step notifies once per context however many changes it covers: the notification says
"read it again", not what changed. Subscribing and unsubscribing append `subscribe` and
`unsubscribe` entries to the same stream (never sent to the client): that is how a GET
stream on one node learns of a subscription made through another.

2026-07-28: subscriptions/listen. The request's response is the stream: an acknowledgement of
the resources it will report on, then a notification per change, each tagged with the
request's id. The revision makes it non-resumable, so it follows the change streams directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from fastctx import _core
from fastctx.asgi.exchange import Exchange
from fastctx.backends import Event, context_stream, event_order, mcp_stream
from fastctx.errors import BackendError, NotFound
from fastctx.mcp import jsonrpc
from fastctx.mcp.jsonrpc import INVALID_PARAMS, INVALID_REQUEST, RESOURCE_NOT_FOUND, RpcError
from fastctx.mcp.tools import RESOURCE_SCHEME
from fastctx.registry import Registry
from fastctx.sessions import SessionManager
from fastctx.streams import ChangeStream, Subscription

PING_INTERVAL = 15.0  # seconds between `: ping` comments on an idle stream
RETRY_MS = 1000  # how soon a client should reconnect after a GET stream ends
MAX_LISTEN_RESOURCES = 1000  # resources one subscriptions/listen may name
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
UPDATED = "notifications/resources/updated"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
_STEERING = frozenset({"subscribe", "unsubscribe"})  # entries that are never sent


def stream_tag(session: str) -> str:
    """What the GET stream's event ids start with: it names the session's stream without
    repeating the session id (a credential) in every event and Last-Event-ID."""
    return hashlib.blake2s(session.encode(), digest_size=4).hexdigest()


def priming_event(session: str, after: str) -> bytes:
    """The event a 2025-11-25 stream opens with: an id and empty data, so that a client that
    loses the stream before its end can resume the session's GET stream after `after`."""
    return b"id: %s:%s\ndata:\n\n" % (stream_tag(session).encode(), after.encode())


def resume_point(session: str, last_event_id: bytes | None) -> str | None:
    """The notification stream id a GET stream resumes after; None to start from now."""
    if last_event_id is None or not last_event_id.strip():
        return None
    tag, _, entry = last_event_id.decode("latin-1").strip().partition(":")
    if tag != stream_tag(session):
        raise RpcError(INVALID_REQUEST, "Last-Event-ID is not an event of this stream", status=400)
    try:
        event_order(entry)
    except ValueError:
        raise RpcError(INVALID_REQUEST, "Last-Event-ID is malformed", status=400) from None
    return entry


def resource_token(uri: Any) -> str:
    """The token a ctx:// URI names; invalid params when it is not one."""
    token = uri[len(RESOURCE_SCHEME) :] if isinstance(uri, str) else ""
    if not (isinstance(uri, str) and uri.startswith(RESOURCE_SCHEME) and _core.is_token(token)):
        raise RpcError(INVALID_PARAMS, f"params.uri must be {RESOURCE_SCHEME}{{token}}")
    return token


def _updated(uri: str, meta: dict[str, Any] | None = None) -> bytes:
    params: dict[str, Any] = {"uri": uri}
    if meta is not None:
        params["_meta"] = meta
    return jsonrpc.encode({"jsonrpc": "2.0", "method": UPDATED, "params": params})


class _Watches:
    """The change streams one response follows, each woken through one shared event."""

    def __init__(self, changes: ChangeStream) -> None:
        self.changes = changes
        self.wake = asyncio.Event()
        self.by_stream: dict[str, Subscription] = {}

    def follow(self, stream: str, after: str) -> Subscription:
        self.drop(stream)
        subscription = self.changes.subscribe(stream, after)
        subscription.ready = self.wake  # one task serves every stream of the response
        self.by_stream[stream] = subscription
        return subscription

    def drop(self, stream: str) -> None:
        subscription = self.by_stream.pop(stream, None)
        if subscription is not None:
            self.changes.unsubscribe(subscription)

    def close(self) -> None:
        for stream in list(self.by_stream):
            self.drop(stream)

    @contextlib.asynccontextmanager
    async def serving(self, ex: Exchange) -> AsyncIterator[asyncio.Future[None]]:
        """The life of the response stream these watches feed; yields the task that ends when
        the client leaves. A client gone while we wrote ends it quietly; a backend that fails
        once the stream has started ends it too, to be resumed with Last-Event-ID once the
        backend is back (before that, the failure is answered as 503). Every watch is
        dropped at the end."""
        gone = asyncio.ensure_future(ex.until_disconnect(self.wake.set))
        try:
            yield gone
        except OSError:
            pass  # the ASGI server raises OSError when the client has gone
        except BackendError:
            if not ex.started:
                raise
            with contextlib.suppress(OSError):
                await ex.send({"type": "http.response.body", "body": b""})
        finally:
            self.close()
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone

    async def wait(self, ex: Exchange) -> None:
        """Until woken, sending a `: ping` every PING_INTERVAL of quiet."""
        try:
            async with asyncio.timeout(PING_INTERVAL):
                await self.wake.wait()
        except TimeoutError:
            await _send(ex, b": ping\n\n")


class Notifications:
    def __init__(
        self, registry: Registry, sessions: SessionManager, changes: ChangeStream, idle_ms: int
    ) -> None:
        self.registry = registry
        self.backend = registry.backend
        self.sessions = sessions
        self.changes = changes
        self.idle_ms = idle_ms

    async def _existing(self, tenant: str, uri: Any) -> str:
        token = resource_token(uri)
        try:
            await self.registry.read(tenant, token)
        except NotFound:
            raise RpcError(RESOURCE_NOT_FOUND, f"resource not found: {uri}", {"uri": uri}) from None
        return token

    async def subscribe(self, tenant: str, session: str, record: bytes, uri: Any) -> bool:
        """resources/subscribe for an existing context of the tenant, the session's record
        now `record`; False when there is no such session."""
        token = await self._existing(tenant, uri)
        return await self.sessions.subscribe_mcp(tenant, session, token, record, self.idle_ms)

    async def unsubscribe(self, tenant: str, session: str, uri: Any) -> None:
        """resources/unsubscribe; unsubscribing from what was not subscribed changes nothing."""
        await self.sessions.unsubscribe_mcp(tenant, session, resource_token(uri))

    async def _notify(self, tenant: str, session: str, token: str, cursor: str) -> str | None:
        """Turn the context's changes after `cursor` into one notification, unless another
        node has; returns the subscription's cursor now, None when it is gone."""
        stream = context_stream(tenant, token)
        while True:
            events = await self.backend.changes.since(stream, cursor)
            if not events:
                return cursor
            last, fields = events[-1]
            current = await self.backend.mcp.notify(
                tenant,
                session,
                token,
                expected=cursor,
                cursor=last,
                kind=fields.get("type", "updated"),
                version=fields.get("version", "0"),
                idle=self.idle_ms,
            )
            if current is None or event_order(current) >= event_order(last):
                return current
            cursor = current  # another node got there first, but not as far: go on from there

    async def session_stream(
        self, ex: Exchange, tenant: str, session: str, after: str | None, primed: bool = False
    ) -> int:
        """The session era's GET stream: the notification stream from `after` (or from now),
        fed from the subscribed contexts' changes while it is open; `primed` opens it with a
        priming event (2025-11-25) naming where it starts."""
        notes = mcp_stream(tenant, session)
        start = after if after is not None else await self.backend.changes.last_id(notes)
        watches = _Watches(self.changes)
        inbox = watches.follow(notes, start)
        cursors: dict[str, str] = {}  # token -> the subscription's cursor, as last seen
        tag = stream_tag(session).encode()
        sent = event_order(start)

        async def watch(token: str, cursor: str) -> None:
            stream = context_stream(tenant, token)
            if token not in cursors:
                watches.follow(stream, cursor)
            now = await self._notify(tenant, session, token, cursor)
            if now is None:
                cursors.pop(token, None)
                watches.drop(stream)
            else:
                cursors[token] = now

        async def take(event: Event) -> None:
            nonlocal sent
            order = event_order(event[0])
            if order <= sent:
                return
            sent = order
            kind, token = event[1].get("type", ""), event[1].get("token", "")
            if kind == "subscribe" and _core.is_token(token):
                await watch(token, cursors.get(token, event[1].get("version", "0-0")))
            elif kind == "unsubscribe":
                cursors.pop(token, None)
                watches.drop(context_stream(tenant, token))
            elif kind not in _STEERING:
                uri = RESOURCE_SCHEME + token
                await _send(
                    ex,
                    b"id: %s:%s\nevent: message\ndata: %s\n\n"
                    % (tag, event[0].encode(), _updated(uri)),
                )

        async with watches.serving(ex) as gone:
            # First what changed while no stream was open, so that the replay includes it:
            # in the order of each context's latest change.
            subscribed = await self.backend.mcp.subscriptions(tenant, session)
            latest = await asyncio.gather(
                *(self.backend.changes.last_id(context_stream(tenant, t)) for t in subscribed)
            )
            for _, token in sorted(zip(map(event_order, latest), subscribed, strict=True)):
                await watch(token, subscribed[token])
            replay = await self.backend.changes.since(notes, start)
            await ex.start_stream()
            opening = b": ping\n\nretry: %d\n\n" % RETRY_MS
            if primed:
                opening += priming_event(session, start)
            await _send(ex, opening)
            for event in replay:
                await take(event)
            loop = asyncio.get_running_loop()
            checked = loop.time()
            while not gone.done():
                watches.wake.clear()
                if inbox.overflowed:
                    inbox = watches.follow(notes, f"{sent[0]}-{sent[1]}")
                elif inbox.closed:
                    break  # this node is stopping: the client resumes elsewhere
                while inbox.events:
                    await take(inbox.events.popleft())
                for token in list(cursors):
                    follower = watches.by_stream.get(context_stream(tenant, token))
                    if follower is not None and (follower.events or follower.overflowed):
                        follower.events.clear()
                        if follower.overflowed:
                            watches.follow(follower.stream, cursors[token])
                        await watch(token, cursors[token])
                if inbox.events:
                    continue
                await watches.wait(ex)
                if loop.time() >= checked + PING_INTERVAL:
                    checked = loop.time()
                    if not await self._alive(tenant, session, cursors):
                        break  # the session ended (a DELETE through any node, or it expired)
            if not gone.done():
                await ex.send({"type": "http.response.body", "body": b""})
        return 200

    async def _alive(self, tenant: str, session: str, cursors: dict[str, str]) -> bool:
        """Whether the session still exists; an open stream keeps it (and what it
        subscribed to) alive, as a request does."""
        try:
            alive = await self.sessions.use_mcp(tenant, session, self.idle_ms) is not None
            if alive and cursors:
                await self.sessions.keep_mcp(tenant, session, self.idle_ms)
        except BackendError:
            return True  # the backend is away: keep the stream, and look again later
        return alive

    async def listen(
        self, ex: Exchange, tenant: str, request_id: jsonrpc.RequestId, params: dict[str, Any]
    ) -> int:
        """2026-07-28 subscriptions/listen: the response stream of resource updates."""
        wanted = params.get("notifications")
        if not isinstance(wanted, dict):
            raise RpcError(INVALID_PARAMS, "params.notifications must be an object")
        uris = wanted.get("resourceSubscriptions") or []
        if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
            raise RpcError(INVALID_PARAMS, "resourceSubscriptions must be a list of URIs")
        if len(uris) > MAX_LISTEN_RESOURCES:
            raise RpcError(INVALID_PARAMS, f"at most {MAX_LISTEN_RESOURCES} resourceSubscriptions")
        # Honored: the ctx:// URIs of the tenant's existing contexts; the others (and every
        # list-changed kind: fastctx's lists never change) are left out of the acknowledgement.
        named: dict[str, str] = {}
        for uri in uris:
            with contextlib.suppress(RpcError):
                named.setdefault(resource_token(uri), uri)
        frames = await self.backend.contexts.mget(tenant, list(named))
        honored = {
            token: uri for (token, uri), frame in zip(named.items(), frames, strict=True) if frame
        }
        cursors = await asyncio.gather(
            *(self.backend.changes.last_id(context_stream(tenant, token)) for token in honored)
        )
        watches = _Watches(self.changes)
        streams = {context_stream(tenant, token): uri for token, uri in honored.items()}
        for stream, cursor in zip(streams, cursors, strict=True):
            watches.follow(stream, cursor)
        meta = {SUBSCRIPTION_ID: request_id}
        granted: dict[str, Any] = (
            {"resourceSubscriptions": list(honored.values())} if honored else {}
        )
        ack = {
            "jsonrpc": "2.0",
            "method": ACKNOWLEDGED,
            "params": {"notifications": granted, "_meta": meta},
        }
        async with watches.serving(ex) as gone:
            await ex.start_stream()
            await _send(ex, _message(jsonrpc.encode(ack)))
            stopping = False
            while not gone.done() and not stopping:
                watches.wake.clear()
                for stream, uri in streams.items():
                    follower = watches.by_stream[stream]
                    if follower.events or follower.overflowed:
                        follower.events.clear()
                        if follower.overflowed:
                            # Changes were dropped: start again from the newest, and notify
                            # anyway, which covers whatever was dropped.
                            watches.follow(stream, await self.backend.changes.last_id(stream))
                        await _send(ex, _message(_updated(uri, meta)))
                    elif follower.closed:
                        stopping = True  # this node is stopping
                if not stopping:
                    await watches.wait(ex)
            if stopping and not gone.done():
                # A graceful end: the result tells the client the stream did not just drop.
                done = jsonrpc.result(request_id, {"_meta": meta, "resultType": "complete"})
                await _send(ex, _message(done))
                await ex.send({"type": "http.response.body", "body": b""})
        return 200


def _message(body: bytes) -> bytes:
    return b"event: message\ndata: " + body + b"\n\n"


async def _send(ex: Exchange, chunk: bytes) -> None:
    await ex.send({"type": "http.response.body", "body": chunk, "more_body": True})
