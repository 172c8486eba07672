"""Request bodies: the media type a route accepts, and reading within the size limit."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec
from starlette.types import Receive

from fastctx import _core
from fastctx.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_EXACT = {kind: kind.encode() for kind in (JSON, MERGE_PATCH, JSON_PATCH)}
# How long a request body may take to arrive in full (FASTCTX_BODY_TIMEOUT).
BODY_TIMEOUT_SECONDS = 30.0
SWEEP_SECONDS = 0.25  # how often overdue bodies are looked for: their deadline's precision
T = TypeVar("T")


def decode_json(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode a request body with msgspec once the Rust validator has bounded its nesting.

    msgspec recurses into nested JSON until RecursionError (a 500); the validator refuses more
    than 127 levels first, with the JsonError every caller already maps like malformed JSON.
    """
    _core.validate_json(body)
    return decoder.decode(body)


def whole_number(text: bytes | str, max_digits: int = 19) -> int | None:
    """A non-negative decimal from a header or query value; None if it is not one.

    ASCII digits only (str.isdigit() also passes superscripts that int() refuses) and at most
    `max_digits` of them (int() refuses more than 4300): neither may reach int() and fail.
    """
    if isinstance(text, str):
        if not text.isascii():
            return None
        text = text.encode()
    if not text.isdigit() or len(text) > max_digits:
        return None
    return int(text)


def require_media_type(content_type: bytes | str | None, *accepted: str) -> str:
    """The media type of a Content-Type value, if it is one of `accepted`; else 415."""
    for kind in accepted:
        if content_type == _EXACT[kind]:  # what clients send nearly always: no parsing
            return kind
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    kind = (content_type or "").partition(";")[0].strip().lower()
    if kind not in accepted:
        shown = kind or "no Content-Type"
        raise UnsupportedMediaType(f"{shown} is not accepted here; send {' or '.join(accepted)}")
    return kind


async def read_body(
    receive: Receive,
    content_length: bytes | str | None,
    limit: int,
    seconds: float = BODY_TIMEOUT_SECONDS,
) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes.

    A declared Content-Length over the limit is refused before reading anything; a chunked
    body is refused at the first chunk that crosses the limit, so at most `limit` bytes plus
    one chunk are ever held. The whole body must arrive within `seconds` (400 otherwise): a
    client that declares more than it sends, or trickles it, would else hold the request, and
    the connection, for as long as it likes.
    """
    declared = None
    if content_length is not None:
        declared = whole_number(content_length, max_digits=40)
        if declared is None:
            raise BadRequest("Content-Length must be a non-negative integer")
        if declared > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
    loop = asyncio.get_running_loop()
    task = asyncio.current_task(loop)
    assert task is not None
    deadlines = _BY_LOOP.get(loop) or _deadlines(loop)
    deadlines.add(task, seconds)
    try:
        return await _receive_all(receive, limit, declared)
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        raise BadRequest(f"the body did not arrive in full within {seconds:g} s") from None
    finally:
        deadlines.discard(task)


class _Deadlines:
    """The tasks reading a body, each with the time by which it must have it all.

    One timer per event loop, firing every SWEEP_SECONDS while any body is being read, cancels
    the overdue readers: a timer per request (asyncio.timeout) costs ~4.5 us under uvloop, a
    dict entry ~0.3 us, and most bodies arrive in the first message anyway. A reader is only in
    here while it waits inside `read_body`, so the cancellation always lands there.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Task[object], seconds: float) -> None:
        self._due[task] = self._loop.time() + seconds
        if self._timer is None:
            self._timer = self._loop.call_later(SWEEP_SECONDS, self._sweep)

    def discard(self, task: asyncio.Task[object]) -> None:
        self._due.pop(task, None)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """True (once) if `task` was cancelled here, its cancellation then taken back."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
        if self._due:
            self._timer = self._loop.call_later(SWEEP_SECONDS, self._sweep)


# One per event loop that has read a body. A plain dict, looked up on every body read: a
# WeakKeyDictionary costs ten times as much, and could not let a loop go anyway, since each
# _Deadlines holds its loop. Closed loops are dropped when a new one comes (tests run many).
_BY_LOOP: dict[asyncio.AbstractEventLoop, _Deadlines] = {}


def _deadlines(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    for closed in [old for old in _BY_LOOP if old.is_closed()]:
        del _BY_LOOP[closed]
    deadlines = _BY_LOOP[loop] = _Deadlines(loop)
    return deadlines


async def _receive_all(receive: Receive, limit: int, declared: int | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client closed the connection before sending the whole body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
        chunks.append(chunk)
        # A body is whole at its declared length, whatever `more_body` says: granian sends the
        # last chunk with more_body=True and an empty one after it, and waiting for that one
        # costs a wake-up of the event loop from granian's thread, about a quarter of what
        # granian charges for a small POST (benches/floors.py reads the same way).
        if size == declared or not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
