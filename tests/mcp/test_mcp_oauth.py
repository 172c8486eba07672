"""OAuth on a real server: access tokens of a real oidc-provider on /v1 and /mcp, beside keys."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.auth.oauth2 import OAuthClientProvider
from mcp.client.client import Client as SdkClient
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from mcp_wire import BASE, ENVELOPE, LEGACY, modern, rpc

from support.oidc import APP_REDIRECT, AuthorizationServer
from support.ports import free_port
from support.servers import GranianServer

PUBLIC_URL = "https://ctx.example.com"
METADATA = "/.well-known/oauth-protected-resource"
SCOPES = "contexts:read contexts:write"


@pytest.fixture
def oauth_server(
    tmp_path: Path, authorization_server: AuthorizationServer
) -> Iterator[GranianServer]:
    server = GranianServer.start(
        tmp_path,
        "memory://",
        public_url=PUBLIC_URL,
        oauth_issuer=authorization_server.issuer,
        api_keys="ops:an-api-key",
    )
    yield server
    server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(r: httpx.Response) -> dict[str, str]:
    """The parameters of a response's WWW-Authenticate: Bearer challenge."""
    header = r.headers["www-authenticate"]
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params = {}
    for part in rest.split('", '):
        name, _, value = part.partition("=")
        params[name.strip()] = value.strip().strip('"')
    return params


def test_the_protected_resource_metadata_names_the_authorization_server(
    oauth_server: GranianServer, authorization_server: AuthorizationServer
) -> None:
    for suffix in ("", "/mcp"):
        r = httpx.get(oauth_server.base_url + METADATA + suffix)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "resource": PUBLIC_URL + suffix,
            "authorization_servers": [authorization_server.issuer],
            "scopes_supported": ["contexts:read", "contexts:write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "fastctx",
        }


def test_without_oauth_there_is_no_metadata(tmp_path: Path) -> None:
    server = GranianServer.start(tmp_path, "memory://")
    try:
        assert httpx.get(server.base_url + METADATA).status_code == 404
    finally:
        server.stop()


def test_no_token_or_a_bad_one_is_401_with_a_challenge(oauth_server: GranianServer) -> None:
    base = oauth_server.base_url
    r = httpx.post(base + "/v1/contexts", json={"a": 1})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert challenge(r) == {
        "resource_metadata": PUBLIC_URL + METADATA,
        "scope": SCOPES,
    }
    r = httpx.post(base + "/mcp", content=rpc("tools/list", {}), headers=modern("tools/list"))
    assert r.status_code == 401
    assert challenge(r)["resource_metadata"] == PUBLIC_URL + METADATA + "/mcp"
    r = httpx.get(base + "/v1/contexts/" + "A" * 22, headers=bearer("not-a-jwt"))
    assert r.status_code == 401
    params = challenge(r)
    assert params["error"] == "invalid_token"
    assert params["error_description"] == "the access token is not a JWT"


def test_a_token_for_another_resource_is_401(
    oauth_server: GranianServer, authorization_server: AuthorizationServer
) -> None:
    token = authorization_server.token(resource="https://other.example.com")
    r = httpx.post(oauth_server.base_url + "/v1/contexts", json={}, headers=bearer(token))
    assert r.status_code == 401
    assert challenge(r)["error_description"] == "the access token is not meant for this server"


def test_a_token_acts_within_its_tenant_beside_api_keys(
    oauth_server: GranianServer, authorization_server: AuthorizationServer
) -> None:
    base = oauth_server.base_url
    service = bearer(authorization_server.token(resource=PUBLIC_URL))
    r = httpx.post(base + "/v1/contexts", json={"order": 7}, headers=service)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert httpx.get(f"{base}/v1/contexts/{token}", headers=service).json() == {"order": 7}
    # Another client of the same authorization server is another tenant (its sub).
    reader = bearer(authorization_server.token("reader", "contexts:read", PUBLIC_URL + "/mcp"))
    assert httpx.get(f"{base}/v1/contexts/{token}", headers=reader).status_code == 404
    # API keys keep working beside OAuth, in their own tenant.
    key = bearer("an-api-key")
    assert httpx.get(f"{base}/v1/contexts/{token}", headers=key).status_code == 404
    r = httpx.post(base + "/v1/contexts", json=[1], headers=key)
    assert r.status_code == 201


