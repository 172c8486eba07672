"""Versions as strong ETags ("3") and the conditional headers that compare them."""

from __future__ import annotations

from fastctx.asgi.body import whole_number
from fastctx.errors import BadRequest

# What If-Match may hold; the OpenAPI document gives it as the header's pattern.
IF_MATCH_PATTERN = r'^(\*|"[0-9]{1,20}")$'


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(value: bytes | None) -> int | None:
    """The version `If-Match` requires, or None when any existing version will do.

    A value that is not `*` or one strong tag of a version as ETag gives it (`"3"`) is refused
    with 400: unquoted (`3`), weak, a list or not a number, it is a mistake of the client's
    that a 412 would pass off as somebody else's write.
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
    raise BadRequest(f'If-Match {tag[:40]!r} is malformed: send the ETag as given ("3") or *')


def none_match(value: bytes, version: int) -> bool:
    """True when an `If-None-Match` value lists this version (weak comparison, RFC 9110)."""
    current = etag(version)
    for tag in value.decode("latin-1").split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == current:
            return True
    return False
