"""Contract: partial reads, GET and HEAD /v1/contexts/{token} and mget with `path` and `slice`."""

from __future__ import annotations

import json

import httpx
import pytest
from contract import JSON, UNKNOWN_TOKEN, assert_problem, create, get_state

# Whitespace everywhere, numbers spelt their own way: what comes back is cut out as stored.
RAW = (
    b'{ "messages" : [ {"n": 1}, {"n": 2} ,{"n": 3},\n {"n": 4}, {"n": 5.0} ],'
    b' "user": {"name": "Ada", "a/b": 1, "m~n": 2, "caf\\u00e9": 3, "\xc3\xa9t\xc3\xa9": 4},'
    b' "empty": [ ], "n": 1E+2 }'
)
PROBLEM = "urn:fastctx:problem:"


def read(client: httpx.Client, token: str, **params: str) -> httpx.Response:
    return client.get(f"/v1/contexts/{token}", params=params)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/messages/1", b'{"n": 2}'),
        ("/messages/4/n", b"5.0"),
        ("/n", b"1E+2"),
        ("/empty", b"[ ]"),
        ("/user/name", b'"Ada"'),
        ("/user/a~1b", b"1"),
        ("/user/m~0n", b"2"),
        ("/user/café", b"3"),  # escaped in the document, plain in the pointer
        ("/user/été", b"4"),
        ("", RAW),
    ],
)
def test_path_answers_the_value_as_stored(client: httpx.Client, path: str, expected: bytes) -> None:
    token = create(client, raw=RAW)
    r = read(client, token, path=path)
    assert r.status_code == 200, r.text
    assert r.content == expected
    assert r.headers["content-type"] == "application/json"
    assert r.headers["etag"] == '"1"'
    assert r.headers["x-cache"] in {"hit", "miss", "stale"}


@pytest.mark.parametrize(
    ("slice_", "expected"),
    [
        ("-2:", [{"n": 4}, {"n": 5.0}]),
        ("-20:", [{"n": i} for i in range(1, 5)] + [{"n": 5.0}]),
        (":", [{"n": i} for i in range(1, 5)] + [{"n": 5.0}]),
        ("1:3", [{"n": 2}, {"n": 3}]),
        (":-4", [{"n": 1}]),
        ("3:1", []),
        ("99:", []),
        ("-99999999999999999999:2", [{"n": 1}, {"n": 2}]),
    ],
)
def test_slice_narrows_the_array(client: httpx.Client, slice_: str, expected: list[object]) -> None:
    token = create(client, raw=RAW)
    r = read(client, token, path="/messages", slice=slice_)
    assert r.status_code == 200, r.text
    assert r.json() == expected
    assert r.headers["etag"] == '"1"'


def test_a_slice_is_the_elements_as_stored_joined_by_commas(client: httpx.Client) -> None:
    token = create(client, raw=RAW)
    assert read(client, token, path="/messages", slice="2:").content == (
        b'[{"n": 3},{"n": 4},{"n": 5.0}]'
    )
    assert read(client, token, path="/empty", slice="-20:").content == b"[]"


def test_a_slice_alone_applies_to_the_document(client: httpx.Client) -> None:
    token = create(client, raw=b"[1, 2, 3, 4, 5]")
    r = read(client, token, slice="-20:")
    assert r.status_code == 200
    assert r.content == b"[1,2,3,4,5]"
    assert read(client, token, slice="-2:").content == b"[4,5]"
    assert read(client, token, slice=":1").content == b"[1]"


def test_reads_see_each_new_version(client: httpx.Client) -> None:
    token = create(client, {"log": [0]})
    for version in range(2, 5):
        log = list(range(version))
        assert client.put(f"/v1/contexts/{token}", json={"log": log}).status_code == 200
        r = read(client, token, path="/log", slice="-1:")
        assert r.json() == [version - 1]
        assert r.headers["etag"] == f'"{version}"'


