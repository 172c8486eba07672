"""Versions as strong ETags ("3") and the conditional headers that compare them."""

from __future__ import annotations

import re

from fastctx.asgi.body import whole_number
from fastctx.errors import BadRequest, VersionConflict

# An entity tag (RFC 9110 8.8.3): optionally weak, its opaque part visible ASCII but `"` (a
# comma included), or obs-text. If-Match is `*` or a comma-separated list of them, in which
# empty elements may occur (RFC 9110 5.6.1).
_TAG = rb'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*'
_ENTITY_TAG = re.compile(_TAG)
_TAG_LIST = re.compile(rb"(?:%s)?(?:,(?:%s)?)*" % (_TAG, _TAG))


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(value: bytes | None) -> int | None:
    """The version `If-Match` requires, or None when any existing version will do.

    A value that is not `*` or entity tags (`3`, unquoted) is malformed: 400, the client's
    mistake. Well-formed tags that cannot match a version (weak ones, which If-Match never
    matches, or `"x"`), or more than one, fail the precondition: 412, and nothing changes.
    """
    if value is None:
        return None
    if value[:1] == b'"' and value[-1:] == b'"' and value[1:-1].isdigit():
        return _version(value[1:-1])  # what clients send nearly always: no parsing
    if value.strip() == b"*":
        return None
    tags = _ENTITY_TAG.findall(value) if _TAG_LIST.fullmatch(value) else []
    if not tags:
        shown = value.decode("latin-1").strip()[:40]
        raise BadRequest(f'If-Match {shown!r} is malformed: send the ETag as given ("3") or *')
    if len(tags) == 1 and not tags[0][0] and tags[0][1].isdigit():
        return _version(tags[0][1])
    shown = value.decode("latin-1").strip()[:40]
    raise VersionConflict(f"If-Match {shown!r} names no version of this context")


def _version(digits: bytes) -> int:
    version = whole_number(digits, max_digits=20)  # versions are 64-bit
    if version is None:
        raise VersionConflict("If-Match names a version no context reaches")
    return version


def none_match(value: bytes, version: int) -> bool:
    """True when an `If-None-Match` value lists this version (weak comparison, RFC 9110)."""
    current = etag(version)
    for tag in value.decode("latin-1").split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == current:
            return True
    return False
