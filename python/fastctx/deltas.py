"""Deltas: a context's document as base bytes and a log of JSON Patches, as a node holds it,
builds it from what is stored, and brings it up to date (see docs/concepts/deltas.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import msgspec

from fastctx import _core
from fastctx.backends import Stored, patchlog
from fastctx.errors import BackendError, InvalidPatch
from fastctx.sealing import PLAIN, Sealing

_KINDS = {b"{": "an object", b'"': "a string", b"t": "a boolean", b"f": "a boolean", b"n": "null"}

Document = bytes | _core.Document
"""A document as the registry holds it: its JSON bytes, or (a large one that patches append
to) a `_core.Document`, which makes them when asked (`document_bytes`)."""


def document_bytes(document: Document) -> bytes:
    """The JSON bytes of a document."""
    return document if type(document) is bytes else cast(_core.Document, document).bytes()


class Current(NamedTuple):
    """A context as this node knows it: its document at `version`, and where that version
    stands in the stored log (see fastctx.backends.patchlog), so that a write can append to
    it and a reader can catch up from it without reading the document again."""

    payload: Document
    version: int
    created_at: int
    expires_at: int
    session: str | None
    base: int  # the version of the stored base document
    log_size: int  # the stored log's length in bytes at `version` (0: it has none)
    base_size: int  # the stored base document's length in bytes


Extra = tuple[int, str | None, int, int, int]
"""What a cache entry keeps besides the document: created_at, session, base, log_size,
base_size (see Current)."""


def materialize(stored: Stored, sealing: Sealing = PLAIN, name: bytes = b"") -> Current:
    """The newest document of a stored context: its base with the log's patches applied
    (opened with `sealing`, for the context `name`, when they are sealed)."""
    frame = _core.decode_frame(stored.frame, sealing.ring, name)
    if not stored.log:
        return Current(
            frame.payload,
            frame.version,
            frame.created_at,
            frame.expires_at,
            frame.session,
            frame.version,
            0,
            frame.size,
        )
    base = patchlog.base_version(stored.log)
    entries = patchlog.entries(stored.log, patchlog.HEADER_SIZE)
    check_sequence(entries, base, frame.version)
    return Current(
        _core.apply_patches(frame.payload, opened(entries, sealing, name)),
        frame.version,
        frame.created_at,
        frame.expires_at,
        frame.session,
        base,
        len(stored.log),
        frame.size,
    )


def check_sequence(entries: list[patchlog.Entry], after: int, last: int) -> None:
    if [e.version for e in entries] != list(range(after + 1, last + 1)):
        raise BackendError(f"a context's patch log does not lead from version {after} to {last}")


def opened(entries: list[patchlog.Entry], sealing: Sealing, name: bytes) -> list[bytes]:
    """The entries' patches, opened when they are sealed (FrameError without the key ring)."""
    return [sealing.open_patch(entry.patch, name, entry.version) for entry in entries]


def caught_up(
    held: Current, tail: bytes, sealing: Sealing = PLAIN, name: bytes = b""
) -> Current | None:
    """`held` with the log entries written since (`tail`) applied; None when they do not lead
    on from its version (the caller then reads the whole context)."""
    entries = patchlog.entries(tail)
    version = held.version + len(entries)
    if [e.version for e in entries] != list(range(held.version + 1, version + 1)):
        return None
    payload = _core.apply_patches(held.payload, opened(entries, sealing, name))
    log_size = max(held.log_size, patchlog.HEADER_SIZE) + len(tail)
    return held._replace(payload=payload, version=version, log_size=log_size)


def append_patch(document: Document, path: str, items: Sequence[bytes]) -> bytes:
    """The RFC 6902 JSON Patch that appends `items` (each the JSON of one value) to the array at
    `path` (a JSON Pointer) in `document`.

    An array there gets one `add` of `<path>/-` per item; nothing there, one `add` of `<path>`
    with the array of them all (which JSON Patch applies only where the parent exists).
    InvalidPatch when something other than an array is there; `_core.SelectError` for a
    malformed pointer; `_core.JsonError` if the document is not JSON.
    """
    try:
        # An empty slice: "[]" for an array, without copying it; SelectError for others.
        _core.select(document, path, (0, 0))
        there = b"["
    except _core.SelectError:
        there = _core.select(document, path)
    except _core.PathNotFound:
        return b'[{"op":"add","path":%s,"value":[%s]}]' % (
            msgspec.json.encode(path),
            b",".join(items),
        )
    if there[:1] != b"[":
        kind = _KINDS.get(there[:1], "a number")
        raise InvalidPatch(
            f"{path or 'the document'} is {kind}, not an array: only an array is appended to"
        )
    end = msgspec.json.encode(path + "/-")
    operations = [b'{"op":"add","path":%s,"value":%s}' % (end, item) for item in items]
    return b"[" + b",".join(operations) + b"]"
