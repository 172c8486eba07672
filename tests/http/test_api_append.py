"""Contract: POST /v1/contexts/{token}/append?path=, items appended to an array as one write."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from contract import JSON, UNKNOWN_TOKEN, assert_problem, create, get_state

from support.pool import SMALL_MAX_BYTES, SMALL_MAX_DOCUMENT


def append(
    client: httpx.Client,
    token: str,
    path: str | None,
    body: bytes,
    headers: dict[str, str] | None = None,
    **params: str,
) -> httpx.Response:
    query = dict(params) if path is None else {"path": path, **params}
    return client.post(
        f"/v1/contexts/{token}/append",
        params=query,
        content=body,
        headers={**JSON, **(headers or {})},
    )


def document(client: httpx.Client, token: str) -> Any:
    return client.get(f"/v1/contexts/{token}").json()


def test_append_adds_the_items_in_order(client: httpx.Client) -> None:
    token = create(client, {"messages": [{"n": 1}], "other": True})
    r = append(client, token, "/messages", b'[{"n": 2}, "three", [4], null]')
    assert r.status_code == 200, r.text
    assert r.json() == {"token": token, "version": 2}
    assert r.headers["etag"] == '"2"'
    assert document(client, token) == {
        "messages": [{"n": 1}, {"n": 2}, "three", [4], None],
        "other": True,
    }
    r = append(client, token, "/messages", b"[5]")
    assert r.json() == {"token": token, "version": 3}
    g = client.get(f"/v1/contexts/{token}", params={"path": "/messages", "slice": "-2:"})
    assert g.json() == [None, 5]
    assert g.headers["etag"] == '"3"'


def test_the_items_keep_their_values(client: httpx.Client) -> None:
    token = create(client, {"log": []})
    body = b'[1.50, 123456789012345678901234567890, "caf\\u00e9"]'
    assert append(client, token, "/log", body).status_code == 200
    r = client.get(f"/v1/contexts/{token}", params={"path": "/log"})
    assert r.json() == [1.5, 123456789012345678901234567890, "café"]
    assert b"1.50," in r.content  # numbers are not rounded through a float
    assert b"123456789012345678901234567890" in r.content


def test_nothing_at_the_path_creates_the_array(client: httpx.Client) -> None:
    token = create(client, {"user": {}})
    r = append(client, token, "/user/tags", b'["a", "b"]')
    assert r.status_code == 200, r.text
    assert document(client, token) == {"user": {"tags": ["a", "b"]}}
    assert append(client, token, "/user/tags", b'["c"]').status_code == 200
    assert document(client, token) == {"user": {"tags": ["a", "b", "c"]}}
    # keys that need escaping in a pointer
    assert append(client, token, "/user/a~1b~0c", b"[1]").status_code == 200
    assert document(client, token)["user"]["a/b~c"] == [1]
    # no items: the array is created empty
    assert append(client, token, "/user/none", b"[]").status_code == 200
    assert document(client, token)["user"]["none"] == []


def test_the_document_itself_when_it_is_an_array(client: httpx.Client) -> None:
    token = create(client, [1])
    r = append(client, token, "", b"[2, 3]")
    assert r.status_code == 200, r.text
    assert document(client, token) == [1, 2, 3]


@pytest.mark.parametrize(
    ("doc", "path", "why"),
    [
        ({"a": "text"}, "/a", "/a is a string, not an array"),
        ({"a": {"b": 1}}, "/a", "/a is an object, not an array"),
        ({"a": None}, "/a", "/a is null, not an array"),
        ({"a": 1}, "", "the document is an object, not an array"),
        ({"a": {}}, "/b/c", 'cannot append to /b/c: add /b/c: no member "b"'),
        ({"a": "s"}, "/a/b", "cannot append to /a/b"),
        ({"a": [1]}, "/a/5", "cannot append to /a/5"),
    ],
)
def test_no_array_there_and_none_creatable_is_422(
    client: httpx.Client, doc: Any, path: str, why: str
) -> None:
    token = create(client, doc)
    before = get_state(client, token)
    problem = assert_problem(append(client, token, path, b"[1]"), 422)
    assert problem["type"] == "urn:fastctx:problem:invalid-patch"
    assert why in problem["detail"]
    assert get_state(client, token) == before


def test_if_match(client: httpx.Client) -> None:
    token = create(client, {"log": []})
    r = append(client, token, "/log", b"[1]", {"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    before = get_state(client, token)
    assert_problem(append(client, token, "/log", b"[2]", {"If-Match": '"1"'}), 412)
    assert get_state(client, token) == before
    assert append(client, token, "/log", b"[2]", {"If-Match": '"2"'}).json()["version"] == 3
    assert document(client, token) == {"log": [1, 2]}


def test_unknown_context_is_404(client: httpx.Client) -> None:
    problem = assert_problem(append(client, UNKNOWN_TOKEN, "/log", b"[1]"), 404)
    assert problem["type"] == "urn:fastctx:problem:not-found"
    assert_problem(append(client, "not-a-token", "/log", b"[1]"), 404)


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        (None, b"[1]", "?path="),
        ("log", b"[1]", "JSON Pointer"),
        ("/log~2", b"[1]", "JSON Pointer"),
        ("/log", b'{"items": [1]}', "a JSON array of the items"),
        ("/log", b"1", "a JSON array of the items"),
        ("/log", b"[1,]", "Malformed JSON"),
        ("/log", b"", "empty"),
    ],
)
def test_bad_requests_are_400_and_change_nothing(
    client: httpx.Client, path: str | None, body: bytes, named: str
) -> None:
    token = create(client, {"log": []})
    before = get_state(client, token)
    problem = assert_problem(append(client, token, path, body), 400)
    assert named in problem["detail"] or named in problem["title"]
    assert get_state(client, token) == before


def test_unknown_query_parameter_is_400(client: httpx.Client) -> None:
    token = create(client, {"log": []})
    assert_problem(append(client, token, "/log", b"[1]", slice="-1:"), 400)


def test_not_json_is_415(client: httpx.Client) -> None:
    token = create(client, {"log": []})
    r = client.post(
        f"/v1/contexts/{token}/append",
        params={"path": "/log"},
        content=b"[1]",
        headers={"Content-Type": "text/plain"},
    )
    assert_problem(r, 415)


def test_too_large_is_413(small_client: httpx.Client) -> None:
    token = create(small_client, {"log": []})
    body = b'["' + b"x" * SMALL_MAX_BYTES + b'"]'
    assert_problem(append(small_client, token, "/log", body), 413)
    # bodies within the limit grow the document up to FASTCTX_MAX_DOCUMENT_BYTES, not past it
    half = b'["' + b"x" * (SMALL_MAX_BYTES // 2) + b'"]'
    appended = 0
    while (r := append(small_client, token, "/log", half)).status_code == 200:
        appended += 1
        assert appended * len(half) <= SMALL_MAX_DOCUMENT
    assert_problem(r, 413)
    assert appended * len(half) > SMALL_MAX_BYTES  # past what one body may send
    assert len(document(small_client, token)["log"]) == appended


def test_only_post(client: httpx.Client) -> None:
    token = create(client, {"log": []})
    r = client.get(f"/v1/contexts/{token}/append", params={"path": "/log"})
    assert_problem(r, 405)
    assert r.headers["allow"] == "POST"
