"""Hypothesis-generated requests (bodies, headers, keys, ids, patches): never a 5xx."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hostile import (
    ACME,
    JSON,
    JSON_PATCH,
    MCP_HEADERS,
    MERGE,
    PROTECTED,
    UNKNOWN_TOKEN,
    Live,
    assert_client_error,
    assert_intact,
    create_protected,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

# The servers (live, tenant_live, own_live, own_tenant_live) and `protected`.
pytest_plugins = ["fuzz_servers"]


# --- generated requests (hypothesis) -----------------------------------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
numbers = st.sampled_from(["-0", "123456789012345678901234567890", "0.1e-400", "-1.5e-7"]).map(
    json.loads
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | numbers,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
documents = json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode())
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    documents,
    json_values.map(lambda v: json.dumps(v).encode()[:-1]),  # cut short
    st.builds(
        lambda rid, method, params: json.dumps(
            {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        ).encode(),
        st.integers() | st.text(max_size=8) | st.none(),
        st.sampled_from(
            ["initialize", "ping", "tools/list", "tools/call", "resources/read",
             "resources/templates/list", "resources/subscribe", "server/discover"]
        ) | st.text(max_size=12),
        json_values
        | st.fixed_dictionaries(
            {"name": st.sampled_from(["context_get", "context_create", "context_update",
                                      "context_append", "context_delete", "session_get",
                                      "session_create"]),
             "arguments": st.dictionaries(
                 st.sampled_from(["token", "data", "patch", "session", "ttl", "meta",
                                  "if_version", "path", "slice", "items"]),
                 json_values, max_size=4)},
        ),
    ),
)  # fmt: skip
content_types = st.sampled_from(
    ["application/json", "application/merge-patch+json", "application/json-patch+json",
     "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", ""]
) | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)  # fmt: skip
header_values = (
    st.lists(st.integers(0x20, 0xFF).filter(lambda b: b != 0x7F), max_size=60)
    .map(bytes)
    .map(lambda b: b.strip(b" \t"))
)
HEADER_NAMES = [
    "If-Match", "If-None-Match", "Cache-Control", "Accept", "Origin", "Authorization",
    "Last-Event-ID", "Mcp-Session-Id", "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name",
    "Content-Type", "Baggage", "Context-Token",
]  # fmt: skip
fuzzed_headers = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=5)
BODY_ROUTES = [
    ("POST", "/v1/contexts"),
    ("PUT", "/v1/contexts/{scratch}"),
    ("PATCH", "/v1/contexts/{scratch}"),
    ("POST", "/v1/contexts/mget"),
    ("POST", "/v1/contexts/{scratch}/append"),
    ("POST", "/v1/sessions"),
    ("POST", "/mcp"),
]


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the oracle of the merge patches the server applies."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


@pytest.mark.parametrize(
    "document", [b'{"n": 1e999, "m": -1E-999, "big": 123456789012345678901234567890}', b"-0"]
)
def test_extreme_numbers_are_kept_as_sent(live: Live, document: bytes) -> None:
    r = live.client.post("/v1/contexts", content=document, headers=JSON)
    assert r.status_code == 201, r.text
    url = f"/v1/contexts/{r.json()['token']}"
    assert live.client.get(url).content == document
    r = live.client.patch(url, content=b'{"added": 1}', headers=MERGE)
    assert r.status_code < 500, r.text
    r = live.client.patch(url, content=b'[{"op": "test", "path": "/n", "value": 1}]',
                          headers=JSON_PATCH)  # fmt: skip
    assert r.status_code == 422, r.text


def test_generated_bodies_never_5xx(live: Live, protected: str) -> None:
    scratch = create_protected(live.client)

    @FUZZ
    @given(
        route=st.sampled_from(BODY_ROUTES),
        body=bodies,
        content_type=content_types,
        query=st.dictionaries(
            st.sampled_from(["ttl", "session", "include", "path", "slice"]), st.text(max_size=12)
        ),
    )
    def send(route: tuple[str, str], body: bytes, content_type: str, query: dict[str, str]) -> None:
        method, path = route
        headers = {"Content-Type": content_type, "Accept": "application/json, text/event-stream"}
        r = live.client.request(
            method, path.format(scratch=scratch), content=body, headers=headers, params=query
        )
        assert r.status_code < 500, (route, body, content_type, r.status_code, r.text[:300])

    send()
    assert_intact(live.client, protected)


def test_generated_headers_never_5xx(live: Live, protected: str) -> None:
    scratch = create_protected(live.client)

    @FUZZ
    @given(headers=fuzzed_headers)
    def send(headers: dict[str, bytes]) -> None:
        r = live.client.get(f"/v1/contexts/{protected}", headers=headers)
        assert r.status_code in (200, 304), (headers, r.status_code, r.text[:300])
        if r.status_code == 200:
            assert r.content == PROTECTED
        r = live.client.put(
            f"/v1/contexts/{scratch}", content=b'{"n": 1}', headers={**JSON, **headers}
        )
        assert r.status_code in (200, 400, 412, 415), (headers, r.status_code, r.text[:300])
        r = live.client.get(f"/v1/contexts/{UNKNOWN_TOKEN}/events", headers=headers)
        assert r.status_code in (400, 404), (headers, r.status_code, r.text[:300])
        r = live.client.post(
            "/mcp", content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}', headers=headers
        )
        assert 200 <= r.status_code < 500, (headers, r.status_code, r.text[:300])

    send()
    assert_intact(live.client, protected)


def test_generated_api_keys_are_401(tenant_live: Live) -> None:
    token = create_protected(tenant_live.client, ACME)

    @FUZZ
    @given(key=header_values, scheme=st.sampled_from([b"Bearer ", b"bearer ", b"", b"Basic "]))
    def send(key: bytes, scheme: bytes) -> None:
        assume(key not in (b"key-acme", b"key-globex"))
        auth = {"Authorization": (scheme + key).strip(b" \t")}
        r = tenant_live.client.get(f"/v1/contexts/{token}", headers=auth)
        assert r.status_code == 401, (auth, r.status_code)
        r = tenant_live.client.delete(f"/v1/contexts/{token}", headers=auth)
        assert r.status_code == 401, (auth, r.status_code)

    send()
    assert_intact(tenant_live.client, token, ACME)


def test_generated_tokens_and_session_ids_are_4xx(live: Live, protected: str) -> None:
    @FUZZ
    @given(ident=st.text(max_size=40), method=st.sampled_from(["GET", "DELETE", "PATCH", "PUT"]))
    def send(ident: str, method: str) -> None:
        quoted = quote(ident, safe="")
        for path in (f"/v1/contexts/{quoted}", f"/v1/sessions/{quoted}"):
            r = live.client.request(method, path, content=b"{}", headers=MERGE)
            if r.status_code == 307 and (ident == "" or ident.endswith("/")):
                continue  # Starlette's redirect of /v1/sessions/ to /v1/sessions
            assert_client_error(r)

    send()
    assert_intact(live.client, protected)


pointers = st.lists(
    st.sampled_from(["victim", "z", "k", "0", "1", "3", "-", "~0", "~1", "", "a~1b"])
    | st.text(max_size=5),
    max_size=4,
).map(lambda parts: "".join("/" + part for part in parts)) | st.text(max_size=10)
operations = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test"])
        | st.text(max_size=6),
        "path": pointers,
    },
    optional={"from": pointers, "value": json_values},
)
json_patches = st.lists(operations, max_size=6) | json_values


def test_generated_patches_keep_the_document_valid(live: Live, protected: str) -> None:
    scratch = create_protected(live.client)
    state = {"version": 1, "data": json.loads(PROTECTED)}

    @FUZZ
    @given(patch=json_patches | json_values.map(lambda v: ("merge", v)))
    def send(patch: Any) -> None:
        url = f"/v1/contexts/{scratch}"
        if isinstance(patch, tuple):
            r = live.client.patch(url, content=json.dumps(patch[1]).encode(), headers=MERGE)
            assert r.status_code in (200, 413), (patch, r.status_code, r.text[:300])
            expected = _merge(state["data"], patch[1])
        else:
            r = live.client.patch(url, content=json.dumps(patch).encode(), headers=JSON_PATCH)
            assert r.status_code in (200, 413, 422), (patch, r.status_code, r.text[:300])
            expected = None
        after = live.client.get(url)
        assert after.status_code == 200
        data = json.loads(after.content)  # still valid JSON whatever the patch was
        if r.status_code == 200:
            state["version"] += 1
            assert after.headers["etag"] == f'"{state["version"]}"'
            if expected is not None:
                assert data == expected
        else:
            assert after.headers["etag"] == f'"{state["version"]}"'  # a refusal changes nothing
            assert data == state["data"]
        state["data"] = data

    send()
    assert_intact(live.client, protected)


def test_generated_origins_never_5xx(live: Live) -> None:
    @FUZZ
    @given(
        origin=st.builds(
            lambda scheme, rest: scheme + rest,
            st.sampled_from(["http://", "https://", "//", ""]),
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
        )
    )
    def send(origin: str) -> None:
        r = live.client.post(
            "/mcp",
            content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
            headers={**MCP_HEADERS, "Origin": origin},
        )
        assert 400 <= r.status_code < 500, (origin, r.status_code, r.text)

    send()