def test_if_none_match_and_head_work_as_for_whole_reads(client: httpx.Client) -> None:
    token = create(client, raw=RAW)
    url = f"/v1/contexts/{token}"
    params = {"path": "/messages", "slice": "-2:"}
    r = client.get(url, params=params, headers={"If-None-Match": '"1"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == '"1"'
    assert client.head(url, params=params, headers={"If-None-Match": '"1"'}).status_code == 304
    r = client.get(url, params=params, headers={"If-None-Match": '"9"'})
    assert r.status_code == 200
    h = client.head(url, params=params)
    assert h.status_code == 200
    assert h.content == b""
    assert h.headers["etag"] == '"1"'
    assert h.headers["x-cache"] in {"hit", "miss", "stale"}
    if "content-length" in h.headers:
        assert int(h.headers["content-length"]) == len(r.content)
    assert client.head(url, params={"path": "/nothing"}).status_code == 404
    assert client.head(url, params={"path": "nothing"}).status_code == 400


def test_cache_control_no_cache_with_a_path(client: httpx.Client, target: tuple[str, str]) -> None:
    token = create(client, {"a": [1, 2]})
    r = client.get(
        f"/v1/contexts/{token}", params={"path": "/a"}, headers={"Cache-Control": "no-cache"}
    )
    assert r.json() == [1, 2]
    if target[0] == "redis":
        assert r.headers["x-cache"] == "miss"


def test_a_pointer_to_nothing_has_a_problem_type_of_its_own(client: httpx.Client) -> None:
    token = create(client, raw=RAW)
    for path, where in [
        ("/nothing", 'the document has no member "nothing"'),
        ("/messages/5", "/messages has 5 elements"),
        ("/messages/-", "/messages is an array"),
        ("/messages/01", "/messages is an array"),
        ("/user/name/x", "/user/name is a string"),
        ("/user/a/b", '/user has no member "a"'),
    ]:
        problem = assert_problem(read(client, token, path=path), 404)
        assert problem["type"] == PROBLEM + "path-not-found"
        assert problem["detail"].startswith(f"nothing at {path}: {where}")
    # with the slice too, and only a pointer that names nothing: not an unknown context
    problem = assert_problem(read(client, token, path="/nothing", slice="-1:"), 404)
    assert problem["type"] == PROBLEM + "path-not-found"
    problem = assert_problem(read(client, UNKNOWN_TOKEN, path="/messages"), 404)
    assert problem["type"] == PROBLEM + "not-found"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"path": "messages"}, "JSON Pointer"),
        ({"path": "/a~2"}, "JSON Pointer"),
        ({"path": "/a~"}, "JSON Pointer"),
        ({"slice": "5"}, "start:end"),
        ({"slice": "1:2:3"}, "start:end"),
        ({"slice": "a:"}, "start:end"),
        ({"slice": "1.5:"}, "start:end"),
        ({"slice": "--1:"}, "start:end"),
        ({"slice": " 1:2"}, "start:end"),
        ({"slice": "\u0661:"}, "start:end"),  # an Arabic-Indic 1: int() takes it, we do not
        ({"slice": "1" * 21 + ":"}, "start:end"),
        ({"path": "/messages", "slice": ""}, "start:end"),
        ({"path": "/user", "slice": "-1:"}, "needs an array, and /user is an object"),
        ({"path": "/n", "slice": ":"}, "needs an array, and /n is a number"),
        ({"slice": ":"}, "needs an array, and the document is an object"),
        ({"pointer": "/messages"}, "unknown query parameter"),
    ],
)
def test_a_malformed_pointer_or_slice_is_400_naming_it(
    client: httpx.Client, params: dict[str, str], named: str
) -> None:
    token = create(client, raw=RAW)
    problem = assert_problem(read(client, token, **params), 400)
    assert problem["type"] == PROBLEM + "bad-request"
    assert named in problem["detail"]


def test_a_malformed_parameter_is_400_before_the_token_is_looked_up(
    client: httpx.Client,
) -> None:
    assert_problem(read(client, UNKNOWN_TOKEN, path="x"), 400)
    assert_problem(read(client, UNKNOWN_TOKEN, slice="x"), 400)


def test_the_writes_take_no_read_parameters(client: httpx.Client) -> None:
    token = create(client, {"a": [1]})
    before = get_state(client, token)
    url = f"/v1/contexts/{token}"
    for r in (
        client.put(url, params={"path": "/a"}, json={"b": 2}),
        client.patch(
            url,
            params={"slice": ":"},
            content=b'{"b": 2}',
            headers={"Content-Type": "application/merge-patch+json"},
        ),
        client.delete(url, params={"path": "/a"}),
    ):
        assert "unknown query parameter" in assert_problem(r, 400)["detail"]
    assert get_state(client, token) == before


def test_mget_with_a_path_and_a_slice(client: httpx.Client) -> None:
    t1 = create(client, {"log": [1, 2, 3], "v": "a"})
    t2 = create(client, {"log": [4]})
    t3 = create(client, {"v": "no log"})
    t4 = create(client, {"log": "not an array"})
    tokens = [t1, UNKNOWN_TOKEN, t2, t3, t4, "not-a-token"]
    r = client.post(
        "/v1/contexts/mget", params={"path": "/log", "slice": "-2:"}, json={"tokens": tokens}
    )
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items[0] == {"token": t1, "version": 1, "data": [2, 3]}
    assert items[1] is None
    assert items[2] == {"token": t2, "version": 1, "data": [4]}
    assert items[5] is None
    missing, not_array = items[3], items[4]
    assert set(missing) == {"token", "version", "error"}
    assert (missing["token"], missing["version"]) == (t3, 1)
    assert missing["error"] == {
        "type": PROBLEM + "path-not-found",
        "title": "Nothing at this path",
        "status": 404,
        "detail": 'nothing at /log: the document has no member "log"',
    }
    assert set(not_array) == {"token", "version", "error"}
    assert not_array["error"]["type"] == PROBLEM + "bad-request"
    assert not_array["error"]["status"] == 400
    assert "needs an array, and /log is a string" in not_array["error"]["detail"]


def test_mget_with_a_path_splices_the_values_as_stored(client: httpx.Client) -> None:
    token = create(client, raw=RAW)
    r = client.post("/v1/contexts/mget", params={"path": "/messages/4"}, json={"tokens": [token]})
    assert r.content == b'{"items":[{"token":"%s","version":1,"data":{"n": 5.0}}]}' % token.encode()
    r = client.post("/v1/contexts/mget", params={"slice": "-1:"}, json={"tokens": [token]})
    assert r.json()["items"][0]["error"]["type"] == PROBLEM + "bad-request"


@pytest.mark.parametrize("params", [{"path": "x"}, {"slice": "1"}, {"other": "1"}])
def test_mget_with_a_malformed_parameter_is_400(
    client: httpx.Client, params: dict[str, str]
) -> None:
    token = create(client, [1])
    r = client.post("/v1/contexts/mget", params=params, json={"tokens": [token]})
    assert_problem(r, 400)


def test_a_large_document_is_read_in_part(client: httpx.Client) -> None:
    messages = [{"i": i, "text": "x" * 100} for i in range(5000)]
    r = client.post(
        "/v1/contexts",
        content=json.dumps({"messages": messages}).encode(),
        headers=JSON,
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert read(client, token, path="/messages", slice="-20:").json() == messages[-20:]
    assert read(client, token, path="/messages/4999/i").content == b"4999"
