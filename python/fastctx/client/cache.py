"""The client's optional LRU of documents by token, revalidated with If-None-Match."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from fastctx import _core


@dataclass(frozen=True)
class Cached:
    """One document as the server holds it at `version`: its JSON bytes, exactly."""

    version: int
    payload: bytes

    def document(self) -> Any:
        # Decoded anew for every caller: a document handed out is the caller's to change,
        # and a shared one would carry that change into the next read.
        return msgspec.json.decode(self.payload)


def version_of(response: httpx.Response) -> int | None:
    """The version a response's strong ETag (`"3"`) names, or None."""
    tag = response.headers.get("etag", "")
    digits = tag[1:-1]
    if tag[:1] == tag[-1:] == '"' and digits.isascii() and digits.isdigit() and len(digits) <= 20:
        return int(digits)
    return None


class ClientCache:
    """At most `size` documents, least recently used evicted first; safe across threads.

    An entry is only ever replaced by a newer version, so that an answer overtaken by a later
    write (two threads sharing one client) cannot bring an older document back.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("cache_size must be at least 1")
        self.size = size
        self._entries: OrderedDict[str, Cached] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, token: object) -> bool:
        return token in self._entries

    def lookup(self, token: str) -> Cached | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                self._entries.move_to_end(token)
            return entry

    def store(self, token: str, version: int, payload: bytes) -> None:
        with self._lock:
            current = self._entries.get(token)
            if current is not None and current.version > version:
                return
            self._entries[token] = Cached(version, payload)
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, token: str) -> None:
        with self._lock:
            self._entries.pop(token, None)

    def patched(self, token: str, version: int, merge_patch: bytes) -> None:
        """After this client's merge patch made `version`: apply it to the version before.

        The server applied the patch to exactly version - 1 (versions grow by one per write),
        so when that is the version held, the same function gives the same bytes. Otherwise
        the entry is stale and goes.
        """
        entry = self.lookup(token)
        if entry is None:
            return
        if entry.version == version - 1:
            try:
                self.store(token, version, _core.merge_patch(entry.payload, merge_patch))
                return
            except ValueError:
                pass
        self.drop(token)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
