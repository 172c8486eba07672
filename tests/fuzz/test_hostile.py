"""Hostile input on the wire: 4xx, never a 5xx or a hang, and stored data left untouched."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import quote

import pytest
from hostile import (
    ACME,
    DEEP,
    HEADER_TIMEOUT,
    JSON,
    JSON_PATCH,
    MCP_HEADERS,
    MERGE,
    MIB,
    PROTECTED,
    UNKNOWN_TOKEN,
    Live,
    RawResponse,
    assert_client_error,
    assert_intact,
    closes_within,
    create_protected,
    raw_request,
    read_response,
    send_head,
    wire,
)

from fastctx.config import Settings

# The servers (live, tenant_live, own_live, own_tenant_live) and `protected`.
pytest_plugins = ["fuzz_servers"]


# --- deep nesting: 10^5 levels ---------------------------------------------------------------

DEEP_ARRAY = b"[" * DEEP + b"]" * DEEP
DEEP_OBJECT = b'{"a":' * DEEP + b"1" + b"}" * DEEP


def _bodies_everywhere(token: str, deep: bytes) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path, body, headers) putting `deep` in every place a request body goes."""
    rpc = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":' + deep + b"}"
    return [
        ("POST", "/v1/contexts", deep, JSON),
        ("PUT", f"/v1/contexts/{token}", deep, JSON),
        ("PATCH", f"/v1/contexts/{token}", deep, MERGE),
        ("PATCH", f"/v1/contexts/{token}", b'{"victim":' + deep + b"}", MERGE),
        ("PATCH", f"/v1/contexts/{token}", deep, JSON_PATCH),
        ("PATCH", f"/v1/contexts/{token}", b'[{"op":"add","path":"/x","value":' + deep + b"}]",
         JSON_PATCH),
        ("POST", "/v1/contexts/mget", b'{"tokens":' + deep + b"}", JSON),
        ("POST", "/v1/sessions", b'{"meta":{"m":' + deep + b"}}", JSON),
        ("POST", "/v1/sessions", deep, JSON),
        ("POST", "/mcp", deep, MCP_HEADERS),
        ("POST", "/mcp", rpc, MCP_HEADERS),
    ]  # fmt: skip


