"""Injection attempts in tokens, session ids and API keys: 4xx, and nothing read or changed."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hostile import (
    ACME,
    GLOBEX,
    JSON,
    JSON_PATCH,
    MCP_HEADERS,
    MERGE,
    PROTECTED,
    Live,
    assert_client_error,
    assert_intact,
    call_tool,
    create_protected,
    mcp_session,
)

# The servers (live, tenant_live, own_live, own_tenant_live) and `protected`.
pytest_plugins = ["fuzz_servers"]


# --- injection attempts in ids and keys --------------------------------------------------------

INJECTIONS = [
    "*",
    "?",
    "[a-z]*",
    "fc:c:*",
    "0AbCdEfGhIjKlMnOpQrSt*",
    "0AbCdEfGhIjKlMnOpQrSt?",
    "0AbCdEfGhIjKlMnOpQr[S]",
    "{default/0AbCdEfGhIjKlMnOpQrStU}",
    "}",
    "{",
    "0AbCdEfGhIjKlMnOpQrS}{",
    "acme/0AbCdEfGhIjKlMnOpQrStU",
    "0AbCdEfGhIjKlMnOpQrSt\r\n",
    "\r\nFLUSHALL\r\n",
    "0AbCdEfGhIjKlMnOpQ tU",
    " 0AbCdEfGhIjKlMnOpQrSt",
    "'); redis.call('FLUSHALL') --",
    "]]..redis.call('FLUSHDB')..[[",
    '" .. redis.call("DEL", KEYS[1]) .. "',
    "0AbCdEfGhIjKlMnOpQrSt\x00",
    "%s%s%s%n",
    "${jndi:ldap://x}",
]
IDS = [f"injection{i}" for i in range(len(INJECTIONS))]


@pytest.mark.parametrize("bad", INJECTIONS, ids=IDS)
def test_injection_in_ids_is_4xx_and_changes_nothing(own_live: Live, bad: str) -> None:
    c = own_live.client
    protected = create_protected(c)
    session = c.post("/v1/sessions").json()["session"]
    mcp = mcp_session(c)
    keys = own_live.keys()
    quoted = quote(bad, safe="")
    for method, path in [
        ("GET", f"/v1/contexts/{quoted}"),
        ("HEAD", f"/v1/contexts/{quoted}"),
        ("DELETE", f"/v1/contexts/{quoted}"),
        ("GET", f"/v1/contexts/{quoted}/meta"),
        ("GET", f"/v1/contexts/{quoted}/events"),
        ("GET", f"/v1/sessions/{quoted}"),
        ("DELETE", f"/v1/sessions/{quoted}"),
        ("GET", f"/v1/sessions/{quoted}/events"),
    ]:
        assert_client_error(c.request(method, path), 404, 405)
    r = c.get(f"/v1/contexts/{quoted}", params={"path": "/victim"})
    assert_client_error(r, 404, 405)
    r = c.post(f"/v1/contexts/{quoted}/append", params={"path": "/list"}, content=b"[1]",
               headers=JSON)  # fmt: skip
    assert_client_error(r, 404, 405)
    for method, headers, body in [
        ("PUT", JSON, b'{"hijacked": true}'),
        ("PATCH", MERGE, b'{"victim": null}'),
        ("PATCH", JSON_PATCH, b'[{"op": "remove", "path": "/victim"}]'),
    ]:
        r = c.request(method, f"/v1/contexts/{quoted}", content=body, headers=headers)
        assert_client_error(r, 404)
    # As a session to create a context in: 404 before anything is stored.
    r = c.post("/v1/contexts", params={"session": bad}, content=b"{}", headers=JSON)
    assert_client_error(r, 404)
    r = c.post("/v1/contexts/mget", json={"tokens": [bad, protected, bad]})
    assert r.status_code == 200
    assert r.json()["items"][0] is None
    assert r.json()["items"][2] is None
    assert r.json()["items"][1]["data"] == json.loads(PROTECTED)
    # The same over MCP: tool errors, and an unknown MCP session.
    for tool, args in [
        ("context_get", {"token": bad}),
        ("context_get", {"token": bad, "path": "/victim"}),
        ("context_append", {"token": bad, "path": "/list", "items": [1]}),
        ("context_update", {"token": bad, "patch": {"victim": None}}),
        ("context_delete", {"token": bad}),
        ("session_get", {"session": bad}),
        ("context_create", {"data": {}, "session": bad}),
    ]:
        reply = call_tool(c, mcp, tool, args)
        assert reply["result"]["isError"] is True, reply
    if bad.isprintable() and bad == bad.strip():  # what a header value can carry
        r = c.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 3, "method": "ping"},
            headers={**mcp, "Mcp-Session-Id": bad},
        )
        assert_client_error(r, 404)
        ctx = c.post("/mcp", json={"jsonrpc": "2.0", "id": 4, "method": "resources/read",
                                   "params": {"uri": f"ctx://{bad}"}}, headers=mcp)  # fmt: skip
        assert ctx.status_code == 200, ctx.text
        assert "error" in ctx.json(), ctx.text
    assert own_live.keys() == keys  # nothing was written, nothing was removed
    assert c.get(f"/v1/sessions/{session}").status_code == 200
    assert_intact(c, protected)


TENANT_KEY_ATTEMPTS = [
    "*",
    "key-*",
    "key-acm?",
    "key-[a-z]cme",
    "key-acm",
    "key-acmex",
    "Key-acme",
    "{acme}",
    "acme",
    "acme:key-acme",
    "key-acme,key-globex",
    "key-acme key-globex",
    "'); redis.call('FLUSHALL') --",
    "a" * 10_000,
]


@pytest.mark.parametrize("key", TENANT_KEY_ATTEMPTS, ids=[f"key{i}" for i in range(14)])
def test_forged_api_keys_are_401(own_tenant_live: Live, key: str) -> None:
    c = own_tenant_live.client
    token = create_protected(c, ACME)
    keys = own_tenant_live.keys()
    for scheme in ("Bearer", "bearer", "Basic", "Token"):
        auth = {"Authorization": f"{scheme} {key}"}
        for method, path, body, headers in [
            ("GET", f"/v1/contexts/{token}", b"", {}),
            ("PUT", f"/v1/contexts/{token}", b'{"hijacked": 1}', JSON),
            ("DELETE", f"/v1/contexts/{token}", b"", {}),
            ("POST", "/v1/contexts/mget", json.dumps({"tokens": [token]}).encode(), JSON),
            ("POST", "/v1/sessions", b"", {}),
            ("POST", "/mcp", b'{"jsonrpc":"2.0","id":1,"method":"ping"}', MCP_HEADERS),
        ]:
            r = c.request(method, path, content=body, headers={**headers, **auth})
            assert r.status_code == 401, (scheme, key, method, path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert own_tenant_live.keys() == keys
    assert_intact(c, token, ACME)


def test_another_tenants_token_is_404(tenant_live: Live) -> None:
    c = tenant_live.client
    token = create_protected(c, ACME)
    for method, body, headers in [
        ("GET", b"", {}),
        ("PUT", b'{"hijacked": 1}', JSON),
        ("PATCH", b'{"victim": null}', MERGE),
        ("DELETE", b"", {}),
    ]:
        r = c.request(method, f"/v1/contexts/{token}", content=body, headers={**headers, **GLOBEX})
        assert_client_error(r, 404)
    r = c.get(f"/v1/contexts/{token}", params={"path": "/victim"}, headers=GLOBEX)
    assert_client_error(r, 404)
    r = c.post(f"/v1/contexts/{token}/append", params={"path": "/list"}, content=b"[1]",
               headers={**JSON, **GLOBEX})  # fmt: skip
    assert_client_error(r, 404)
    r = c.post("/v1/contexts/mget", json={"tokens": [token]}, headers=GLOBEX)
    assert r.json() == {"items": [None]}
    r = c.post("/v1/contexts/mget", params={"path": "/x"}, json={"tokens": [token]}, headers=GLOBEX)
    assert r.json() == {"items": [None]}
    mcp = mcp_session(c, GLOBEX)
    assert call_tool(c, mcp, "context_get", {"token": token})["result"]["isError"] is True
    arguments = {"token": token, "path": "/list", "items": [1]}
    assert call_tool(c, mcp, "context_append", arguments)["result"]["isError"] is True
    # acme's MCP session is not globex's either.
    acme_mcp = mcp_session(c, ACME)
    r = c.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={**acme_mcp, **GLOBEX},
    )
    assert_client_error(r, 404)
    assert_intact(c, token, ACME)
