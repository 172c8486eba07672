"""Contract: with FASTCTX_API_KEYS set, /v1 needs a bearer key; a tenant sees only its data."""

from __future__ import annotations

import httpx
import pytest
from contract import JSON, MERGE, UNKNOWN_TOKEN, assert_problem, create, create_session, get_state

ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}

V1_REQUESTS = [
    ("POST", "/v1/contexts", b'{"a": 1}', JSON),
    ("GET", f"/v1/contexts/{UNKNOWN_TOKEN}", None, {}),
    ("GET", f"/v1/contexts/{UNKNOWN_TOKEN}/meta", None, {}),
    ("PUT", f"/v1/contexts/{UNKNOWN_TOKEN}", b'{"a": 1}', JSON),
    ("PATCH", f"/v1/contexts/{UNKNOWN_TOKEN}", b'{"a": 1}', MERGE),
    ("DELETE", f"/v1/contexts/{UNKNOWN_TOKEN}", None, {}),
    ("POST", "/v1/contexts/mget", b'{"tokens": []}', JSON),
    ("POST", "/v1/sessions", None, {}),
    ("GET", f"/v1/sessions/{UNKNOWN_TOKEN}", None, {}),
    ("DELETE", f"/v1/sessions/{UNKNOWN_TOKEN}", None, {}),
]


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer wrong-key",
        "Bearer key-acmeX",
        "Bearer",
        "Basic a2V5LWFjbWU=",
        "key-acme",
        "Bearer acme:key-acme",
    ],
)
def test_missing_or_wrong_key_is_401(tenant_client: httpx.Client, auth: str | None) -> None:
    auth_header = {"Authorization": auth} if auth is not None else {}
    for method, path, body, headers in V1_REQUESTS:
        r = tenant_client.request(method, path, content=body, headers={**headers, **auth_header})
        assert_problem(r, 401)
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), (method, path)


def test_wrong_key_changes_nothing(tenant_client: httpx.Client) -> None:
    token = create(tenant_client, {"a": 1}, headers=ACME)
    state = get_state(tenant_client, token, ACME)
    bad = {"Authorization": "Bearer nope"}
    assert tenant_client.put(f"/v1/contexts/{token}", json={"b": 1}, headers=bad).status_code == 401
    assert tenant_client.delete(f"/v1/contexts/{token}", headers=bad).status_code == 401
    assert get_state(tenant_client, token, ACME) == state


def test_each_key_works(tenant_client: httpx.Client) -> None:
    for headers in (ACME, GLOBEX):
        token = create(tenant_client, {"mine": True}, headers=headers)
        r = tenant_client.get(f"/v1/contexts/{token}", headers=headers)
        assert r.status_code == 200
        assert r.json() == {"mine": True}


def test_other_tenants_token_is_404(tenant_client: httpx.Client) -> None:
    raw = b'{"owner": "acme"}'
    token = create(tenant_client, raw=raw, headers=ACME)
    state = get_state(tenant_client, token, ACME)
    base = f"/v1/contexts/{token}"
    assert_problem(tenant_client.get(base, headers=GLOBEX), 404)
    assert tenant_client.head(base, headers=GLOBEX).status_code == 404
    assert_problem(tenant_client.get(f"{base}/meta", headers=GLOBEX), 404)
    assert_problem(tenant_client.put(base, json={"owner": "globex"}, headers=GLOBEX), 404)
    assert_problem(
        tenant_client.patch(base, content=b'{"owner": "globex"}', headers={**MERGE, **GLOBEX}), 404
    )
    assert_problem(tenant_client.delete(base, headers=GLOBEX), 404)
    r = tenant_client.post("/v1/contexts/mget", json={"tokens": [token]}, headers=GLOBEX)
    assert r.status_code == 200
    assert r.json() == {"items": [None]}
    # The owner still sees it, unchanged.
    assert get_state(tenant_client, token, ACME) == state
    assert state[1] == raw
    r = tenant_client.post("/v1/contexts/mget", json={"tokens": [token]}, headers=ACME)
    assert r.json() == {"items": [{"token": token, "version": 1, "data": {"owner": "acme"}}]}


def test_other_tenants_session_is_404(tenant_client: httpx.Client) -> None:
    sid = create_session(tenant_client, headers=ACME)
    t = create(tenant_client, {"in": "session"}, params={"session": sid}, headers=ACME)
    assert_problem(tenant_client.get(f"/v1/sessions/{sid}", headers=GLOBEX), 404)
    r = tenant_client.post("/v1/contexts", json={"x": 1}, params={"session": sid}, headers=GLOBEX)
    assert_problem(r, 404)
    assert_problem(tenant_client.delete(f"/v1/sessions/{sid}", headers=GLOBEX), 404)
    doc = tenant_client.get(f"/v1/sessions/{sid}", headers=ACME).json()
    assert doc["contexts"] == [t]
    assert tenant_client.get(f"/v1/contexts/{t}", headers=ACME).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_operational_endpoints_need_no_key(tenant_client: httpx.Client, path: str) -> None:
    assert tenant_client.get(path).status_code == 200
