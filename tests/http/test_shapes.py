"""One definition per shape: the Structs decode what the server answers, and are what the
OpenAPI document and the MCP tools describe."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from contract import JSON, create, create_session

from fastctx.asgi import shapes
from fastctx.http.openapi import OPENAPI
from fastctx.mcp.tools import TOOLS
from fastctx.registry import MAX_TTL_SECONDS


def _strict(body: bytes, kind: Any) -> Any:
    return msgspec.json.decode(body, type=kind, strict=True)


def test_every_answer_is_its_shape(client: httpx.Client) -> None:
    """The bodies written by hand on the hot routes, byte for byte, are the Structs' shapes."""
    session = create_session(client)
    r = client.post("/v1/contexts", params={"session": session}, content=b"{}", headers=JSON)
    created = _strict(r.content, shapes.Created)
    token = created.token
    r = client.put(f"/v1/contexts/{token}", content=b'{"a": 1}', headers=JSON)
    assert _strict(r.content, shapes.Written).version == 2
    assert _strict(client.get(f"/v1/contexts/{token}/meta").content, shapes.Meta).session == session
    r = client.post("/v1/contexts/mget", json={"tokens": [token, "nope"]})
    items = _strict(r.content, shapes.MgetResponse).items
    assert items[0].data == {"a": 1}
    assert items[1] is None
    r = client.post("/v1/sessions", json={"ttl": 60, "meta": {"k": "v"}})
    other = _strict(r.content, shapes.SessionCreated).session
    seen = _strict(client.get(f"/v1/sessions/{other}").content, shapes.Session)
    assert msgspec.json.decode(seen.meta) == {"k": "v"}
    assert _strict(client.get(f"/v1/contexts/{create(client, 1)}x").content, shapes.Problem)


def test_the_document_schemas_are_the_structs() -> None:
    schemas = OPENAPI["components"]["schemas"]
    refs = "#/components/schemas/{name}"
    _, generated = msgspec.json.schema_components(
        [shapes.SessionCreate, shapes.Meta, shapes.Problem, shapes.ChangeEvent], ref_template=refs
    )
    for name, schema in generated.items():
        assert schemas[name] == schema, name
    ttl = schemas["SessionCreate"]["properties"]["ttl"]["anyOf"][0]
    assert (ttl["minimum"], ttl["maximum"]) == (1, MAX_TTL_SECONDS)
    assert schemas["MgetRequest"]["properties"]["tokens"]["maxItems"] == shapes.MGET_LIMIT
    # A session's meta is an object, never null.
    assert schemas["SessionCreate"]["properties"]["meta"]["type"] == "object"


def test_the_tools_take_what_the_rest_routes_take() -> None:
    tools = {tool["name"]: tool for tool in TOOLS}
    rest = OPENAPI["components"]["schemas"]
    session_create = tools["session_create"]["inputSchema"]["properties"]
    assert session_create["meta"] == rest["SessionCreate"]["properties"]["meta"]
    for name in ("session_create", "context_create"):
        ttl = tools[name]["inputSchema"]["properties"]["ttl"]
        assert (ttl["type"], ttl["minimum"], ttl["maximum"]) == ("integer", 1, MAX_TTL_SECONDS)
    out = tools["session_get"]["outputSchema"]
    assert out["properties"] == rest["Session"]["properties"]
    assert tools["context_create"]["outputSchema"]["properties"] == rest["Created"]["properties"]


def test_mcp_documents_the_headers_it_requires() -> None:
    mcp = OPENAPI["paths"]["/mcp"]
    for method in ("get", "delete"):
        headers = {p["name"]: p for p in mcp[method]["parameters"]}
        assert headers["Mcp-Session-Id"]["required"] is True
        assert headers["Mcp-Session-Id"]["schema"]["pattern"] == shapes.TOKEN_PATTERN
        assert "enum" in headers["MCP-Protocol-Version"]["schema"]
    # 2026-07-28 has no GET stream: it is not among the versions GET takes.
    get_versions = {p["name"]: p for p in mcp["get"]["parameters"]}["MCP-Protocol-Version"]
    assert "2026-07-28" not in get_versions["schema"]["enum"]
    # Replies to a message that could not be read carry a null id.
    reply = mcp["post"]["responses"]["400"]["content"]["application/json"]["schema"]
    assert "null" in reply["properties"]["id"]["type"]


def test_event_streams_describe_each_event() -> None:
    for path in ("/v1/contexts/{token}/events", "/v1/sessions/{id}/events"):
        ok = OPENAPI["paths"][path]["get"]["responses"]["200"]
        event = ok["content"]["text/event-stream"]["schema"]
        assert event["properties"]["event"]["enum"] == list(shapes.EVENT_TYPES)
        data = event["properties"]["data"]
        assert data["contentSchema"] == {"$ref": "#/components/schemas/ChangeEvent"}
