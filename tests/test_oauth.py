"""Access tokens as a resource server checks them, against a real oidc-provider."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fastctx.errors import InvalidAccessToken
from fastctx.oauth import AccessTokens, Grant, metadata_urls, tenant_name
from support.oidc import AuthorizationServer

RESOURCE = "https://ctx.example.com/"
SCOPES = frozenset({"contexts:read", "contexts:write"})


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def counting_client() -> tuple[httpx.AsyncClient, list[str]]:
    """A real HTTP client that notes each URL it fetches."""
    fetched: list[str] = []

    async def note(request: httpx.Request) -> None:
        fetched.append(str(request.url))

    return httpx.AsyncClient(timeout=5.0, event_hooks={"request": [note]}), fetched


def verifying(
    server: AuthorizationServer, check: Callable[[AccessTokens], Awaitable[Any]], **options: Any
) -> Any:
    async def main() -> Any:
        tokens = AccessTokens([server.issuer], [RESOURCE], **options)
        try:
            return await check(tokens)
        finally:
            await tokens.close()

    return run(main())


def forged(claims: dict[str, Any], kid: str = "forged", alg: str = "RS256") -> str:
    """A JWT signed with a key no authorization server knows."""
    key = rsa.generate_private_key(65537, 2048)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def test_a_token_for_this_server_gives_its_tenant_and_scopes(
    authorization_server: AuthorizationServer,
) -> None:
    token = authorization_server.token(resource=RESOURCE)
    grant = verifying(authorization_server, lambda tokens: tokens.verify(token))
    assert grant.tenant == "service"
    assert grant.scopes == SCOPES
    assert time.time() < grant.expires_at <= time.time() + 301
    reader = authorization_server.token("reader", "contexts:read", RESOURCE)
    grant = verifying(authorization_server, lambda tokens: tokens.verify(reader))
    assert grant == Grant("reader", frozenset({"contexts:read"}), grant.expires_at)


def test_the_tenant_claim_is_configurable(authorization_server: AuthorizationServer) -> None:
    token = authorization_server.token("reader", "contexts:read", RESOURCE)
    grant = verifying(
        authorization_server, lambda tokens: tokens.verify(token), tenant_claim="client_id"
    )
    assert grant.tenant == "reader"
    with pytest.raises(InvalidAccessToken, match="no tenant_of claim"):
        verifying(authorization_server, lambda t: t.verify(token), tenant_claim="tenant_of")


def test_a_token_for_another_resource_is_refused(
    authorization_server: AuthorizationServer,
) -> None:
    token = authorization_server.token(resource="https://other.example.com/")
    with pytest.raises(InvalidAccessToken, match="not meant for this server"):
        verifying(authorization_server, lambda tokens: tokens.verify(token))


def test_tokens_that_do_not_verify_are_refused(authorization_server: AuthorizationServer) -> None:
    good = authorization_server.token(resource=RESOURCE)
    head, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    kid = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
    widened = {**claims, "sub": "someone-else"}
    tampered = ".".join(
        [
            head,
            base64.urlsafe_b64encode(json.dumps(widened).encode()).rstrip(b"=").decode(),
            signature,
        ]
    )
    cases = {
        tampered: "signature or claims",
        forged(claims, kid): "signature or claims",  # the issuer's key id, another key
        forged(claims): "key its issuer does not publish",
        forged({**claims, "iss": "https://elsewhere.example"}, kid): "not from a trusted issuer",
        jwt.encode(
            claims, "a-shared-secret-of-32-bytes-or-more", algorithm="HS256"
        ): "accepted algorithm",
        jwt.encode(claims, None, algorithm="none"): "accepted algorithm",
        "not.a.jwt": "not a JWT",
    }
    for token, reason in cases.items():
        with pytest.raises(InvalidAccessToken, match=reason):
            verifying(authorization_server, lambda tokens, t=token: tokens.verify(t))
    # The good one still does: nothing above poisoned anything.
    assert verifying(authorization_server, lambda tokens: tokens.verify(good)).tenant == "service"


def test_an_expired_token_is_refused(tmp_path: Any) -> None:
    # Three seconds: the first check must come before the expiry however slow the machine
    # (it fetches the issuer's keys first); the second waits for the token's own `exp`.
    server = AuthorizationServer(tmp_path, token_ttl=3)
    server.start()
    try:
        token = server.token(resource=RESOURCE)
        expires = jwt.decode(token, options={"verify_signature": False})["exp"]

        async def check(tokens: AccessTokens) -> None:
            assert (await tokens.verify(token)).tenant == "service"
            await asyncio.sleep(max(0.0, expires - time.time()) + 1.2)
            with pytest.raises(InvalidAccessToken, match="expired"):
                await tokens.verify(token)  # the verified copy expires with the token

        verifying(server, check, leeway=0)
    finally:
        server.stop()


def test_keys_are_fetched_once_and_again_after_a_rotation(
    authorization_server: AuthorizationServer,
) -> None:
    server = authorization_server
    before = server.token(resource=RESOURCE)
    client, fetched = counting_client()

    async def check(tokens: AccessTokens) -> None:
        await asyncio.gather(*(tokens.verify(before) for _ in range(20)))
        jwks = [url for url in fetched if url.endswith("/jwks")]
        assert len(jwks) == 1, fetched  # twenty requests, one fetch of the keys
        old_kids = server.key_ids()
        server.rotate()  # a new signing key; the old one is no longer published
        assert server.key_ids() != old_kids
        after = server.token(resource=RESOURCE)
        await asyncio.sleep(0.6)  # past the refetch interval
        assert (await tokens.verify(after)).tenant == "service"
        assert len([url for url in fetched if url.endswith("/jwks")]) == 2
        # Made-up key ids in a burst: at most one more fetch per interval, not one each.
        claims = jwt.decode(after, options={"verify_signature": False})
        burst = [forged(claims, f"kid-{n}") for n in range(5)]
        for token in burst:
            with pytest.raises(InvalidAccessToken):
                await tokens.verify(token)
        assert len([url for url in fetched if url.endswith("/jwks")]) <= 3

    verifying(server, check, refetch_interval=0.5, http=client)


def test_a_verified_token_is_not_verified_again(authorization_server: AuthorizationServer) -> None:
    token = authorization_server.token(resource=RESOURCE)
    client, fetched = counting_client()

    async def check(tokens: AccessTokens) -> None:
        first = await tokens.verify(token)
        authorization_server.stop()  # nothing more can be fetched
        assert await tokens.verify(token) == first
        assert len(fetched) == 2, fetched  # the metadata and the keys, once

    verifying(authorization_server, check, http=client)


def test_an_unreachable_issuer_is_a_refusal_not_a_crash(tmp_path: Any) -> None:
    server = AuthorizationServer(tmp_path)  # never started: nothing listens on its port
    claims = {"iss": server.issuer, "aud": RESOURCE, "sub": "s", "exp": time.time() + 60}
    with pytest.raises(InvalidAccessToken, match="no authorization server metadata"):
        verifying(server, lambda tokens: tokens.verify(forged(claims)))


def test_metadata_is_looked_for_where_rfc_8414_says() -> None:
    assert metadata_urls("https://as.example.com") == [
        "https://as.example.com/.well-known/oauth-authorization-server",
        "https://as.example.com/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://as.example.com/tenant1") == [
        "https://as.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://as.example.com/.well-known/openid-configuration/tenant1",
        "https://as.example.com/tenant1/.well-known/openid-configuration",
    ]


def test_a_claim_that_is_no_tenant_name_names_its_digest() -> None:
    assert tenant_name("service") == "service"
    assert tenant_name("svc-1.eu_west") == "svc-1.eu_west"
    for claim in ("auth0|5f7c8ec7", "svc@clients", "a}b", "a/b", "x" * 65):
        name = tenant_name(claim)
        assert len(name) == 64
        assert set(name) <= set("0123456789abcdef"), name
    assert tenant_name("a}b") != tenant_name("a/b")
