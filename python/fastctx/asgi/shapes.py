"""The request shapes both interfaces decode, and the one reading of a ttl they share."""

from __future__ import annotations

from typing import Any

import msgspec

from fastctx.asgi.body import whole_number
from fastctx.errors import BadRequest
from fastctx.registry import MAX_TTL_SECONDS

TTL_RULE = f"ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}"


def ttl_seconds(value: str | int | float | None) -> int | None:
    """A ttl as a query string gives it ("60") or a JSON body does (60, or 60.0, which JSON
    Schema counts as an integer too); BadRequest for anything else."""
    if value is None:
        return None
    seconds: int | None
    if isinstance(value, str):
        seconds = whole_number(value, max_digits=10)
    elif isinstance(value, int):
        seconds = value
    else:
        seconds = int(value) if value.is_integer() else None
    if seconds is None or not 1 <= seconds <= MAX_TTL_SECONDS:
        raise BadRequest(TTL_RULE)
    return seconds


class SessionCreate(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/sessions` (both members optional; an empty body is all defaults)."""

    ttl: int | float | None = None
    meta: dict[str, Any] = {}

    def __post_init__(self) -> None:
        try:
            self.ttl = ttl_seconds(self.ttl)
        except BadRequest as exc:
            raise ValueError(exc.detail) from None


class MgetRequest(msgspec.Struct):
    tokens: list[str]


def invalid(what: str, exc: msgspec.ValidationError) -> BadRequest:
    """The 400 for a body of the right JSON but the wrong shape; a bad ttl says the ttl rule."""
    message = str(exc)
    if message.startswith(TTL_RULE) or message.endswith("- at `$.ttl`"):
        return BadRequest(TTL_RULE)
    return BadRequest(f"{what}: {message}")
