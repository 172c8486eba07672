"""Contract: create, read, replace, delete contexts; ETags, conditional requests, meta, TTL."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from contract import (
    JSON,
    TOKEN_RE,
    UNKNOWN_TOKEN,
    assert_problem,
    create,
    get_state,
    now,
    parse_ts,
)

DEFAULT_TTL = 86400


def test_create_returns_token_version_and_headers(client: httpx.Client) -> None:
    before = now()
    r = client.post("/v1/contexts", content=b'{"a": 1}', headers=JSON)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"token", "version", "expires_at"}
    assert TOKEN_RE.match(body["token"])
    assert body["version"] == 1
    expires = parse_ts(body["expires_at"])
    expected = before + timedelta(seconds=DEFAULT_TTL)
    assert abs((expires - expected).total_seconds()) < 30
    assert r.headers["etag"] == '"1"'
    location = urljoin(str(r.request.url), r.headers["location"])
    assert urlsplit(location).path == f"/v1/contexts/{body['token']}"


def test_tokens_are_unique(client: httpx.Client) -> None:
    tokens = {create(client, {"same": "content"}) for _ in range(20)}
    assert len(tokens) == 20


def test_get_returns_the_body_byte_for_byte(client: httpx.Client) -> None:
    raw = ' {\n  "b" : [1, 2,\t3],\n  "a":"caf\u00e9 \\u00e9 \U0001f600",  "n": 1.50e3 }\n'.encode()
    token = create(client, raw=raw)
    r = client.get(f"/v1/contexts/{token}")
    assert r.status_code == 200
    assert r.content == raw
    assert r.headers["content-type"].split(";")[0] == "application/json"
    assert r.headers["etag"] == '"1"'
    assert r.headers["x-cache"] in {"hit", "miss", "stale"}
    # A second read (possibly from the in-process cache) is the same bytes.
    r2 = client.get(f"/v1/contexts/{token}")
    assert r2.content == raw
    assert r2.headers["x-cache"] in {"hit", "miss", "stale"}


@pytest.mark.parametrize("raw", [b'"a string"', b"42", b"null", b"[1, {}, []]", b"true", b"{}"])
def test_any_json_value_is_a_context(client: httpx.Client, raw: bytes) -> None:
    token = create(client, raw=raw)
    r = client.get(f"/v1/contexts/{token}")
    assert r.status_code == 200
    assert r.content == raw


def test_get_unknown_token_is_404(client: httpx.Client) -> None:
    assert_problem(client.get(f"/v1/contexts/{UNKNOWN_TOKEN}"), 404)


def test_if_none_match(client: httpx.Client) -> None:
    token = create(client, {"v": 1})
    r = client.get(f"/v1/contexts/{token}", headers={"If-None-Match": '"1"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == '"1"'
    for matching in ('W/"1"', '"5", "1"', "*"):
        r = client.get(f"/v1/contexts/{token}", headers={"If-None-Match": matching})
        assert r.status_code == 304, matching
    h = client.head(f"/v1/contexts/{token}", headers={"If-None-Match": '"1"'})
    assert h.status_code == 304
    r = client.get(f"/v1/contexts/{token}", headers={"If-None-Match": '"7"'})
    assert r.status_code == 200
    assert r.json() == {"v": 1}
    assert client.put(f"/v1/contexts/{token}", json={"v": 2}).status_code == 200
    r = client.get(f"/v1/contexts/{token}", headers={"If-None-Match": '"1"'})
    assert r.status_code == 200
    assert r.headers["etag"] == '"2"'
    assert r.json() == {"v": 2}


def test_head_has_the_headers_of_get_and_no_body(client: httpx.Client) -> None:
    raw = b'{"head": [1, 2, 3]}'
    token = create(client, raw=raw)
    g = client.get(f"/v1/contexts/{token}")
    h = client.head(f"/v1/contexts/{token}")
    assert h.status_code == 200
    assert h.content == b""
    assert h.headers["etag"] == g.headers["etag"] == '"1"'
    assert h.headers["content-type"] == g.headers["content-type"]
    assert h.headers["x-cache"] in {"hit", "miss", "stale"}
    if "content-length" in h.headers:
        assert int(h.headers["content-length"]) == len(raw)
    assert client.head(f"/v1/contexts/{UNKNOWN_TOKEN}").status_code == 404


def test_put_replaces_and_bumps_the_version(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    meta_before = client.get(f"/v1/contexts/{token}/meta").json()
    raw = b'{"replaced" :  true}'
    r = client.put(f"/v1/contexts/{token}", content=raw, headers=JSON)
    assert r.status_code == 200, r.text
    assert r.json() == {"token": token, "version": 2}
    g = client.get(f"/v1/contexts/{token}")
    assert g.content == raw
    assert g.headers["etag"] == '"2"'
    meta_after = client.get(f"/v1/contexts/{token}/meta").json()
    assert meta_after["expires_at"] == meta_before["expires_at"]  # PUT keeps the expiry
    assert meta_after["created_at"] == meta_before["created_at"]


def test_put_if_match(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    r = client.put(f"/v1/contexts/{token}", json={"a": 2}, headers={"If-Match": '"1"'})
    assert r.status_code == 200
    assert r.json()["version"] == 2
    r = client.put(f"/v1/contexts/{token}", json={"a": 3}, headers={"If-Match": "*"})
    assert r.status_code == 200
    assert r.json()["version"] == 3
    state = get_state(client, token)
    for stale in ('"1"', '"2"', '"4"', 'W/"3"', '"3", "4"', '"x"', '"a,b"'):
        r = client.put(f"/v1/contexts/{token}", json={"a": "lost"}, headers={"If-Match": stale})
        assert_problem(r, 412)
    # Not an entity tag at all: the client's mistake (400), not somebody else's write (412).
    for malformed in ("garbage", "4", "", '"3', '"3", 4'):
        r = client.put(f"/v1/contexts/{token}", json={"a": "lost"}, headers={"If-Match": malformed})
        assert_problem(r, 400)
        assert "If-Match" in r.json()["detail"]
    assert get_state(client, token) == state
    assert json.loads(state[1]) == {"a": 3}


def test_put_unknown_token_is_404(client: httpx.Client) -> None:
    assert_problem(client.put(f"/v1/contexts/{UNKNOWN_TOKEN}", json={"a": 1}), 404)
    assert client.get(f"/v1/contexts/{UNKNOWN_TOKEN}").status_code == 404


def test_delete(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    r = client.delete(f"/v1/contexts/{token}")
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(client.get(f"/v1/contexts/{token}"), 404)
    assert_problem(client.get(f"/v1/contexts/{token}/meta"), 404)
    assert_problem(client.delete(f"/v1/contexts/{token}"), 404)
    assert_problem(client.put(f"/v1/contexts/{token}", json={"b": 1}), 404)


def test_delete_if_match(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    client.put(f"/v1/contexts/{token}", json={"a": 2})
    state = get_state(client, token)
    assert_problem(client.delete(f"/v1/contexts/{token}", headers={"If-Match": '"1"'}), 412)
    assert get_state(client, token) == state
    assert client.delete(f"/v1/contexts/{token}", headers={"If-Match": '"2"'}).status_code == 204
    assert client.get(f"/v1/contexts/{token}").status_code == 404


def test_meta(client: httpx.Client) -> None:
    raw = b'{"x": [1, 2, 3], "y": "z"}'
    before = now()
    token = create(client, raw=raw, params={"ttl": 600})
    r = client.get(f"/v1/contexts/{token}/meta")
    assert r.status_code == 200
    meta = r.json()
    assert set(meta) == {
        "token",
        "version",
        "oldest_version",
        "size",
        "stored_size",
        "created_at",
        "updated_at",
        "expires_at",
        "session",
    }
    assert meta["token"] == token
    assert meta["version"] == 1
    assert meta["size"] == len(raw)
    assert isinstance(meta["stored_size"], int)
    assert meta["stored_size"] > 0
    created = parse_ts(meta["created_at"])
    assert abs((created - before).total_seconds()) < 30
    assert parse_ts(meta["updated_at"]) == created
    assert abs((parse_ts(meta["expires_at"]) - created).total_seconds() - 600) < 2
    assert meta["session"] is None

    raw2 = b'{"x": "a longer document than before, to change the size"}'
    client.put(f"/v1/contexts/{token}", content=raw2, headers=JSON)
    meta2 = client.get(f"/v1/contexts/{token}/meta").json()
    assert meta2["version"] == 2
    assert meta2["size"] == len(raw2)
    assert meta2["created_at"] == meta["created_at"]
    assert parse_ts(meta2["updated_at"]) >= created


def test_meta_unknown_is_404(client: httpx.Client) -> None:
    assert_problem(client.get(f"/v1/contexts/{UNKNOWN_TOKEN}/meta"), 404)


def test_mget(client: httpx.Client) -> None:
    t1 = create(client, {"n": 1})
    t2 = create(client, [2])
    t3 = create(client, "three")
    gone = create(client, {"n": "gone"})
    assert client.delete(f"/v1/contexts/{gone}").status_code == 204
    client.put(f"/v1/contexts/{t3}", json="three!")
    tokens = [t2, UNKNOWN_TOKEN, t1, "not-a-token", t3, gone, "x" * 300, t1]
    r = client.post("/v1/contexts/mget", json={"tokens": tokens})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items == [
        {"token": t2, "version": 1, "data": [2]},
        None,
        {"token": t1, "version": 1, "data": {"n": 1}},
        None,
        {"token": t3, "version": 2, "data": "three!"},
        None,
        None,
        {"token": t1, "version": 1, "data": {"n": 1}},
    ]


def test_mget_limits(client: httpx.Client) -> None:
    r = client.post("/v1/contexts/mget", json={"tokens": []})
    assert r.status_code == 200
    assert r.json() == {"items": []}
    t = create(client, {"last": True})
    r = client.post("/v1/contexts/mget", json={"tokens": [UNKNOWN_TOKEN] * 999 + [t]})
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 1000
    assert items[:999] == [None] * 999
    assert items[999] == {"token": t, "version": 1, "data": {"last": True}}
    assert_problem(client.post("/v1/contexts/mget", json={"tokens": [UNKNOWN_TOKEN] * 1001}), 413)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b'{"tokens": "abc"}',
        b'{"tokens": [1, 2]}',
        b'{"tokens": [null]}',
        b'{"tokens": {"a": 1}}',
        b'{"tokens": ["a"]',
        b"",
    ],
)
def test_mget_bad_shape_is_400(client: httpx.Client, body: bytes) -> None:
    assert_problem(client.post("/v1/contexts/mget", content=body, headers=JSON), 400)


def test_ttl_query(client: httpx.Client) -> None:
    before = now()
    r = client.post("/v1/contexts", json={"t": 1}, params={"ttl": 60})
    assert r.status_code == 201
    expires = parse_ts(r.json()["expires_at"])
    assert abs((expires - before).total_seconds() - 60) < 5
    meta = client.get(f"/v1/contexts/{r.json()['token']}/meta").json()
    assert meta["expires_at"] == r.json()["expires_at"]


@pytest.mark.parametrize("ttl", ["0", "-1", "abc", "1.5", "315360001", "", "1e3"])
def test_bad_ttl_is_400(client: httpx.Client, ttl: str) -> None:
    r = client.post(f"/v1/contexts?ttl={ttl}", json={"t": 1})
    assert_problem(r, 400)


def test_context_expires(client: httpx.Client) -> None:
    token = create(client, {"short": "lived"}, params={"ttl": 1})
    assert client.get(f"/v1/contexts/{token}").status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if client.get(f"/v1/contexts/{token}").status_code == 404:
            break
        time.sleep(0.1)
    assert_problem(client.get(f"/v1/contexts/{token}"), 404)
    no_cache = client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert no_cache.status_code == 404
    r = client.post("/v1/contexts/mget", json={"tokens": [token]})
    assert r.json() == {"items": [None]}


def test_cache_control_no_cache(client: httpx.Client, target: tuple[str, str]) -> None:
    token = create(client, {"v": 1})
    for _ in range(2):  # warm whatever cache there is
        assert client.get(f"/v1/contexts/{token}").status_code == 200
    r = client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert r.status_code == 200
    assert r.json() == {"v": 1}
    assert r.headers["x-cache"] in {"hit", "miss", "stale"}
    if target[0] == "redis":
        # There is an in-process cache in front of Redis, and no-cache went past it. (The
        # memory backend has no separate cache: its reads are all answered from memory.)
        assert r.headers["x-cache"] == "miss"
    client.put(f"/v1/contexts/{token}", json={"v": 2})
    r = client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert r.json() == {"v": 2}
    assert r.headers["etag"] == '"2"'
    # A plain read on the node that took the write sees it at once.
    r = client.get(f"/v1/contexts/{token}")
    assert r.json() == {"v": 2}
    assert r.headers["etag"] == '"2"'


def test_read_your_writes_after_each_write(client: httpx.Client) -> None:
    token = create(client, {"i": 0})
    for i in range(1, 6):
        assert client.get(f"/v1/contexts/{token}").json() == {"i": i - 1}
        r = client.put(f"/v1/contexts/{token}", json={"i": i})
        assert r.json()["version"] == i + 1
        g = client.get(f"/v1/contexts/{token}")
        assert g.json() == {"i": i}
        assert g.headers["etag"] == f'"{i + 1}"'
