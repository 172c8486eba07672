"""Tenants: which API key or OAuth access token a request carries, checked before any /v1 or
/mcp route runs; and what an access token's scopes allow."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import msgspec

from fastctx.asgi.exchange import Exchange
from fastctx.config import DEFAULT_TENANT
from fastctx.errors import Forbidden, InsufficientScope, InvalidAccessToken, Unauthorized
from fastctx.http.routes import NO_PARAMETERS, Found, Handler
from fastctx.oauth import SCOPES, AccessTokens, Grant

METADATA_PATH = "/.well-known/oauth-protected-resource"

PROTECTED_PREFIXES = ("/v1/", "/mcp")
PROTECTED_PATHS = ("/v1", "/mcp")


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def is_protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES) or path in PROTECTED_PATHS


def metadata_url(resource: str, path: str) -> str:
    """The URL of the protected-resource metadata (RFC 9728) that covers `path`: /mcp has a
    document of its own, the rest of the server shares the root one."""
    suffix = "/mcp" if path.startswith("/mcp") else ""
    return resource + METADATA_PATH + suffix


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Tenants:
    """Maps a request's `Authorization: Bearer <key or access token>` to its tenant.

    The presented key's SHA-256 digest is compared with every known digest in constant time:
    how long the check takes depends on how many keys there are, never on what was sent. With
    OAuth on (`access_tokens`), a bearer that is no key is verified as an access token.
    """

    def __init__(
        self,
        keys: dict[str, str],
        access_tokens: AccessTokens | None = None,
        resource: str = "",
    ) -> None:
        self._tenants = [(_digest(key.encode()), tenant) for key, tenant in keys.items()]
        self.access_tokens = access_tokens
        self.resource = resource

    def resolve(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The tenant of a request with these ASGI headers; None when its bearer is to be
        verified as an access token (`verify`); `Unauthorized` if it has none."""
        if not self._tenants and self.access_tokens is None:
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
                    if self.access_tokens is not None:
                        return None
                break
        if self.access_tokens is None:
            raise Unauthorized(
                "send Authorization: Bearer <key>", {"WWW-Authenticate": 'Bearer realm="fastctx"'}
            )
        raise Unauthorized("send Authorization: Bearer <access token>")

    async def verify(self, headers: Iterable[tuple[bytes, bytes]]) -> Grant:
        """The grant of the request's access token; `Unauthorized` (invalid_token) if none."""
        assert self.access_tokens is not None
        token = b""
        for name, value in headers:
            if name == b"authorization":
                token = value.partition(b" ")[2].strip()
                break
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidAccessToken("the access token is not a JWT") from None
        return await self.access_tokens.verify(text)

    def challenge(self, error: Unauthorized | Forbidden, path: str) -> None:
        """Give a refusal the WWW-Authenticate challenge RFC 6750 and RFC 9728 describe:
        where the metadata is, the scopes, and with a bad or insufficient token, why."""
        if self.access_tokens is None:
            return
        parts = [f"resource_metadata={_quoted(metadata_url(self.resource, path))}"]
        needed = error.scope if isinstance(error, InsufficientScope) else " ".join(SCOPES)
        parts.append(f"scope={_quoted(needed)}")
        if isinstance(error, InvalidAccessToken | InsufficientScope):
            parts.append(f"error={_quoted(error.oauth_error)}")
            parts.append(f"error_description={_quoted(error.detail)}")
        error.headers["WWW-Authenticate"] = "Bearer " + ", ".join(parts)


class ProtectedResource:
    """GET /.well-known/oauth-protected-resource (and .../mcp): RFC 9728 metadata, served
    while OAuth is on, telling a client which authorization servers issue tokens for it."""

    def __init__(self, resource: str, issuers: list[str]) -> None:
        self._documents: dict[str, bytes] = {}
        if issuers:
            for suffix in ("", "/mcp"):
                self._documents[METADATA_PATH + suffix] = msgspec.json.encode(
                    {
                        "resource": resource + suffix,
                        "authorization_servers": issuers,
                        "scopes_supported": list(SCOPES),
                        "bearer_methods_supported": ["header"],
                        "resource_name": "fastctx",
                    }
                )
        self._handlers: dict[str, Handler] = {"GET": self.metadata, "HEAD": self.metadata}

    def route(self, path: str) -> Found | None:
        if path not in self._documents:
            return None
        return path, self._handlers, "", NO_PARAMETERS

    async def metadata(self, ex: Exchange, _: str, __: str) -> int:
        return await ex.respond(200, self._documents[ex.scope["path"]])
