"""Tenants: which API key a request carries, checked before any /v1 or /mcp route runs."""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from fastctx.config import DEFAULT_TENANT
from fastctx.errors import Unauthorized
from fastctx.http.problems import problem
from fastctx.http.state import TENANT_SCOPE_KEY

PROTECTED_PREFIXES = ("/v1/", "/v1", "/mcp")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class TenantMiddleware:
    """Puts the request's tenant into the scope, or answers 401.

    The presented key's SHA-256 digest is compared with every known digest in constant time:
    how long the check takes depends on how many keys there are, never on what was sent.
    """

    def __init__(self, app: ASGIApp, keys: dict[str, str]) -> None:
        self.app = app
        self.tenants = {_digest(key): tenant for key, tenant in keys.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        if not self.tenants:
            scope[TENANT_SCOPE_KEY] = DEFAULT_TENANT
            await self.app(scope, receive, send)
            return
        tenant = self._tenant(scope)
        if tenant is None:
            error = Unauthorized(
                "send Authorization: Bearer <key>", {"WWW-Authenticate": 'Bearer realm="fastctx"'}
            )
            await problem(error)(scope, receive, send)
            return
        scope[TENANT_SCOPE_KEY] = tenant
        await self.app(scope, receive, send)

    def _tenant(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, key = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not key.strip():
                    return None
                digest = _digest(key.strip())
                for known, tenant in self.tenants.items():
                    if hmac.compare_digest(known, digest):
                        return tenant
                return None
        return None
