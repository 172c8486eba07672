"""Partial reads: the part of a document a read asks for, by `path` (an RFC 6901 JSON Pointer)
and `slice` (`start:end` of the array there), as the REST routes and the MCP tools take them."""

from __future__ import annotations

import re
from typing import NamedTuple

from fastctx import _core
from fastctx.asgi.shapes import JSON_POINTER_PATTERN, SLICE_PATTERN
from fastctx.errors import BadRequest

_POINTER = re.compile(JSON_POINTER_PATTERN)
_SLICE = re.compile(SLICE_PATTERN)
POINTER_RULE = (
    "path must be a JSON Pointer (RFC 6901): empty for the whole document, or '/'-separated"
    " tokens with ~0 for '~' and ~1 for '/', as in /messages/0"
)
SLICE_RULE = (
    "slice must be start:end, each side an integer (negative counts from the end) or empty,"
    " as in -20: or 0:10"
)

Bounds = tuple[int | None, int | None]


class Selection(NamedTuple):
    """A part of a document: the value at `path`, narrowed to `bounds` when a slice is given."""

    path: str
    bounds: Bounds | None

    def apply(self, document: bytes | _core.Document) -> bytes:
        """That part of `document`, as written there; `_core.PathNotFound` when the pointer
        names nothing, `_core.SelectError` for a slice of anything but an array."""
        return _core.select(document, self.path, self.bounds)


def pointer(path: str) -> str:
    """`path` if it is a JSON Pointer; BadRequest saying what one is otherwise."""
    if _POINTER.fullmatch(path) is None:
        raise BadRequest(f"{POINTER_RULE}; got {path[:80]!r}")
    return path


def bounds(text: str) -> Bounds:
    """The (start, end) of a `start:end` slice; BadRequest for anything else."""
    found = _SLICE.fullmatch(text)
    if found is None:
        raise BadRequest(f"{SLICE_RULE}; got {text[:80]!r}")
    start, end = found.groups()
    return (None if start is None else int(start), None if end is None else int(end))


def selection(path: str | None, slice_text: str | None) -> Selection | None:
    """What a read's `path` and `slice` ask for: None when neither is given (the whole
    document); a slice alone applies to the whole document, which must then be an array."""
    if path is None and slice_text is None:
        return None
    return Selection(
        "" if path is None else pointer(path),
        None if slice_text is None else bounds(slice_text),
    )