@pytest.mark.parametrize("deep", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_deep_nesting_is_400_everywhere(own_live: Live, deep: bytes) -> None:
    protected = create_protected(own_live.client)
    keys = own_live.keys()
    for method, path, body, headers in _bodies_everywhere(protected, deep):
        r = own_live.client.request(method, path, content=body, headers=headers)
        assert r.status_code == 400, (method, path, r.status_code, r.text[:300])
    assert_intact(own_live.client, protected)
    assert own_live.keys() == keys  # nothing was written


def test_deep_nesting_built_by_a_patch_is_refused(live: Live, protected: str) -> None:
    """Copies that would nest a document past the limit, or grow it without bound, are 422."""
    scratch = create_protected(live.client)
    nest = [{"op": "copy", "from": "", "path": "/z"}] * 2000
    grow = [{"op": "copy", "from": "", "path": "/a"}, {"op": "copy", "from": "/a", "path": "/b"}]
    for ops in (nest, grow * 100):
        r = live.client.patch(
            f"/v1/contexts/{scratch}", content=json.dumps(ops).encode(), headers=JSON_PATCH
        )
        assert_client_error(r, 413, 422)
    assert_intact(live.client, scratch)
    assert_intact(live.client, protected)


# --- invalid UTF-8 -----------------------------------------------------------------------------

INVALID_UTF8 = [
    b'{"a": "\xff\xfe"}',
    b'{"\xc3\x28": 1}',
    b'"\xed\xa0\x80"',  # an encoded surrogate
    b'{"a": "\xf4\x90\x80\x80"}',  # past U+10FFFF
    b'{"a": "\xc0\xaf"}',  # overlong
]


@pytest.mark.parametrize("body", INVALID_UTF8)
def test_invalid_utf8_body_is_400(live: Live, protected: str, body: bytes) -> None:
    for method, path, wrapped, headers in [
        ("POST", "/v1/contexts", body, JSON),
        ("PUT", f"/v1/contexts/{protected}", body, JSON),
        ("PATCH", f"/v1/contexts/{protected}", body, MERGE),
        ("PATCH", f"/v1/contexts/{protected}", b'[{"op":"add","path":"/x","value":%s}]' % body,
         JSON_PATCH),
        ("POST", "/v1/contexts/mget", b'{"tokens":[%s]}' % body, JSON),
        ("POST", "/v1/sessions", b'{"meta":{"m":%s}}' % body, JSON),
        ("POST", "/mcp", b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":%s}}' % body,
         MCP_HEADERS),
    ]:  # fmt: skip
        r = live.client.request(method, path, content=wrapped, headers=headers)
        assert r.status_code == 400, (method, path, r.status_code, r.text[:300])
    assert_intact(live.client, protected)


def test_invalid_utf8_in_paths_is_4xx(live: Live, protected: str) -> None:
    tok = protected.encode()
    for method, target in [
        ("GET", b"/v1/contexts/\xff\xfe"),
        ("GET", b"/v1/contexts/" + tok + b"\xff"),
        ("GET", b"/v1/contexts/" + tok + b"/meta\xc3\x28"),
        ("DELETE", b"/v1/contexts/" + tok[:-1] + b"\xff"),
        ("GET", b"/v1/contexts/%ff%fe"),
        ("DELETE", b"/v1/contexts/" + tok[:-1] + b"%ff"),
        ("GET", b"/v1/sessions/\xed\xa0\x80"),
        ("GET", b"/v1/sessions/%ed%a0%80/events"),
        ("GET", b"/v1/contexts/%c0%af/events"),
        ("GET", b"/mcp\xff"),
        ("GET", b"/v1/contexts/" + UNKNOWN_TOKEN.encode() + b"/events?include=%ff"),
    ]:
        r = raw_request(live.base_url, wire(method, target, {}))
        assert_client_error(r)
        assert r.body != PROTECTED
    assert_intact(live.client, protected)


def test_invalid_utf8_in_headers(live: Live, protected: str) -> None:
    tok = protected.encode()
    path = b"/v1/contexts/" + tok
    bad = b"\xff\xfe\xc3\x28"
    body = b'{"x": 1}'
    # A header that cannot be read never succeeds in changing anything.
    for method, target, headers, data, expected in [
        ("PUT", path, {b"If-Match": bad, b"Content-Type": b"application/json"}, body, 400),
        ("PUT", path, {b"If-Match": b'"' + bad + b'"', b"Content-Type": b"application/json"},
         body, 412),
        ("PATCH", path, {b"Content-Type": b"application/merge-patch+json" + bad}, body, 415),
        ("POST", b"/v1/contexts", {b"Content-Type": bad}, body, 415),
        ("DELETE", path, {b"If-Match": bad}, b"", 400),
        ("GET", path + b"/events", {b"Last-Event-ID": bad}, b"", 400),
        ("POST", b"/mcp", {**{k.encode(): v.encode() for k, v in MCP_HEADERS.items()},
                           b"Mcp-Session-Id": bad},
         b'{"jsonrpc":"2.0","id":1,"method":"ping"}', 404),
        ("POST", b"/mcp", {**{k.encode(): v.encode() for k, v in MCP_HEADERS.items()},
                           b"MCP-Protocol-Version": bad},
         b'{"jsonrpc":"2.0","id":1,"method":"ping"}', 400),
    ]:  # fmt: skip
        r = raw_request(live.base_url, wire(method, target, headers, data))
        assert r.status == expected, (method, target, headers, r.status, r.body[:300])
    # Reads with an unreadable condition still answer, and never with a 5xx.
    for headers in ({b"If-None-Match": bad}, {b"Cache-Control": bad}, {b"Accept": bad}):
        r = raw_request(live.base_url, wire("GET", path, headers))
        assert r.status == 200, (headers, r.status, r.body[:300])
        assert r.body == PROTECTED
    assert_intact(live.client, protected)


def test_unreadable_api_key_is_401(tenant_live: Live) -> None:
    token = create_protected(tenant_live.client, ACME)
    for key in (b"\xff\xfe", b"key-acme\xff", b"\xc3\x28key-acme"):
        target = f"/v1/contexts/{token}".encode()
        r = raw_request(
            tenant_live.base_url, wire("GET", target, {b"Authorization": b"Bearer " + key})
        )
        assert r.status == 401, (key, r.status)
    assert_intact(tenant_live.client, token, ACME)


# --- huge headers and request lines ------------------------------------------------------------


def test_huge_headers_are_refused_and_the_server_keeps_serving(live: Live, protected: str) -> None:
    big = b"a" * MIB
    target = f"/v1/contexts/{protected}".encode()
    requests = [
        wire("GET", b"/healthz", {b"X-Big": big}),
        wire("GET", target, {b"Authorization": b"Bearer " + big}),
        wire("GET", target, {b"If-None-Match": b'"1", ' * (MIB // 5)}),
        wire("PUT", target, {b"If-Match": big, b"Content-Type": b"application/json"}, b"{}"),
        wire("POST", b"/v1/contexts", {b"Content-Type": b"application/json" + b" " * MIB}, b"{}"),
        wire("POST", b"/mcp", {b"Mcp-Session-Id": big, b"Content-Type": b"application/json"},
             b'{"jsonrpc":"2.0","id":1,"method":"ping"}'),
        wire("GET", b"/healthz", {b"X-%d" % i: b"y" for i in range(10_000)}),
        wire("GET", b"/v1/contexts/" + b"a" * MIB, {}),
        wire("GET", target + b"?" + b"x=1&" * (MIB // 4), {}),
        wire("POST", b"/v1/contexts?ttl=" + b"9" * MIB, {b"Content-Type": b"application/json"},
             b"{}"),
    ]  # fmt: skip
    for request in requests:
        r = raw_request(live.base_url, request)
        # granian refuses oversized heads itself (431 / 414 / 400) or closes; the app never 5xx.
        if r.status is not None:
            assert_client_error(r)
        assert live.client.get("/healthz").status_code == 200
    assert_intact(live.client, protected)


# --- half-sent bodies (slowloris) --------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_body_timeout_must_be_positive(seconds: str) -> None:
    with pytest.raises(ValueError, match="BODY_TIMEOUT"):
        Settings.from_env({"FASTCTX_BODY_TIMEOUT": seconds})


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "61"])
def test_header_timeout_is_within_what_granian_takes(seconds: str) -> None:
    with pytest.raises(ValueError, match="HEADER_TIMEOUT"):
        Settings.from_env({"FASTCTX_HEADER_TIMEOUT": seconds})
    assert Settings.from_env({"FASTCTX_HEADER_TIMEOUT": "0.5"}).header_timeout == 0.5


@pytest.mark.parametrize("size", ["0", "8191", str(16 * 1024 * 1024 + 1)])
def test_the_header_bound_is_within_what_granian_takes(size: str) -> None:
    with pytest.raises(ValueError, match="MAX_HEADER_BYTES"):
        Settings.from_env({"FASTCTX_MAX_HEADER_BYTES": size})
    assert Settings.from_env({"FASTCTX_MAX_HEADER_BYTES": "8192"}).max_header_bytes == 8192
    assert Settings().max_header_bytes == 64 * 1024


def test_half_sent_bodies_time_out_without_blocking_others(own_live: Live) -> None:
    client = own_live.client
    token = create_protected(client)
    mcp = b"Content-Type: application/json\r\nAccept: application/json\r\n"
    heads = [
        b"POST /v1/contexts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"a": ',
        b"PUT /v1/contexts/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"hijacked": ' % token.encode(),
        b"PATCH /v1/contexts/%s HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/merge-patch+json\r\n"
        b'Content-Length: 1000\r\n\r\n{"victim": null' % token.encode(),
        b"POST /v1/contexts/mget HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n",
        b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{",
        b"POST /mcp HTTP/1.1\r\nHost: x\r\n" + mcp + b'Content-Length: 1000\r\n\r\n{"jsonrpc"',
        # chunked, one chunk sent and the rest never
        b"PUT /v1/contexts/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n' % token.encode(),
    ]
    slow = [send_head(own_live.base_url, head) for head in heads]
    try:
        # While those hang, everything else is answered.
        assert client.get("/healthz").status_code == 200
        assert client.get(f"/v1/contexts/{token}").content == PROTECTED
        assert client.post("/v1/contexts", content=b"{}", headers=JSON).status_code == 201
        for sock in slow:
            answer = read_response(sock)
            assert answer.status == 400, answer
            assert b"within" in answer.body, answer.body
            assert closes_within(sock, 10.0)
    finally:
        for sock in slow:
            sock.close()
    assert_intact(client, token)


def test_expect_continue_is_answered(own_live: Live) -> None:
    request = (
        b"POST /v1/contexts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    sock = send_head(own_live.base_url, request)
    try:
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"{}")
        assert read_response(sock).status == 201
    finally:
        sock.close()


def test_trickled_body_times_out(own_live: Live) -> None:
    """A body sent a byte at a time never finishes within the deadline: 400, then closed."""
    token = create_protected(own_live.client)
    head = (
        b"PUT /v1/contexts/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" % token.encode()
    )
    sock = send_head(own_live.base_url, head)
    try:
        sock.settimeout(0.25)
        answer: RawResponse | None = None
        for byte in b'{"hijacked": "' + b"x" * 80:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                peek = sock.recv(65536, socket.MSG_PEEK)
            except TimeoutError:
                continue
            if peek:
                break
        sock.settimeout(10.0)
        answer = read_response(sock)
        assert answer.status == 400, answer
        assert closes_within(sock, 10.0)
    finally:
        sock.close()
    assert_intact(own_live.client, token)


def test_half_sent_headers_are_closed(own_live: Live) -> None:
    """A request head that never ends is closed after FASTCTX_HEADER_TIMEOUT."""
    client = own_live.client
    token = create_protected(client)
    started = time.monotonic()
    sock = send_head(
        str(client.base_url), b"GET /v1/contexts/%s HTTP/1.1\r\nHost: x\r\nX-A: " % b"x"
    )
    try:
        assert client.get("/healthz").status_code == 200
        assert client.get(f"/v1/contexts/{token}").content == PROTECTED
        assert closes_within(sock, HEADER_TIMEOUT + 10.0)
        assert time.monotonic() - started >= HEADER_TIMEOUT - 0.5  # not closed before it
    finally:
        sock.close()
    assert_intact(client, token)


# --- path tricks -------------------------------------------------------------------------------


def _path_tricks(token: str) -> list[bytes]:
    lookalike = token[:-1] + "\u0410"  # Cyrillic A for the last character
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in token)
    return [
        b"/v1/contexts/../healthz",
        b"/v1/contexts/%2e%2e/healthz",
        b"/v1/contexts/..%2fhealthz",
        b"/v1/contexts/%2e%2e%2f%2e%2e%2fmetrics",
        b"/v1/contexts/" + token.encode() + b"%2fmeta%2f..",
        b"/v1/contexts/" + token.encode() + b"/meta/..",
        b"/v1/contexts/" + token.encode() + b"/..",
        b"/v1/contexts/" + token.encode() + b"/",
        b"/v1/contexts/" + token.encode() + b"%00",
        b"/v1/contexts/%00",
        b"/v1/contexts/" + token.encode() + b"%20",
        b"/v1/contexts/%20" + token.encode(),
        b"/v1/contexts/" + token.encode() + b"%0d%0aX-Injected:%201",
        b"/v1/contexts/" + token.encode() * 2,
        b"/v1/contexts/" + b"7" * 10_000,
        b"/v1/contexts/" + quote(lookalike).encode(),
        b"/v1/contexts/" + quote(fullwidth).encode(),
        b"/v1/contexts/" + token.lower().encode(),
        b"/v1/contexts//" + token.encode(),
        b"/v1//contexts/" + token.encode(),
        b"//v1/contexts/" + token.encode(),
        b"/V1/contexts/" + token.encode(),
        b"/v1/Contexts/" + token.encode(),
        b"/" + quote("\uff56").encode() + b"1/contexts/" + token.encode(),  # fullwidth v
        b"/v1/sessions/..%2f..%2fhealthz",
        b"/v1/sessions/%2e%2e/events",
        b"/v1/contexts/%2e%2e%2fsessions/events",
        b"/mcp/../v1/contexts/" + token.encode(),
        b"/healthz/../v1/contexts/" + token.encode(),
    ]


def test_path_tricks_are_4xx(live: Live, protected: str) -> None:
    for path in _path_tricks(protected):
        for method in ("GET", "DELETE"):
            r = raw_request(live.base_url, wire(method, path, {}))
            assert_client_error(r)
            assert r.body != PROTECTED, path
    assert_intact(live.client, protected)


def test_path_tricks_do_not_pass_auth(tenant_live: Live) -> None:
    token = create_protected(tenant_live.client, ACME)
    paths = [*_path_tricks(token), f"/v1/contexts/{token}".encode()]
    for path in paths:
        for headers in ({}, {b"Authorization": b"Bearer key-globex"}):
            r = raw_request(tenant_live.base_url, wire("GET", path, headers))
            assert_client_error(r)
            assert r.body != PROTECTED, path
    assert_intact(tenant_live.client, token, ACME)


# --- Origin on /mcp ----------------------------------------------------------------------------

HOSTILE_ORIGINS = [
    "http://[::1",  # an unclosed IPv6 bracket: not a URL urlsplit can read
    "http://[zz]",
    "http://127.0.0.1]",
    "null",
    "http://localhost.evil.example",
    "http://127.0.0.1.evil.example",
    "http://evil.example#@127.0.0.1",
    "http://127.0.0.1@evil.example",
    "http://localhost%2f@evil.example",
    "file://",
    "",
]


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS, ids=[f"o{i}" for i in range(11)])
def test_hostile_origins_are_403_on_mcp(live: Live, origin: str) -> None:
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    for method in ("POST", "GET", "DELETE"):
        r = live.client.request(
            method, "/mcp", content=ping, headers={**MCP_HEADERS, "Origin": origin}
        )
        assert r.status_code == 403, (origin, method, r.status_code, r.text)
        assert r.json()["error"]["code"] == -32600
