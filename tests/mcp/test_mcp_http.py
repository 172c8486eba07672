"""/mcp on the wire, by hand: JSON-RPC errors, protocol versions, sessions, Origin, tenants."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from mcp_wire import BASE, ENVELOPE, LEGACY, MODERN, UNKNOWN, in_session, modern, rpc

from support.pool import ServerPool


@pytest.fixture(params=["memory", "redis"])
def mcp(server_pool: ServerPool, request: pytest.FixtureRequest) -> httpx.Client:
    return server_pool.client(request.param, "granian")


def initialize(client: httpx.Client, version: str = LEGACY) -> str:
    params = {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    r = client.post("/mcp", content=rpc("initialize", params), headers=BASE)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["protocolVersion"] == version
    session = r.headers["mcp-session-id"]
    assert len(session) == 22
    r = client.post(
        "/mcp",
        content=rpc("notifications/initialized", id=None),
        headers={**BASE, "Mcp-Session-Id": session, "MCP-Protocol-Version": version},
    )
    assert r.status_code == 202, r.text
    return session


def error_code(r: httpx.Response) -> int:
    body = r.json()
    assert body["jsonrpc"] == "2.0", body
    return int(body["error"]["code"])


def test_malformed_json_is_a_parse_error(mcp: httpx.Client) -> None:
    r = mcp.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=BASE)
    assert r.status_code == 400
    assert error_code(r) == -32700
    assert r.json()["id"] is None


def test_deeply_nested_json_is_a_parse_error_not_a_crash(mcp: httpx.Client) -> None:
    n = 100_000
    arguments = b'{"data": ' + b"[" * n + b"]" * n + b"}"
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
    body += b'{"name": "context_create", "arguments": ' + arguments + b"}}"
    r = mcp.post("/mcp", content=body, headers=BASE)
    assert r.status_code == 400
    assert error_code(r) == -32700
    assert mcp.get("/healthz").status_code == 200


def test_batches_and_bad_envelopes_are_invalid_requests(mcp: httpx.Client) -> None:
    session = initialize(mcp)
    batch = b"[" + rpc("tools/list") + b"]"
    for body in (batch, b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', b'"ping"'):
        r = mcp.post("/mcp", content=body, headers=in_session(session))
        assert r.status_code == 400, body
        assert error_code(r) == -32600, body


def test_unknown_method_and_wrong_params(mcp: httpx.Client) -> None:
    session = initialize(mcp)
    r = mcp.post("/mcp", content=rpc("tools/frobnicate"), headers=in_session(session))
    assert r.status_code == 200
    assert error_code(r) == -32601
    for method, params in [
        ("tools/call", {"name": "no_such_tool", "arguments": {}}),
        ("tools/call", {"arguments": {}}),
        ("resources/read", {"uri": 42}),
    ]:
        r = mcp.post("/mcp", content=rpc(method, params), headers=in_session(session))
        assert error_code(r) == -32602, (method, params, r.text)
    r = mcp.post("/mcp", content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}',
                 headers=in_session(session))  # fmt: skip
    assert error_code(r) == -32602


def test_a_modern_unknown_method_is_404_and_bad_params_400(mcp: httpx.Client) -> None:
    r = mcp.post(
        "/mcp",
        content=rpc("tools/frobnicate", {"_meta": ENVELOPE}),
        headers=modern("tools/frobnicate"),
    )
    assert r.status_code == 404
    assert error_code(r) == -32601
    r = mcp.post("/mcp", content=rpc("tools/list", {}), headers=modern("tools/list"))
    assert r.status_code == 400
    assert error_code(r) == -32602  # no _meta envelope


def test_modern_headers_must_match_the_body(mcp: httpx.Client) -> None:
    params = {"_meta": ENVELOPE, "name": "context_get", "arguments": {"token": UNKNOWN}}
    for headers in (modern("tools/list", "context_get"), modern("tools/call", "context_create")):
        r = mcp.post("/mcp", content=rpc("tools/call", params), headers=headers)
        assert r.status_code == 400
        assert error_code(r) == -32020
    r = mcp.post(
        "/mcp", content=rpc("tools/call", params), headers=modern("tools/call", "context_get")
    )
    assert r.status_code == 200
    assert r.json()["result"]["isError"] is True


def test_server_discover_names_every_revision(mcp: httpx.Client) -> None:
    r = mcp.post(
        "/mcp",
        content=rpc("server/discover", {"_meta": ENVELOPE}),
        headers=modern("server/discover"),
    )
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["supportedVersions"] == ["2025-06-18", "2025-11-25", "2026-07-28"]
    assert "mcp-session-id" not in r.headers
    assert set(result["capabilities"]) == {"tools", "resources"}


def test_missing_or_unsupported_protocol_version_is_400(mcp: httpx.Client) -> None:
    session = initialize(mcp)
    r = mcp.post("/mcp", content=rpc("tools/list"), headers=BASE)
    assert r.status_code == 400  # no version, no session: neither era
    assert "MCP-Protocol-Version" in r.json()["error"]["message"]
    r = mcp.post("/mcp", content=rpc("tools/list"), headers=in_session(session, "1999-01-01"))
    assert r.status_code == 400
    assert error_code(r) == -32022
    assert "2025-11-25" in r.json()["error"]["data"]["supported"]
    # A session without the header keeps the version it negotiated, as the spec says.
    r = mcp.post("/mcp", content=rpc("tools/list"), headers={**BASE, "Mcp-Session-Id": session})
    assert r.status_code == 200
    assert len(r.json()["result"]["tools"]) == 7


def test_initialize_offers_its_newest_revision_for_one_it_does_not_speak(mcp: httpx.Client) -> None:
    params = {"protocolVersion": "2024-11-05", "capabilities": {}}
    r = mcp.post("/mcp", content=rpc("initialize", params), headers=BASE)
    assert r.json()["result"]["protocolVersion"] == LEGACY
    assert r.json()["result"]["serverInfo"]["name"] == "fastctx"


def test_sessions_missing_unknown_and_ended(mcp: httpx.Client) -> None:
    r = mcp.post(
        "/mcp", content=rpc("tools/list"), headers={**BASE, "MCP-Protocol-Version": LEGACY}
    )
    assert r.status_code == 400
    for unknown in (UNKNOWN, "not-a-session"):
        r = mcp.post("/mcp", content=rpc("tools/list"), headers=in_session(unknown))
        assert r.status_code == 404
    session = initialize(mcp)
    assert mcp.post("/mcp", content=rpc("ping"), headers=in_session(session)).json()["result"] == {}
    assert mcp.delete("/mcp", headers=in_session(session)).status_code == 204
    assert mcp.post("/mcp", content=rpc("ping"), headers=in_session(session)).status_code == 404
    assert mcp.delete("/mcp", headers=in_session(session)).status_code == 404
    assert mcp.get("/mcp", headers=in_session(session)).status_code == 404
    assert mcp.delete("/mcp", headers=BASE).status_code == 400


def test_a_bad_origin_is_403(mcp: httpx.Client) -> None:
    r = mcp.post("/mcp", content=rpc("initialize", {"protocolVersion": LEGACY}),
                 headers={**BASE, "Origin": "https://evil.example"})  # fmt: skip
    assert r.status_code == 403
    r = mcp.post("/mcp", content=rpc("initialize", {"protocolVersion": LEGACY}),
                 headers={**BASE, "Origin": "http://localhost:3000"})  # fmt: skip
    assert r.status_code == 200


def test_the_reply_follows_accept(mcp: httpx.Client) -> None:
    session = initialize(mcp)
    headers = {**in_session(session), "Accept": "text/event-stream"}
    r = mcp.post("/mcp", content=rpc("ping", id=7), headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    data = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert json.loads(data[0]) == {"jsonrpc": "2.0", "id": 7, "result": {}}
    r = mcp.post(
        "/mcp", content=rpc("ping"), headers={**in_session(session), "Accept": "text/html"}
    )
    assert r.status_code == 406


def test_the_get_stream_opens_with_a_ping(mcp: httpx.Client) -> None:
    session = initialize(mcp)
    headers = {**in_session(session), "Accept": "text/event-stream"}
    with mcp.stream("GET", "/mcp", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert next(r.iter_text()).startswith(": ping")
    modern_get = {**BASE, "MCP-Protocol-Version": MODERN}
    assert mcp.get("/mcp", headers=modern_get).status_code == 405


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(id, data) of each event of an SSE body that has a data field; comments and blocks of
    nothing but retry are left out."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event_id, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((event_id, "\n".join(data)))
    return events


def test_a_2025_11_25_event_stream_opens_with_a_priming_event(mcp: httpx.Client) -> None:
    session = initialize(mcp)
    assert LEGACY == "2025-11-25"
    headers = {**in_session(session), "Accept": "text/event-stream"}
    r = mcp.post("/mcp", content=rpc("ping", id=9), headers=headers)
    assert r.status_code == 200
    (primed, empty), (reply_id, reply) = sse_events(r.text)
    assert primed is not None
    assert empty == ""
    assert reply_id is None
    assert json.loads(reply) == {"jsonrpc": "2.0", "id": 9, "result": {}}
    # Its id is one of the session's stream: the GET stream resumes from it.
    with mcp.stream("GET", "/mcp", headers={**headers, "Last-Event-ID": primed}) as g:
        assert g.status_code == 200
    # The GET stream opens with one too, and it takes that id back as well.
    with mcp.stream("GET", "/mcp", headers=headers) as g:
        assert g.status_code == 200
        lines = g.iter_lines()
        opening = [next(lines) for _ in range(7)]
    assert opening[:2] == [": ping", ""]
    assert opening[2].startswith("retry: ")
    assert opening[3] == ""
    assert opening[4].startswith("id: ")
    assert opening[5:] == ["data:", ""]
    resumed = opening[4][4:]
    with mcp.stream("GET", "/mcp", headers={**headers, "Last-Event-ID": resumed}) as g:
        assert g.status_code == 200
    # The initialize reply opens the session's first stream.
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t"}}
    r = mcp.post("/mcp", content=rpc("initialize", params), headers=headers)
    (primed, empty), (_, reply) = sse_events(r.text)
    assert primed.split(":")[0] != resumed.split(":")[0]  # another session, another stream
    assert empty == ""
    assert json.loads(reply)["result"]["protocolVersion"] == LEGACY


def test_a_2025_06_18_event_stream_has_no_priming_event(mcp: httpx.Client) -> None:
    # Its clients read every event's data as a message: an empty one would be an error.
    session = initialize(mcp, "2025-06-18")
    headers = {**in_session(session, "2025-06-18"), "Accept": "text/event-stream"}
    r = mcp.post("/mcp", content=rpc("ping", id=3), headers=headers)
    assert sse_events(r.text) == [(None, '{"jsonrpc":"2.0","id":3,"result":{}}')]
    with mcp.stream("GET", "/mcp", headers=headers) as g:
        opening = next(g.iter_text())
    assert opening.startswith(": ping")
    assert "id:" not in opening


def test_a_pagination_cursor_is_invalid_params(mcp: httpx.Client) -> None:
    # Every list fits on one page and no nextCursor is handed out, so no cursor is valid.
    session = initialize(mcp)
    for method in ("tools/list", "resources/list", "resources/templates/list"):
        r = mcp.post("/mcp", content=rpc(method, {"cursor": "MTA="}), headers=in_session(session))
        assert r.status_code == 200, r.text
        assert error_code(r) == -32602
        r = mcp.post("/mcp", content=rpc(method, {"cursor": 10}), headers=in_session(session))
        assert error_code(r) == -32602
        r = mcp.post("/mcp", content=rpc(method, {"cursor": None}), headers=in_session(session))
        assert "nextCursor" not in r.json()["result"], r.text
        params = {"_meta": ENVELOPE, "cursor": "MTA="}
        r = mcp.post("/mcp", content=rpc(method, params), headers=modern(method))
        assert r.status_code == 400, r.text
        assert error_code(r) == -32602


def test_media_types_in_accept_are_case_insensitive(mcp: httpx.Client) -> None:
    session = initialize(mcp)
    shouted = {**in_session(session), "Accept": "Text/Event-Stream"}
    with mcp.stream("GET", "/mcp", headers=shouted) as r:
        assert r.status_code == 200
        assert next(r.iter_text()).startswith(": ping")
    r = mcp.post("/mcp", content=rpc("ping", id=8), headers=shouted)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    listen = {**modern("subscriptions/listen"), "Accept": "Text/Event-Stream"}
    wanted = {"_meta": ENVELOPE, "notifications": {"toolsListChanged": True}}
    body = rpc("subscriptions/listen", wanted)
    with mcp.stream("POST", "/mcp", content=body, headers=listen) as r:
        assert r.status_code == 200
        assert "notifications/subscriptions/acknowledged" in next(r.iter_text())


def test_mcp_acts_within_the_callers_tenant(server_pool: ServerPool) -> None:
    client = server_pool.client("memory", "granian", "tenants")
    assert client.post("/mcp", content=rpc("server/discover"), headers=BASE).status_code == 401
    acme = {**modern("tools/call", "context_create"), "Authorization": "Bearer key-acme"}
    params = {"_meta": ENVELOPE, "name": "context_create", "arguments": {"data": [1]}}
    created = client.post("/mcp", content=rpc("tools/call", params), headers=acme).json()
    token = created["result"]["structuredContent"]["token"]
    for key, found in (("key-acme", True), ("key-globex", False)):
        headers = {**modern("resources/read", f"ctx://{token}"), "Authorization": f"Bearer {key}"}
        read = {"_meta": ENVELOPE, "uri": f"ctx://{token}"}
        r = client.post("/mcp", content=rpc("resources/read", read), headers=headers)
        assert ("result" in r.json()) is found, r.text


def call_tool(client: httpx.Client, name: str, arguments: Any) -> dict[str, Any]:
    params = {"_meta": ENVELOPE, "name": name, "arguments": arguments}
    headers = modern("tools/call", name)
    if arguments.get("ttl") is not None:  # as a client mirrors the x-mcp-header argument
        headers["Mcp-Param-Ttl"] = str(arguments["ttl"])
    r = client.post("/mcp", content=rpc("tools/call", params), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["resultType"] == "complete"
    return r.json()["result"]  # type: ignore[no-any-return]


def test_bad_tool_arguments_are_results_the_model_can_read(mcp: httpx.Client) -> None:
    for name, arguments, words in [
        ("context_create", {}, "data"),
        ("context_create", {"data": 1, "ttl": 0}, "ttl"),
        ("context_create", {"data": 1, "colour": "red"}, "colour"),
        ("context_create", {"data": 1, "session": UNKNOWN}, "no such session"),
        ("context_update", {"token": UNKNOWN, "patch": {}}, "no such context"),
        ("context_append", {"token": UNKNOWN, "path": "/a", "items": []}, "no such context"),
        ("context_get", {"token": UNKNOWN, "slice": "x"}, "slice"),
        ("session_get", {"session": UNKNOWN}, "no such session"),
        ("session_create", {"meta": [1]}, "meta"),
    ]:
        result = call_tool(mcp, name, arguments)
        assert result["isError"] is True, (name, arguments)
        assert "structuredContent" not in result
        assert words in result["content"][0]["text"], (name, arguments, result)


@pytest.mark.parametrize("backend", ["memory", "redis", "cluster"])
def test_context_update_grows_a_document_up_to_the_document_limit(
    server_pool: ServerPool, backend: str
) -> None:
    """Each call within FASTCTX_MAX_CONTEXT_BYTES (4096 here), the document within
    FASTCTX_MAX_DOCUMENT_BYTES (16384): past it, a tool error, and nothing changes."""
    client = server_pool.client(backend, "granian", "small")
    data = {"a": "a" * 3500}
    token = call_tool(client, "context_create", {"data": data})["structuredContent"]["token"]
    for key in "bcd":
        data[key] = key * 3500
        result = call_tool(client, "context_update", {"token": token, "patch": {key: data[key]}})
        assert result["isError"] is False, result
    result = call_tool(client, "context_update", {"token": token, "patch": {"e": "e" * 3000}})
    assert result["isError"] is True
    message = result["content"][0]["text"]
    assert "too large" in message
    assert "FASTCTX_MAX_DOCUMENT_BYTES is 16384" in message
    got = call_tool(client, "context_get", {"token": token})["structuredContent"]
    assert (got["data"], got["version"]) == (data, 4)


def test_context_get_reads_part_of_a_context(mcp: httpx.Client) -> None:
    data = {"messages": [{"n": i} for i in range(5)], "user": {"a/b": "x", "é": [1.50]}}
    token = call_tool(mcp, "context_create", {"data": data})["structuredContent"]["token"]
    for arguments, expected in [
        ({"path": "/messages/1"}, {"n": 1}),
        ({"path": "/messages", "slice": "-2:"}, [{"n": 3}, {"n": 4}]),
        ({"path": "/messages", "slice": "-20:"}, data["messages"]),
        ({"path": "/messages", "slice": "1:2"}, [{"n": 1}]),
        ({"path": "/user/a~1b"}, "x"),
        ({"path": "/user/é/0"}, 1.5),
        ({"path": ""}, data),
        ({"path": None, "slice": None}, data),
    ]:
        result = call_tool(mcp, "context_get", {"token": token, **arguments})
        assert result["isError"] is False, result
        assert result["structuredContent"] == {"token": token, "version": 1, "data": expected}
        assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    # The value as stored goes in as it is: 1.50 keeps its spelling in the text.
    raw = b'{"user": {"scores": [ 1.50 ]}}'
    r = mcp.post("/v1/contexts", content=raw, headers={"Content-Type": "application/json"})
    arguments = {"token": r.json()["token"], "path": "/user/scores"}
    result = call_tool(mcp, "context_get", arguments)
    assert '"data":[ 1.50 ]' in result["content"][0]["text"]
    created = call_tool(mcp, "context_create", {"data": [1, 2, 3]})["structuredContent"]
    result = call_tool(mcp, "context_get", {"token": created["token"], "slice": "-1:"})
    assert result["structuredContent"]["data"] == [3]


def test_context_get_says_what_is_wrong_with_a_path_or_slice(mcp: httpx.Client) -> None:
    data = {"messages": [1], "text": "s"}
    token = call_tool(mcp, "context_create", {"data": data})["structuredContent"]["token"]
    for arguments, words in [
        ({"path": "/nothing"}, "not found: nothing at /nothing: the document has no member"),
        ({"path": "/messages/1"}, "not found: nothing at /messages/1"),
        ({"path": "messages"}, "path"),
        ({"slice": "1"}, "slice"),
        ({"slice": 5}, "slice"),
        ({"path": "/text", "slice": ":"}, "a slice needs an array, and /text is a string"),
        ({"slice": ":"}, "a slice needs an array, and the document is an object"),
    ]:
        result = call_tool(mcp, "context_get", {"token": token, **arguments})
        assert result["isError"] is True, (arguments, result)
        assert words in result["content"][0]["text"], (arguments, result)
    result = call_tool(mcp, "context_get", {"token": UNKNOWN, "path": "/messages"})
    assert "no such context" in result["content"][0]["text"]


def test_context_append(mcp: httpx.Client) -> None:
    created = call_tool(mcp, "context_create", {"data": {"chat": {"messages": []}}})
    token = created["structuredContent"]["token"]
    result = call_tool(
        mcp,
        "context_append",
        {"token": token, "path": "/chat/messages", "items": [{"role": "user"}, "hi"]},
    )
    assert result["isError"] is False, result
    assert result["structuredContent"] == {"token": token, "version": 2}
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    arguments = {"token": token, "path": "/chat/tags", "items": ["new"], "if_version": 2}
    assert call_tool(mcp, "context_append", arguments)["structuredContent"]["version"] == 3
    got = call_tool(mcp, "context_get", {"token": token})["structuredContent"]
    assert got["data"] == {"chat": {"messages": [{"role": "user"}, "hi"], "tags": ["new"]}}
    for arguments, words in [
        ({"path": "/chat/tags", "items": [1], "if_version": 2}, "version conflict"),
        ({"path": "/chat", "items": [1]}, "/chat is an object, not an array"),
        ({"path": "/a/b", "items": [1]}, 'cannot append to /a/b: add /a/b: no member "a"'),
        ({"path": "chat", "items": [1]}, "path"),
        ({"path": "/chat/tags", "items": 1}, "items"),
        ({"path": "/chat/tags"}, "items"),
        ({"items": [1]}, "path"),
        ({"path": "/chat/tags", "items": [1], "slice": ":"}, "slice"),
    ]:
        result = call_tool(mcp, "context_append", {"token": token, **arguments})
        assert result["isError"] is True, (arguments, result)
        assert "structuredContent" not in result
        assert words in result["content"][0]["text"], (arguments, result)
    result = call_tool(mcp, "context_append", {"token": UNKNOWN, "path": "/x", "items": [1]})
    assert "no such context" in result["content"][0]["text"]
    got = call_tool(mcp, "context_get", {"token": token})["structuredContent"]
    assert got["version"] == 3


def test_the_tools_take_path_and_slice_from_the_shapes(mcp: httpx.Client) -> None:
    r = mcp.post(
        "/mcp", content=rpc("tools/list", {"_meta": ENVELOPE}), headers=modern("tools/list")
    )
    tools = {tool["name"]: tool for tool in r.json()["result"]["tools"]}
    get = tools["context_get"]["inputSchema"]
    assert get["required"] == ["token"]
    assert {"path", "slice"} <= set(get["properties"])
    append = tools["context_append"]["inputSchema"]
    assert append["required"] == ["token", "path", "items"]
    assert append["properties"]["items"]["type"] == "array"
    assert set(tools["context_append"]["outputSchema"]["required"]) == {"token", "version"}


def test_a_context_of_any_json_round_trips_through_the_tools(mcp: httpx.Client) -> None:
    for data in (None, 0, "text", [1, {"a": None}], {"nested": {"deep": [True, 1.5]}}):
        created = call_tool(mcp, "context_create", {"data": data, "ttl": 60})["structuredContent"]
        got = call_tool(mcp, "context_get", {"token": created["token"]})
        assert got["structuredContent"]["data"] == data
        assert json.loads(got["content"][0]["text"]) == got["structuredContent"]


def test_an_unknown_resource_is_an_error_in_both_eras(mcp: httpx.Client) -> None:
    uri = f"ctx://{UNKNOWN}"
    session = initialize(mcp)
    r = mcp.post("/mcp", content=rpc("resources/read", {"uri": uri}), headers=in_session(session))
    assert error_code(r) == -32002
    read = {"_meta": ENVELOPE, "uri": uri}
    r = mcp.post("/mcp", content=rpc("resources/read", read), headers=modern("resources/read", uri))
    assert r.status_code == 400
    assert error_code(r) == -32602


def test_a_session_belongs_to_the_tenant_that_opened_it(server_pool: ServerPool) -> None:
    client = server_pool.client("redis", "granian", "tenants")
    params = {"protocolVersion": LEGACY, "capabilities": {}}
    acme = {**BASE, "Authorization": "Bearer key-acme"}
    r = client.post("/mcp", content=rpc("initialize", params), headers=acme)
    session = r.headers["mcp-session-id"]
    for key, status in (("key-globex", 404), ("key-acme", 200)):
        headers = {**in_session(session), "Authorization": f"Bearer {key}"}
        assert client.post("/mcp", content=rpc("ping"), headers=headers).status_code == status


def test_an_idle_session_ends_after_fastctx_mcp_session_idle() -> None:
    from starlette.testclient import TestClient

    from fastctx.config import Settings
    from fastctx.http import create_app

    with TestClient(create_app(Settings(mcp_session_idle=1))) as client:
        session = initialize(client)
        r = client.post("/mcp", content=rpc("ping"), headers=in_session(session))
        assert r.status_code == 200  # in use: each request starts the idle time again
        time.sleep(1.2)
        r = client.post("/mcp", content=rpc("ping"), headers=in_session(session))
        assert r.status_code == 404


def test_the_tools_read_a_ttl_as_the_rest_routes_do(mcp: httpx.Client) -> None:
    """One reading of a ttl for REST and MCP: 60.0 is one, "60" (a string) and 0 are not,
    and the refusal says the same rule; a session's meta is an object, never null."""
    for name in ("context_create", "session_create"):
        extra = {"data": 1} if name == "context_create" else {}
        result = call_tool(mcp, name, {**extra, "ttl": 60.0})
        assert result["isError"] is False, result
        for bad in ("60", 0):
            result = call_tool(mcp, name, {**extra, "ttl": bad})
            assert result["isError"] is True, (name, bad)
            assert "ttl must be a whole number of seconds" in result["content"][0]["text"]
    result = call_tool(mcp, "session_create", {"meta": None})
    assert result["isError"] is True
