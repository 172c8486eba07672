"""Contract: PATCH with RFC 7386 merge patches and RFC 6902 JSON patches."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from contract import JSON_PATCH, MERGE, UNKNOWN_TOKEN, assert_problem, create, get_state


def patch(
    client: httpx.Client, token: str, body: Any, headers: dict[str, str], **extra: str
) -> httpx.Response:
    return client.patch(
        f"/v1/contexts/{token}", content=json.dumps(body).encode(), headers={**headers, **extra}
    )


def test_merge_patch(client: httpx.Client) -> None:
    token = create(client, {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "keep": "me"})
    r = patch(client, token, {"a": None, "b": {"c": None, "x": 4}, "e": [9], "n": "new"}, MERGE)
    assert r.status_code == 200, r.text
    assert r.json() == {"token": token, "version": 2}
    g = client.get(f"/v1/contexts/{token}")
    assert g.json() == {"b": {"d": 3, "x": 4}, "e": [9], "keep": "me", "n": "new"}
    assert g.headers["etag"] == '"2"'


# RFC 7386 appendix A, in full.
RFC7386_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("doc", "mp", "expected"), RFC7386_CASES)
def test_merge_patch_rfc7386_examples(
    client: httpx.Client, doc: Any, mp: Any, expected: Any
) -> None:
    token = create(client, doc)
    r = patch(client, token, mp, MERGE)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert client.get(f"/v1/contexts/{token}").json() == expected


def test_json_patch_all_ops(client: httpx.Client) -> None:
    token = create(client, {"a": 1, "b": [1, 2, 3], "c": {"d": "x"}})
    ops = [
        {"op": "test", "path": "/a", "value": 1},
        {"op": "add", "path": "/b/1", "value": 9},
        {"op": "add", "path": "/b/-", "value": 4},
        {"op": "remove", "path": "/a"},
        {"op": "replace", "path": "/c/d", "value": "y"},
        {"op": "move", "from": "/c/d", "path": "/e"},
        {"op": "copy", "from": "/b/0", "path": "/f"},
        {"op": "test", "path": "/b", "value": [1, 9, 2, 3, 4]},
    ]
    r = patch(client, token, ops, JSON_PATCH)
    assert r.status_code == 200, r.text
    assert r.json() == {"token": token, "version": 2}
    g = client.get(f"/v1/contexts/{token}")
    assert g.json() == {"b": [1, 9, 2, 3, 4], "c": {}, "e": "y", "f": 1}
    assert g.headers["etag"] == '"2"'


def test_json_patch_pointer_escapes(client: httpx.Client) -> None:
    token = create(client, {"a/b": 1, "m~n": 2})
    ops = [
        {"op": "replace", "path": "/a~1b", "value": 10},
        {"op": "remove", "path": "/m~0n"},
        {"op": "add", "path": "", "value": {"whole": "doc"}},
    ]
    r = patch(client, token, ops, JSON_PATCH)
    assert r.status_code == 200, r.text
    assert client.get(f"/v1/contexts/{token}").json() == {"whole": "doc"}


def test_json_patch_failed_test_is_422_and_atomic(client: httpx.Client) -> None:
    raw = b'{"a": 1, "b": [1]}'
    token = create(client, raw=raw)
    state = get_state(client, token)
    ops = [
        {"op": "add", "path": "/c", "value": 3},  # applied first, then rolled back
        {"op": "test", "path": "/a", "value": 2},
    ]
    assert_problem(patch(client, token, ops, JSON_PATCH), 422)
    assert get_state(client, token) == state
    assert state[1] == raw
    assert state[2] == '"1"'


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "add", "path": "/b/7", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "add", "path": "a", "value": 1}],
        [{"op": "add", "value": 1}],
        [{"op": "move", "from": "/missing", "path": "/x"}],
        [{"path": "/a"}],
        {"op": "add", "path": "/x", "value": 1},
        ["not an op"],
    ],
)
def test_invalid_json_patch_is_422(client: httpx.Client, ops: Any) -> None:
    token = create(client, {"a": 1, "b": [1]})
    state = get_state(client, token)
    assert_problem(patch(client, token, ops, JSON_PATCH), 422)
    assert get_state(client, token) == state


def test_patch_if_match(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    r = patch(client, token, {"b": 2}, MERGE, **{"If-Match": '"1"'})
    assert r.status_code == 200
    assert r.json()["version"] == 2
    state = get_state(client, token)
    assert_problem(patch(client, token, {"c": 3}, MERGE, **{"If-Match": '"1"'}), 412)
    ops = [{"op": "add", "path": "/c", "value": 3}]
    assert_problem(patch(client, token, ops, JSON_PATCH, **{"If-Match": '"3"'}), 412)
    assert get_state(client, token) == state
    assert json.loads(state[1]) == {"a": 1, "b": 2}
    r = patch(client, token, ops, JSON_PATCH, **{"If-Match": '"2"'})
    assert r.status_code == 200
    assert r.json()["version"] == 3


def test_patch_unknown_token_is_404(client: httpx.Client) -> None:
    assert_problem(patch(client, UNKNOWN_TOKEN, {"a": 1}, MERGE), 404)
    ops = [{"op": "add", "path": "/a", "value": 1}]
    assert_problem(patch(client, UNKNOWN_TOKEN, ops, JSON_PATCH), 404)


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", None])
def test_patch_wrong_content_type_is_415(client: httpx.Client, ctype: str | None) -> None:
    token = create(client, {"a": 1})
    state = get_state(client, token)
    headers = {"Content-Type": ctype} if ctype else {}
    r = client.patch(f"/v1/contexts/{token}", content=b'{"a": 2}', headers=headers)
    assert_problem(r, 415)
    accept = r.headers.get("accept-patch", "")
    assert "application/merge-patch+json" in accept
    assert "application/json-patch+json" in accept
    assert get_state(client, token) == state


@pytest.mark.parametrize("headers", [MERGE, JSON_PATCH])
def test_patch_malformed_json_is_400(client: httpx.Client, headers: dict[str, str]) -> None:
    token = create(client, {"a": 1})
    state = get_state(client, token)
    r = client.patch(f"/v1/contexts/{token}", content=b'{"a": ', headers=headers)
    assert_problem(r, 400)
    assert get_state(client, token) == state


def test_patch_keeps_the_expiry(client: httpx.Client) -> None:
    token = create(client, {"a": 1}, params={"ttl": 3600})
    before = client.get(f"/v1/contexts/{token}/meta").json()
    assert patch(client, token, {"b": 1}, MERGE).status_code == 200
    after = client.get(f"/v1/contexts/{token}/meta").json()
    assert after["expires_at"] == before["expires_at"]
    assert after["version"] == 2


def test_put_then_get_accepts_charset(client: httpx.Client) -> None:
    token = create(client, {"a": 1}, headers={"Content-Type": "application/json; charset=utf-8"})
    r = client.put(
        f"/v1/contexts/{token}",
        content=b'{"b": 2}',
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert r.status_code == 200
    assert client.get(f"/v1/contexts/{token}").content == b'{"b": 2}'
