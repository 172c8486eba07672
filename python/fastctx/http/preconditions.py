"""Versions as strong ETags ("3") and the conditional headers that compare them."""

from __future__ import annotations

from starlette.datastructures import Headers

from fastctx.errors import VersionConflict


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(headers: Headers) -> int | None:
    """The version `If-Match` requires, or None when any existing version will do.

    A value that cannot name a version (a weak or non-numeric tag, a list) can never match,
    so it fails the precondition with 412 rather than being ignored.
    """
    value = headers.get("if-match")
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return None
    if len(value) >= 3 and value[0] == value[-1] == '"' and value[1:-1].isdigit():
        return int(value[1:-1])
    raise VersionConflict(f'If-Match {value!r} does not name a version like "3"')


def none_match(value: str, version: int) -> bool:
    """True when an `If-None-Match` value lists this version (weak comparison, RFC 9110)."""
    current = etag(version)
    for tag in value.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == current:
            return True
    return False
