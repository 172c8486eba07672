"""Careless input gets an answer that says what is wrong, and never a default in its place."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from contract import JSON, JSON_PATCH, MERGE, UNKNOWN_TOKEN, assert_problem, create, create_session

from fastctx.errors import BY_STATUS
from fastctx.http.openapi import OPENAPI
from fastctx.registry import MAX_TTL_SECONDS

TTL_RULE = f"ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}"


def _routes(token: str, session: str) -> list[tuple[str, str, dict[str, str], bytes]]:
    """(method, path, headers, body) of a request to every route, each one that would work."""
    return [
        ("POST", "/v1/contexts", JSON, b"{}"),
        ("POST", "/v1/contexts/mget", JSON, json.dumps({"tokens": [token]}).encode()),
        ("GET", f"/v1/contexts/{token}", {}, b""),
        ("HEAD", f"/v1/contexts/{token}", {}, b""),
        ("PUT", f"/v1/contexts/{token}", JSON, b"{}"),
        ("PATCH", f"/v1/contexts/{token}", MERGE, b"{}"),
        ("GET", f"/v1/contexts/{token}/meta", {}, b""),
        ("GET", f"/v1/contexts/{token}/events", {}, b""),
        ("DELETE", f"/v1/contexts/{token}", {}, b""),
        ("POST", "/v1/sessions", JSON, b"{}"),
        ("GET", f"/v1/sessions/{session}", {}, b""),
        ("GET", f"/v1/sessions/{session}/events", {}, b""),
        ("DELETE", f"/v1/sessions/{session}", {}, b""),
        ("GET", "/healthz", {}, b""),
        ("GET", "/readyz", {}, b""),
        ("GET", "/metrics", {}, b""),
        ("GET", "/openapi.json", {}, b""),
    ]


@pytest.mark.parametrize("query", ["tll=5", "x", "ttl=5&ttl=6", "session="])
def test_an_unknown_query_parameter_is_400_on_every_route(client: httpx.Client, query: str) -> None:
    """A typo (`?tll=5`) is refused by name instead of falling back to a default; on POST
    /v1/contexts, where ttl and session are known, a repeated one is refused too."""
    token = create(client, {"a": 1})
    session = create_session(client)
    for method, path, headers, body in _routes(token, session):
        if path == "/v1/contexts" and query == "session=":
            continue  # a parameter it takes: an empty session is an unknown one (404)
        r = client.request(method, f"{path}?{query}", headers=headers, content=body)
        assert r.status_code == 400, (method, path, r.status_code, r.text)
        if method == "HEAD":
            continue
        detail = assert_problem(r, 400)["detail"]
        name = re.split("[=&]", query)[0]
        assert repr(name) in detail, (method, path, detail)
    # Nothing was done: the context and the session are as they were.
    assert client.get(f"/v1/contexts/{token}").json() == {"a": 1}
    assert client.get(f"/v1/sessions/{session}").status_code == 200


def test_sessions_take_no_ttl_in_the_query(client: httpx.Client) -> None:
    detail = assert_problem(client.post("/v1/sessions?ttl=abc"), 400)["detail"]
    assert "'ttl'" in detail


def test_mcp_refuses_a_query_parameter_by_name(client: httpx.Client) -> None:
    r = client.post(
        "/mcp?debug=1",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert r.status_code == 400
    assert "'debug'" in r.json()["error"]["message"]


@pytest.mark.parametrize("ttl", ["0", "-1", "abc", "1.5", str(MAX_TTL_SECONDS + 1), ""])
def test_contexts_and_sessions_refuse_a_ttl_alike(client: httpx.Client, ttl: str) -> None:
    in_query = assert_problem(
        client.post("/v1/contexts", params={"ttl": ttl}, content=b"{}", headers=JSON), 400
    )
    try:
        value: object = json.loads(ttl)
    except ValueError:
        value = ttl
    in_body = assert_problem(client.post("/v1/sessions", json={"ttl": value}), 400)
    assert in_query["detail"] == in_body["detail"] == TTL_RULE


def test_a_ttl_written_as_a_whole_float_is_a_ttl(client: httpx.Client) -> None:
    """JSON Schema counts 60.0 as an integer, and so does the session body."""
    r = client.post("/v1/sessions", json={"ttl": 60.0})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("body", "named"),
    [({"meta": None}, "meta"), ({"tll": 5}, "tll"), ({"meta": []}, "meta")],
)
def test_a_session_body_of_the_wrong_shape_is_400(
    client: httpx.Client, body: object, named: str
) -> None:
    """meta is an object; a member the body does not have is not silently dropped."""
    detail = assert_problem(client.post("/v1/sessions", json=body), 400)["detail"]
    assert named in detail


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_an_empty_body_says_so(client: httpx.Client, body: bytes) -> None:
    token = create(client, {"a": 1})
    for method, path, headers in [
        ("POST", "/v1/contexts", JSON),
        ("POST", "/v1/contexts/mget", JSON),
        ("PUT", f"/v1/contexts/{token}", JSON),
        ("PATCH", f"/v1/contexts/{token}", MERGE),
        ("PATCH", f"/v1/contexts/{token}", JSON_PATCH),
    ]:
        r = client.request(method, path, content=body, headers=headers)
        assert "the body is empty" in assert_problem(r, 400)["detail"], (method, path)
    assert client.get(f"/v1/contexts/{token}").json() == {"a": 1}


def test_an_empty_mcp_message_says_so(client: httpx.Client) -> None:
    r = client.post(
        "/mcp", content=b"", headers={**JSON, "Accept": "application/json, text/event-stream"}
    )
    assert r.status_code == 400
    assert r.json()["error"] == {"code": -32700, "message": "parse error: the body is empty"}


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b'{"op": "add"}', "an object"), (b"5", "a number"), (b' "x"', "a string"), (b"null", "null")],
)
def test_a_json_patch_that_is_not_an_array_says_so(
    client: httpx.Client, body: bytes, kind: str
) -> None:
    token = create(client, {"a": 1})
    r = client.patch(f"/v1/contexts/{token}", content=body, headers=JSON_PATCH)
    detail = assert_problem(r, 422)["detail"]
    assert detail == f"a JSON Patch is an array of operations; this body is {kind}"
    # Not JSON at all stays what it always was: malformed JSON.
    r = client.patch(f"/v1/contexts/{token}", content=b"{", headers=JSON_PATCH)
    assert_problem(r, 400)


def test_a_session_answers_405_with_every_method_it_takes(client: httpx.Client) -> None:
    session = create_session(client)
    r = client.request("OPTIONS", f"/v1/sessions/{session}")
    assert_problem(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "DELETE"}
    r = client.put("/v1/sessions", content=b"{}", headers=JSON)
    assert_problem(r, 405)
    assert r.headers["allow"] == "POST"


def test_an_unknown_path_is_a_problem(client: httpx.Client) -> None:
    assert_problem(client.get("/nowhere"), 404)
    assert_problem(client.get("/v1/contexts/a/b/c"), 404)


def test_the_probes_answer_head(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        r = client.head(path)
        assert r.status_code == 200, path
        assert r.content == b""


def test_metrics_label_routes_as_the_openapi_document_names_them(client: httpx.Client) -> None:
    token = create(client, {"a": 1})
    session = create_session(client)
    for method, path, headers, body in _routes(token, session):
        if path.endswith("/events"):
            continue  # a stream stays open; its label is checked below from the route table
        client.request(method, path, headers=headers, content=body)
    client.get(f"/v1/contexts/{UNKNOWN_TOKEN}/events")
    client.get(f"/v1/sessions/{UNKNOWN_TOKEN}/events")
    labels = set(
        re.findall(r'fastctx_requests_total\{[^}]*route="([^"]+)"', client.get("/metrics").text)
    )
    assert "/v1/sessions/{id}" in labels
    assert "/v1/sessions/{id}/events" in labels
    assert labels - {"unmatched"} <= set(OPENAPI["paths"]), labels - set(OPENAPI["paths"])


@pytest.mark.parametrize("path", ["/v1/contexts/" + UNKNOWN_TOKEN, "/healthz", "/mcp"])
def test_headers_over_the_bound_are_431_and_change_nothing(
    client: httpx.Client, target: tuple[str, str], path: str
) -> None:
    """64 KiB of headers (FASTCTX_MAX_HEADER_BYTES) pass; more are refused before anything is
    read, as a problem document (granian refuses a head far past the bound by itself)."""
    token = create(client, {"kept": True})
    assert client.get("/healthz", headers={"x-pad": "a" * 60_000}).status_code == 200
    big = {"x-pad": "a" * 70_000}
    r = client.get(path, headers=big)
    assert assert_problem(r, 431)["type"].endswith("headers-too-large")
    r = client.put(f"/v1/contexts/{token}", content=b'{"lost": 1}', headers={**JSON, **big})
    assert r.status_code == 431
    assert client.get(f"/v1/contexts/{token}").json() == {"kept": True}
    many = {f"x-pad-{n}": "a" * 1000 for n in range(80)}  # many small ones add up alike
    assert client.get("/healthz", headers=many).status_code == 431
    if target[1] == "granian":  # one far past the bound never reaches the app
        assert client.get("/healthz", headers={"x-pad": "a" * 1_000_000}).status_code == 431
    assert client.get("/healthz").status_code == 200  # and the server serves on


def test_the_error_statuses_are_one_list() -> None:
    """Every error status the document gives has its class in fastctx.errors, and back."""
    documented = {
        int(status)
        for item in OPENAPI["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "responses" in operation
        for status in operation["responses"]
        if int(status) >= 400
    }
    assert documented == set(BY_STATUS)
    assert {400, 401, 403, 404, 405, 406, 410, 412, 413, 415, 422, 429, 431, 503} == set(BY_STATUS)