def test_writes_need_the_write_scope(
    oauth_server: GranianServer, authorization_server: AuthorizationServer
) -> None:
    base = oauth_server.base_url
    reader = bearer(authorization_server.token("reader", "contexts:read", PUBLIC_URL))
    r = httpx.post(base + "/v1/contexts", json={"a": 1}, headers=reader)
    assert r.status_code == 403
    assert challenge(r) == {
        "resource_metadata": PUBLIC_URL + METADATA,
        "scope": "contexts:write",
        "error": "insufficient_scope",
        "error_description": "the access token does not grant contexts:write",
    }
    # Reads (mget is a POST that reads) need only contexts:read.
    r = httpx.post(base + "/v1/contexts/mget", json={"tokens": ["A" * 22]}, headers=reader)
    assert r.status_code == 200, r.text
    assert httpx.get(base + "/v1/contexts/" + "A" * 22, headers=reader).status_code == 404
    assert httpx.delete(base + "/v1/contexts/" + "A" * 22, headers=reader).status_code == 403


def test_mcp_methods_need_the_scope_of_what_they_do(
    oauth_server: GranianServer, authorization_server: AuthorizationServer
) -> None:
    url = oauth_server.base_url + "/mcp"
    reader = bearer(authorization_server.token("reader", "contexts:read", PUBLIC_URL + "/mcp"))
    writer = bearer(authorization_server.token(resource=PUBLIC_URL + "/mcp"))

    def call(who: dict[str, str], name: str, arguments: dict[str, object]) -> httpx.Response:
        params = {"_meta": ENVELOPE, "name": name, "arguments": arguments}
        headers = {**modern("tools/call", name), **who}
        return httpx.post(url, content=rpc("tools/call", params), headers=headers)

    r = httpx.post(
        url,
        content=rpc("tools/list", {"_meta": ENVELOPE}),
        headers={**modern("tools/list"), **reader},
    )
    assert r.status_code == 200, r.text
    r = call(reader, "context_create", {"data": {"a": 1}})
    assert r.status_code == 403
    assert challenge(r)["scope"] == "contexts:write"
    assert challenge(r)["resource_metadata"] == PUBLIC_URL + METADATA + "/mcp"
    r = call(writer, "context_create", {"data": {"a": 1}})
    assert r.status_code == 200, r.text
    token = r.json()["result"]["structuredContent"]["token"]
    r = call(reader, "context_get", {"token": token})
    assert r.status_code == 200
    assert r.json()["result"]["isError"] is True  # another tenant's: not found
    r = call(writer, "context_get", {"token": token})
    assert json.loads(r.json()["result"]["content"][0]["text"])["data"] == {"a": 1}
    # The session era: initialize reads nothing, so either scope will do.
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t"}}
    r = httpx.post(url, content=rpc("initialize", params), headers={**BASE, **reader})
    assert r.status_code == 200, r.text


def served_at_its_own_address(
    tmp_path: Path, authorization_server: AuthorizationServer
) -> tuple[GranianServer, str]:
    """A server with OAuth on whose public URL is its own address: a real client checks that
    the metadata's resource is the URL it connects to (RFC 9728 section 3.3)."""
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    server = GranianServer.start(
        tmp_path, "memory://", port=port, public_url=public,
        oauth_issuer=authorization_server.issuer,
    )  # fmt: skip
    return server, public


