"""Tenants: which API key a request carries, checked before any /v1 or /mcp route runs."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from fastctx.config import DEFAULT_TENANT
from fastctx.errors import Unauthorized

PROTECTED_PREFIXES = ("/v1/", "/mcp")
PROTECTED_PATHS = ("/v1", "/mcp")


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def is_protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES) or path in PROTECTED_PATHS


class Tenants:
    """Maps a request's `Authorization: Bearer <key>` to its tenant.

    The presented key's SHA-256 digest is compared with every known digest in constant time:
    how long the check takes depends on how many keys there are, never on what was sent.
    """

    def __init__(self, keys: dict[str, str]) -> None:
        self._tenants = [(_digest(key.encode()), tenant) for key, tenant in keys.items()]

    def resolve(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The tenant of a request with these ASGI headers; `Unauthorized` if it has none."""
        if not self._tenants:
            return DEFAULT_TENANT
        for name, value in headers:
            if name == b"authorization":
                scheme, _, key = value.partition(b" ")
                key = key.strip()
                if scheme.lower() == b"bearer" and key:
                    digest = _digest(key)
                    found = None
                    for known, tenant in self._tenants:
                        if hmac.compare_digest(known, digest):
                            found = tenant
                    if found is not None:
                        return found
                break
        raise Unauthorized(
            "send Authorization: Bearer <key>", {"WWW-Authenticate": 'Bearer realm="fastctx"'}
        )
