"""OAuth 2.1 access tokens: JWTs of trusted authorization servers, checked as a resource server.

An issuer is trusted by configuration; its signing keys are found through its metadata (RFC
8414, or OpenID discovery) and fetched again when a token names a key that is not known yet,
at most once per `refetch_interval` per issuer, so a flood of made-up key ids costs no more
than one fetch. A token is accepted when its signature verifies with one of those keys (an
asymmetric algorithm only), `iss` is that issuer, `aud` names this server (RFC 8707), and
`exp`/`nbf` hold within `leeway`. The token itself is never passed on to anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt

from fastctx.config import TENANT_PATTERN
from fastctx.errors import InsufficientScope, InvalidAccessToken

READ_SCOPE = "contexts:read"
WRITE_SCOPE = "contexts:write"
SCOPES = (READ_SCOPE, WRITE_SCOPE)
#: What a request needs when it reads nothing (initialize, tools/list): either scope.
ANY_SCOPE = ""
#: Where a request verified by access token keeps its Grant, in the ASGI scope.
GRANT_SCOPE_KEY = "fastctx.grant"
# No HS* (a shared secret is not how an authorization server signs for many resource servers)
# and never "none".
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
DEFAULT_LEEWAY = 30.0  # seconds of clock skew allowed on exp and nbf
DEFAULT_REFETCH_INTERVAL = 10.0  # seconds between two key fetches of one issuer
VERIFIED_CACHE_SIZE = 10_000  # tokens remembered as verified, each until it expires


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: for whom (the tenant claim), what, and until when."""

    tenant: str
    scopes: frozenset[str]
    expires_at: float  # seconds since the epoch


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be: RFC 8414's place (the well-known segment before the
    issuer's path), then OpenID discovery's (after it), as RFC 8414 section 5 orders them."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    paths = [
        "/.well-known/oauth-authorization-server" + path,
        "/.well-known/openid-configuration" + path,
        path + "/.well-known/openid-configuration",
    ]
    return [urlunsplit((parts.scheme, parts.netloc, p, "", "")) for p in dict.fromkeys(paths)]


class _Issuer:
    """One trusted authorization server: its keys by id, fetched as they are needed."""

    def __init__(self, issuer: str, http: httpx.AsyncClient, refetch_interval: float) -> None:
        self.issuer = issuer
        self._http = http
        self._refetch_interval = refetch_interval
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")
        self._fetching: asyncio.Task[None] | None = None

    async def key(self, kid: str | None) -> jwt.PyJWK:
        key = self._find(kid)
        if key is None and time.monotonic() - self._fetched_at >= self._refetch_interval:
            await self._refresh()
            key = self._find(kid)
        if key is None:
            raise InvalidAccessToken("the token is signed with a key its issuer does not publish")
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        # A token without a key id is only unambiguous when the issuer has one key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self) -> None:
        # One fetch at a time: requests that arrive meanwhile wait for it.
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        task = self._fetching
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._fetching is task:
                self._fetching = None

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()  # a failed fetch counts too: no retry storm
        try:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover()
            response = await self._http.get(self._jwks_uri)
            response.raise_for_status()
            document = response.json()
            keys: dict[str, jwt.PyJWK] = {}
            for entry in document.get("keys", []):
                if entry.get("use", "sig") != "sig" or "d" in entry:
                    continue  # an encryption key, or a private one published by mistake
                try:
                    key = jwt.PyJWK(entry)
                except jwt.PyJWKError:
                    continue  # a key type this library does not know: not usable anyway
                keys[entry.get("kid", "")] = key
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise InvalidAccessToken(f"the keys of {self.issuer} cannot be fetched now") from exc
        self._keys = keys

    async def _discover(self) -> str:
        for url in metadata_urls(self.issuer):
            try:
                response = await self._http.get(url)
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            metadata = response.json()
            # RFC 8414 section 3.3: metadata that names another issuer must not be used.
            if metadata.get("issuer") != self.issuer or not isinstance(
                metadata.get("jwks_uri"), str
            ):
                continue
            return str(metadata["jwks_uri"])
        raise InvalidAccessToken(f"no authorization server metadata found for {self.issuer}")


class AccessTokens:
    """Verifies the access tokens of `issuers` meant for one of `audiences`."""

    def __init__(
        self,
        issuers: Sequence[str],
        audiences: Sequence[str],
        *,
        tenant_claim: str = "sub",
        leeway: float = DEFAULT_LEEWAY,
        refetch_interval: float = DEFAULT_REFETCH_INTERVAL,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not issuers or not audiences:
            raise ValueError("an issuer and an audience are needed to verify access tokens")
        self.audiences = list(audiences)
        self.tenant_claim = tenant_claim
        self.leeway = leeway
        self._http = http or httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self._issuers = {i: _Issuer(i, self._http, refetch_interval) for i in issuers}
        self._verified: OrderedDict[str, Grant] = OrderedDict()

    async def close(self) -> None:
        await self._http.aclose()

    async def verify(self, token: str) -> Grant:
        """The grant of a valid access token; `InvalidAccessToken` otherwise, its detail
        saying why (it goes back to the client as `error_description`, so it names no key and
        echoes nothing of the token)."""
        grant = self._verified.get(token)
        if grant is not None:
            if grant.expires_at + self.leeway > time.time():
                self._verified.move_to_end(token)
                return grant
            del self._verified[token]
        grant = await self._verify(token)
        self._verified[token] = grant
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return grant

    async def _verify(self, token: str) -> Grant:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidAccessToken("the access token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidAccessToken("the access token is not signed with an accepted algorithm")
        issuer = self._issuers.get(unverified.get("iss"))  # type: ignore[arg-type]
        if issuer is None:
            raise InvalidAccessToken("the access token is not from a trusted issuer")
        key = await issuer.key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audiences,
                issuer=issuer.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidAccessToken("the access token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidAccessToken("the access token is not meant for this server") from None
        except jwt.ImmatureSignatureError:
            raise InvalidAccessToken("the access token is not valid yet") from None
        except jwt.PyJWTError:
            raise InvalidAccessToken(
                "the access token's signature or claims do not verify"
            ) from None
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise InvalidAccessToken(
                f"the access token has no {self.tenant_claim} claim to name a tenant"
            )
        return Grant(tenant_name(tenant), _scopes(claims), float(claims["exp"]))


def tenant_name(claim: str) -> str:
    """The tenant a claim's value names: itself when it is a tenant name as API keys give them
    (it goes into storage keys and their hash tags), else its SHA-256 in hex (`auth0|abc`,
    `svc@clients`), so that no claim can reach into another tenant's keys."""
    if TENANT_PATTERN.match(claim):
        return claim
    return hashlib.sha256(claim.encode()).hexdigest()


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """RFC 9068's `scope` (space-separated), or the `scp` list some servers send instead."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    return frozenset()


def require_scope(grant: Grant | None, needed: str) -> None:
    """`InsufficientScope` unless the request's grant allows `needed` (API keys
    allow everything; ANY_SCOPE is either fastctx scope)."""
    if grant is None:
        return
    if needed == ANY_SCOPE:
        if grant.scopes.intersection(SCOPES):
            return
        needed = " ".join(SCOPES)
    elif needed in grant.scopes:
        return
    raise InsufficientScope(needed)