class _Memory:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: Any = None
        self.client_info: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_sdk_client_finds_the_authorization_server_from_the_401_and_calls_tools(
    tmp_path: Path, authorization_server: AuthorizationServer, mode: str
) -> None:
    server, public = served_at_its_own_address(tmp_path, authorization_server)
    storage = _Memory()
    provider = ClientCredentialsOAuthProvider(
        server_url=public + "/mcp",
        storage=storage,  # type: ignore[arg-type]
        client_id="service",
        client_secret="service-secret",
        scope=SCOPES,
        issuer=authorization_server.issuer,
    )

    async def main() -> None:
        async with create_mcp_http_client(auth=provider) as http:
            transport = streamable_http_client(public + "/mcp", http_client=http)
            async with SdkClient(transport, mode=mode) as client:
                created = await client.call_tool("context_create", {"data": {"via": "oauth"}})
                assert not created.is_error, created
                token = created.structured_content["token"]
                read = await client.call_tool("context_get", {"token": token})
                assert read.structured_content["data"] == {"via": "oauth"}

    try:
        asyncio.run(main())
        # The token it obtained is for this server, and acts as its client's tenant.
        assert storage.tokens is not None
        access = storage.tokens.access_token
        claims = jwt.decode(access, options={"verify_signature": False})
        assert claims["aud"] == public + "/mcp"
        assert claims["sub"] == "service"
        r = httpx.get(public + "/v1/contexts/" + "A" * 22, headers=bearer(access))
        assert r.status_code == 404  # accepted, and no such context
    finally:
        server.stop()


def test_a_key_rotation_at_the_provider_is_followed_without_a_restart(
    oauth_server: GranianServer, authorization_server: AuthorizationServer
) -> None:
    base = oauth_server.base_url
    before = bearer(authorization_server.token(resource=PUBLIC_URL))
    assert httpx.get(base + "/v1/contexts/" + "A" * 22, headers=before).status_code == 404
    fetched_at = time.monotonic()
    authorization_server.rotate()  # a new signing key; the old one is no longer published
    after = bearer(authorization_server.token(resource=PUBLIC_URL))
    # The keys are fetched again for an unknown key id, once the refetch interval (10 s) since
    # the last fetch has passed: until then such a token is refused, never the server stopped.
    statuses = []
    while time.monotonic() < fetched_at + 20:
        statuses.append(httpx.get(base + "/v1/contexts/" + "A" * 22, headers=after).status_code)
        if statuses[-1] == 404:
            break
        time.sleep(0.5)
    assert statuses[-1] == 404, statuses
    assert set(statuses) <= {401, 404}


def test_the_sdk_client_gets_a_token_by_authorization_code_with_pkce(
    tmp_path: Path, authorization_server: AuthorizationServer
) -> None:
    # What remote MCP clients (desktop apps, IDEs) do: a public client, a browser login, PKCE.
    server, public = served_at_its_own_address(tmp_path, authorization_server)
    storage = _Memory()
    storage.client_info = OAuthClientInformationFull(
        client_id="app",
        redirect_uris=[APP_REDIRECT],
        grant_types=["authorization_code"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=SCOPES,
    )
    asked: list[str] = []

    async def redirect(url: str) -> None:
        asked.append(url)  # where a browser would be sent

    async def callback() -> AuthorizationCodeResult:
        back = await asyncio.to_thread(authorization_server.log_in, asked[-1], "alice")
        return AuthorizationCodeResult(**back)

    metadata = OAuthClientMetadata(
        redirect_uris=[APP_REDIRECT],
        grant_types=["authorization_code"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=SCOPES,
    )
    provider = OAuthClientProvider(public + "/mcp", metadata, storage, redirect, callback)  # type: ignore[arg-type]

    async def main() -> str:
        async with create_mcp_http_client(auth=provider) as http:
            transport = streamable_http_client(public + "/mcp", http_client=http)
            async with SdkClient(transport, mode="auto") as client:
                created = await client.call_tool("context_create", {"data": ["alice's"]})
                assert not created.is_error, created
                return str(created.structured_content["token"])

    try:
        token = asyncio.run(main())
        assert len(asked) == 1
        query = dict(httpx.URL(asked[0]).params)
        assert query["code_challenge_method"] == "S256"
        assert query["resource"] == public + "/mcp"  # RFC 8707, as the MCP spec asks
        access = storage.tokens.access_token
        claims = jwt.decode(access, options={"verify_signature": False})
        assert claims["sub"] == "alice"
        assert claims["aud"] == public + "/mcp"
        # The context is alice's: her token reads it, another client's does not.
        r = httpx.get(f"{public}/v1/contexts/{token}", headers=bearer(access))
        assert r.json() == ["alice's"]
        other = authorization_server.token(resource=public + "/mcp")
        assert httpx.get(f"{public}/v1/contexts/{token}", headers=bearer(other)).status_code == 404
    finally:
        server.stop()
