"""Versions as strong ETags ("3") and the conditional headers that compare them."""

from __future__ import annotations

from fastctx.errors import VersionConflict
from fastctx.http.body import whole_number


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(value: bytes | None) -> int | None:
    """The version `If-Match` requires, or None when any existing version will do.

    A value that cannot name a version (a weak or non-numeric tag, a list) can never match,
    so it fails the precondition with 412 rather than being ignored.
    """
    if value is None:
        return None
    tag = value.decode("latin-1").strip()
    if tag == "*":
        return None
    if len(tag) >= 3 and tag[0] == tag[-1] == '"':
        version = whole_number(tag[1:-1], max_digits=20)  # versions are 64-bit
        if version is not None:
            return version
    raise VersionConflict(f'If-Match {tag!r} does not name a version like "3"')


def none_match(value: bytes, version: int) -> bool:
    """True when an `If-None-Match` value lists this version (weak comparison, RFC 9110)."""
    current = etag(version)
    for tag in value.decode("latin-1").split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == current:
            return True
    return False
