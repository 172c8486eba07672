"""Structural checks of the OpenAPI 3.1 document in fastctx.http.openapi."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from fastctx.http.openapi import OPENAPI

HTTP_METHODS = ("get", "head", "put", "post", "patch", "delete", "options", "trace")

# Every row of SPEC.md's HTTP table.
EXPECTED_OPERATIONS = {
    ("/v1/contexts", "post"),
    ("/v1/contexts/mget", "post"),
    ("/v1/contexts/{token}", "get"),
    ("/v1/contexts/{token}", "head"),
    ("/v1/contexts/{token}", "put"),
    ("/v1/contexts/{token}", "patch"),
    ("/v1/contexts/{token}", "delete"),
    ("/v1/contexts/{token}/meta", "get"),
    ("/v1/contexts/{token}/append", "post"),
    ("/v1/contexts/{token}/events", "get"),
    ("/v1/sessions", "post"),
    ("/v1/sessions/{id}", "get"),
    ("/v1/sessions/{id}", "delete"),
    ("/v1/sessions/{id}/events", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
    ("/mcp", "post"),
    ("/mcp", "get"),
    ("/mcp", "delete"),
}

# Statuses each operation must document (at least), from SPEC.md and the design notes.
EXPECTED_STATUSES = {
    ("/v1/contexts", "post"): {"201", "400", "404", "413", "415"},
    ("/v1/contexts/mget", "post"): {"200", "400", "413"},
    ("/v1/contexts/{token}", "get"): {"200", "304", "404"},
    ("/v1/contexts/{token}", "head"): {"200", "404"},
    ("/v1/contexts/{token}", "put"): {"200", "404", "412", "413", "415"},
    ("/v1/contexts/{token}", "patch"): {"200", "404", "412", "415", "422"},
    ("/v1/contexts/{token}", "delete"): {"204", "404", "412"},
    ("/v1/contexts/{token}/meta", "get"): {"200", "404"},
    ("/v1/contexts/{token}/append", "post"): {"200", "400", "404", "412", "413", "415", "422"},
    ("/v1/contexts/{token}/events", "get"): {"200", "400", "404"},
    ("/v1/sessions/{id}/events", "get"): {"200", "400", "404"},
    ("/v1/sessions", "post"): {"201", "400"},
    ("/v1/sessions/{id}", "get"): {"200", "404"},
    ("/v1/sessions/{id}", "delete"): {"204", "404"},
    ("/healthz", "get"): {"200"},
    ("/readyz", "get"): {"200", "503"},
    ("/metrics", "get"): {"200"},
    ("/openapi.json", "get"): {"200"},
    ("/mcp", "post"): {"200", "202", "400", "401", "403", "404", "406", "413", "415", "503"},
    ("/mcp", "get"): {"200", "400", "401", "403", "404", "405"},
    ("/mcp", "delete"): {"204", "400", "401", "403", "404"},
}

MCP_JSONRPC_ERRORS = {"400", "403", "404", "405", "406"}

TOKEN_PATTERN = "^[0-9A-Za-z]{22}$"


def resolve(ref: str) -> Any:
    assert ref.startswith("#/"), f"external or malformed $ref: {ref}"
    node: Any = OPENAPI
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"$ref {ref} walks through a non-object"
        assert key in node, f"$ref {ref} does not resolve"
        node = node[key]
    return node


def deref(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(node["$ref"])
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in OPENAPI["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def parameters(path: str, method: str) -> list[dict[str, Any]]:
    item = OPENAPI["paths"][path]
    declared = [deref(p) for p in item.get("parameters", [])]
    declared += [deref(p) for p in item[method].get("parameters", [])]
    return declared


def test_version_and_info() -> None:
    assert OPENAPI["openapi"] == "3.1.0"
    assert OPENAPI["info"]["title"]
    assert OPENAPI["info"]["version"]


def test_document_is_plain_json() -> None:
    assert json.loads(json.dumps(OPENAPI)) == OPENAPI


def test_every_operation_of_the_table_and_nothing_else() -> None:
    found = {(path, method) for path, method, _ in operations()}
    assert found == EXPECTED_OPERATIONS


def test_every_ref_resolves() -> None:
    all_refs = list(refs(OPENAPI))
    assert all_refs
    for ref in all_refs:
        resolve(ref)


def test_components_present() -> None:
    components = OPENAPI["components"]
    for name in (
        "Problem",
        "Created",
        "Written",
        "Meta",
        "MgetRequest",
        "MgetResponse",
        "SessionCreate",
        "SessionCreated",
        "Session",
    ):
        assert name in components["schemas"], name
    assert components["schemas"]["MgetRequest"]["properties"]["tokens"]["maxItems"] == 1000
    bearer = components["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    problem = components["schemas"]["Problem"]
    assert set(problem["required"]) >= {"type", "title", "status", "detail"}
    assert problem["properties"]["type"]["pattern"].startswith("^urn:fastctx:problem:")


@pytest.mark.parametrize(("path", "method"), sorted(EXPECTED_STATUSES))
def test_responses(path: str, method: str) -> None:
    operation = OPENAPI["paths"][path][method]
    statuses = set(operation["responses"])
    assert statuses >= EXPECTED_STATUSES[(path, method)]
    assert "default" not in statuses
    assert all(re.fullmatch(r"[1-5][0-9][0-9]", s) for s in statuses)
    assert any(s.startswith(("2", "3")) for s in statuses)
    if path.startswith("/v1/"):
        assert {"401", "503"} <= statuses
        assert any(s.startswith("4") for s in statuses)
    for status, response in operation["responses"].items():
        response = deref(response)
        assert response["description"]
        if status.startswith(("4", "5")) and "content" in response:
            # /mcp answers its own errors as JSON-RPC error objects, the rest as problems.
            jsonrpc = path == "/mcp" and status in MCP_JSONRPC_ERRORS
            expected = "application/json" if jsonrpc else "application/problem+json"
            assert set(response["content"]) == {expected}
        if status == "503" and path.startswith("/v1/"):
            assert deref(response["headers"]["Retry-After"])["required"] is True
        if status == "401":
            assert "WWW-Authenticate" in response["headers"]
        if method == "head" or status in {"204", "304"}:
            assert "content" not in response


def test_operation_ids_unique() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("path", "method"), sorted(EXPECTED_OPERATIONS))
def test_path_parameters_declared(path: str, method: str) -> None:
    templated = set(re.findall(r"\{([^}]+)\}", path))
    declared = [p for p in parameters(path, method) if p["in"] == "path"]
    assert {p["name"] for p in declared} == templated
    for param in declared:
        assert param["required"] is True
        assert param["schema"]["pattern"] == TOKEN_PATTERN
    names = [(p["name"], p["in"]) for p in parameters(path, method)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(("path", "method"), sorted(EXPECTED_OPERATIONS))
def test_security_only_on_v1(path: str, method: str) -> None:
    operation = OPENAPI["paths"][path][method]
    effective = operation.get("security", OPENAPI.get("security", []))
    if path.startswith(("/v1/", "/mcp")):
        assert effective == [{"bearer": []}, {}]
    else:
        assert effective == []


def test_request_bodies() -> None:
    paths = OPENAPI["paths"]
    patch = paths["/v1/contexts/{token}"]["patch"]["requestBody"]["content"]
    assert set(patch) == {"application/merge-patch+json", "application/json-patch+json"}
    for path, method in [
        ("/v1/contexts", "post"),
        ("/v1/contexts/mget", "post"),
        ("/v1/contexts/{token}", "put"),
        ("/v1/contexts/{token}/append", "post"),
        ("/v1/sessions", "post"),
    ]:
        assert set(paths[path][method]["requestBody"]["content"]) == {"application/json"}


def test_conditional_headers() -> None:
    def names(path: str, method: str) -> set[str]:
        return {p["name"] for p in parameters(path, method) if p["in"] == "header"}

    for method in ("get", "head"):
        assert "If-None-Match" in names("/v1/contexts/{token}", method)
    for method in ("put", "patch", "delete"):
        assert "If-Match" in names("/v1/contexts/{token}", method)
    get_ok = deref(OPENAPI["paths"]["/v1/contexts/{token}"]["get"]["responses"]["200"])
    assert {"ETag", "X-Cache"} <= set(get_ok["headers"])
    created = deref(OPENAPI["paths"]["/v1/contexts"]["post"]["responses"]["201"])
    assert {"Location", "ETag"} <= set(created["headers"])


def test_partial_reads_and_appends() -> None:
    """path and slice on the reads, from the patterns the server checks them with; the append
    takes a required path and a JSON array."""

    def query(path: str, method: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in parameters(path, method) if p["in"] == "query"}

    for path, method in [
        ("/v1/contexts/{token}", "get"),
        ("/v1/contexts/{token}", "head"),
        ("/v1/contexts/mget", "post"),
    ]:
        taken = query(path, method)
        # an earlier version is read by GET and HEAD, not mget
        assert set(taken) == {"path", "slice"} | ({"version"} if method != "post" else set())
        assert not any(p["required"] for p in taken.values())
        assert re.fullmatch(taken["path"]["schema"]["pattern"], "/a~1b/0")
        assert not re.fullmatch(taken["path"]["schema"]["pattern"], "a")
        for ok in ("-20:", ":", "1:3", ":-1"):
            assert re.fullmatch(taken["slice"]["schema"]["pattern"], ok)
        for bad in ("1", "a:", "1:2:3", ""):
            assert not re.fullmatch(taken["slice"]["schema"]["pattern"], bad)
    appended = query("/v1/contexts/{token}/append", "post")
    assert set(appended) == {"path"}
    assert appended["path"]["required"] is True
    body = OPENAPI["paths"]["/v1/contexts/{token}/append"]["post"]["requestBody"]
    assert deref(body["content"]["application/json"]["schema"])["type"] == "array"
    item = OPENAPI["components"]["schemas"]["MgetItem"]
    assert set(item["required"]) == {"token", "version"}
    assert {"data", "error"} <= set(item["properties"])
    assert item["oneOf"] == [{"required": ["data"]}, {"required": ["error"]}]
