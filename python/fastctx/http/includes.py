"""What `?include=data|patch` adds to a change event, made once per event for every subscriber.

A node fans each event out to all its subscribers of the stream (`fastctx.streams`); each of
them would otherwise read the document, and render it into SSE lines, for itself: a thousand
subscribers of one context, a thousand reads of the same version, each a backend round trip
when this node's cache has not yet heard of the write. Here the first subscriber to need an
event's members starts the work and the others await the same result, kept for a while after
(bounded in bytes) for subscribers that come to the event later, as a replay does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import NamedTuple

from fastctx.backends import Event
from fastctx.deltas import document_bytes
from fastctx.errors import BadRequest, NotFound
from fastctx.registry import Registry
from fastctx.sealing import Sealing

# What the made members may hold once made, in bytes; the newest is kept whatever its size.
KEPT_BYTES = 16 * 1024 * 1024
KEPT_ENTRIES = 1024
INCLUDES = ("data", "patch")
RESYNC = b',"resync":true'


class Include(NamedTuple):
    """What a stream's `?include=` asks for."""

    data: bool = False
    patch: bool = False


NOTHING = Include()


def parse_include(value: str | None) -> Include:
    """`?include=data`, `patch`, or both comma-separated (`data,patch`); 400 for anything else."""
    if value is None:
        return NOTHING
    names = value.split(",")
    for name in names:
        if name not in INCLUDES:
            raise BadRequest(
                f"include={value[:40]!r} is not known; include takes data, patch or data,patch"
            )
    return Include("data" in names, "patch" in names)


# Characters that JSON strings may hold unescaped and that many SSE clients take for line ends
# (Python's str.splitlines, which httpx's iter_lines uses): escaped, the value is the same. In
# valid UTF-8 these byte sequences are only ever these characters.
_LINE_LIKE = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def data_lines(document: bytes) -> bytes:
    """JSON as the body of SSE `data:` lines.

    A stored document may span lines; SSE joins `data:` lines with "\\n", which JSON reads as
    the whitespace it was (CR only ever occurs as whitespace in JSON, so it becomes LF).
    """
    for raw, escaped in _LINE_LIKE:
        if raw in document:
            document = document.replace(raw, escaped)
    return document.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\ndata: ")


_Key = tuple[str, str, str, int, Include]  # tenant, token, event type, version, include


class Includes:
    """The members `?include=` adds to `created` and `updated` events, by event.

    - `data`: the document as read when the event is sent (so possibly a newer version).
    - `patch`, on `updated`: the RFC 6902 JSON Patch that made the event's version from the
      one before. The write's own patch when its event carries one (the `patch` field);
      otherwise, when the document is still at the event's version, one operation that
      replaces it whole; otherwise no patch and `"resync": true`.
    - `patch`, on `created`: the document when it is still at version 1 (else `resync`).
    """

    def __init__(self, registry: Registry, kept_bytes: int = KEPT_BYTES) -> None:
        self.registry = registry
        self.kept_bytes = kept_bytes
        self._made: collections.OrderedDict[_Key, asyncio.Future[bytes]] = collections.OrderedDict()
        self._held = 0  # bytes of the made members kept

    async def members(self, tenant: str, event: Event, include: Include) -> bytes:
        """What to add to the event's JSON object: `,"data":...`, `,"patch":...` and so on."""
        fields = event[1]
        kind = fields.get("type", "updated")
        token = fields.get("token", "")
        version = int(fields.get("version", "0"))
        key = (tenant, token, kind, version, include)
        made = self._made.get(key)
        if made is None:
            made = asyncio.ensure_future(self._make(tenant, kind, token, version, fields, include))
            self._made[key] = made
            made.add_done_callback(lambda done: self._keep(key, done))
        else:
            self._made.move_to_end(key)
        # Shielded: a subscriber that leaves while it waits must not cancel the others' result.
        return await asyncio.shield(made)

    def _keep(self, key: _Key, made: asyncio.Future[bytes]) -> None:
        if made.cancelled() or made.exception() is not None:
            # Not kept: the next subscriber tries again (the backend may be back).
            if self._made.get(key) is made:
                del self._made[key]
            return
        if self._made.get(key) is not made:
            return  # dropped already, to make room
        self._held += len(made.result())
        while len(self._made) > 1 and (
            self._held > self.kept_bytes or len(self._made) > KEPT_ENTRIES
        ):
            _, oldest = self._made.popitem(last=False)
            if oldest.done() and not oldest.cancelled() and oldest.exception() is None:
                self._held -= len(oldest.result())

    async def _make(
        self,
        tenant: str,
        kind: str,
        token: str,
        version: int,
        fields: dict[str, str],
        include: Include,
    ) -> bytes:
        patch = fields.get("patch") if kind == "updated" else None
        if patch:  # as the log holds it: sealed, with FASTCTX_ENCRYPTION_KEYS
            name = Sealing.name(tenant, token)
            patch = self.registry.sealing.open_patch(patch.encode(), name, version).decode()
        if patch is not None and include == Include(patch=True):
            return b',"patch":' + data_lines(patch.encode())  # no read needed
        payload, now_at = await self._document(tenant, token, version)
        members = b""
        if include.data and payload is not None:
            members += b',"data":' + data_lines(payload)
        if not include.patch:
            return members
        if patch is not None:
            return members + b',"patch":' + data_lines(patch.encode())
        if payload is None or now_at != version:
            return members + RESYNC  # gone, or moved on: what made this version is not known
        if kind == "created":
            return members if include.data else b',"data":' + data_lines(payload)
        return members + b',"patch":[{"op":"replace","path":"","value":%s}]' % data_lines(payload)

    async def _document(self, tenant: str, token: str, version: int) -> tuple[bytes | None, int]:
        """The document now, and its version: at least the event's when it still exists."""
        with contextlib.suppress(NotFound):
            found = await self.registry.read(tenant, token)
            if found.version < version:
                # This node's cache has not yet heard of the write the event reports.
                self.registry.outdate(tenant, token)
                found = await self.registry.read(tenant, token, fresh=True)
            return document_bytes(found.payload), found.version
        return None, 0
