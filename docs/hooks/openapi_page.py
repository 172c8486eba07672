"""The HTTP API page, written from the OpenAPI document the server itself serves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

METHODS = ("get", "head", "post", "put", "patch", "delete")
TAG_TITLES = {"mcp": "MCP"}


def served_document() -> dict[str, Any]:
    """GET /openapi.json, asked of a fresh app in process: the page shows what is served."""
    from fastctx.config import Settings
    from fastctx.http import create_app

    app = create_app(Settings(backend="memory://"))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/openapi.json",
        "raw_path": b"/openapi.json",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 0),
        "server": ("localhost", 80),
    }
    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    if status != 200:
        raise RuntimeError(f"GET /openapi.json answered {status}")
    return json.loads(b"".join(m.get("body", b"") for m in sent[1:]))  # type: ignore[no-any-return]


class Document:
    """An OpenAPI 3.1 document with its local `$ref`s resolved on demand."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.raw
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def operations(self) -> Iterator[tuple[str, str, dict[str, Any], list[Any]]]:
        for path, item in self.raw["paths"].items():
            shared = item.get("parameters", [])
            for method in METHODS:
                if method in item:
                    yield path, method, item[method], shared


def cell(text: Any) -> str:
    """Text fit for one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|") or " "


def schema_summary(doc: Document, schema: Any) -> str:
    if isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#schema-{name.lower()})"
    schema = doc.resolve(schema) or {}
    kind = schema.get("type")
    parts = []
    if kind == "array" and "items" in schema:
        parts.append(f"array of {schema_summary(doc, schema['items'])}")
    elif kind:
        parts.append(f"`{kind if isinstance(kind, str) else ' | '.join(kind)}`")
    for key in ("enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "maxItems"):
        if key in schema:
            parts.append(f"{key} `{json.dumps(schema[key])}`")
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    return ", ".join(parts) or "any JSON"


def parameters_table(doc: Document, parameters: list[Any]) -> list[str]:
    if not parameters:
        return []
    lines = ["| parameter | in | required | schema | meaning |", "|---|---|---|---|---|"]
    for raw in parameters:
        p = doc.resolve(raw)
        schema = cell(schema_summary(doc, p.get("schema", {})))
        required = "yes" if p.get("required") else "no"
        lines.append(
            f"| `{p['name']}` | {p['in']} | {required} | {schema} "
            f"| {cell(p.get('description', ''))} |"
        )
    return [*lines, ""]


def responses_table(doc: Document, responses: dict[str, Any]) -> list[str]:
    lines = ["| status | meaning | headers | body |", "|---|---|---|---|"]
    for status in sorted(responses):
        r = doc.resolve(responses[status])
        headers = ", ".join(f"`{name}`" for name in r.get("headers", {}))
        bodies = [
            f"`{media}` {schema_summary(doc, content.get('schema', {}))}"
            for media, content in r.get("content", {}).items()
        ]
        lines.append(
            f"| {status} | {cell(r.get('description', ''))} | {cell(headers)} "
            f"| {cell('; '.join(bodies))} |"
        )
    return [*lines, ""]


def operation_section(
    doc: Document, path: str, method: str, op: dict[str, Any], shared: list[Any]
) -> list[str]:
    lines = [f"### {op.get('summary', op.get('operationId', ''))}", ""]
    lines += [f"`{method.upper()} {path}` (operation `{op.get('operationId', '')}`)", ""]
    if op.get("description"):
        lines += [op["description"], ""]
    lines += parameters_table(doc, [*shared, *op.get("parameters", [])])
    body = op.get("requestBody")
    if body:
        body = doc.resolve(body)
        required = "required" if body.get("required") else "optional"
        lines.append(f"Request body ({required}):")
        lines.append("")
        for media, content in body.get("content", {}).items():
            lines.append(f"- `{media}`: {schema_summary(doc, content.get('schema', {}))}")
        lines.append("")
    lines += responses_table(doc, op.get("responses", {}))
    return lines


def error_statuses(doc: Document) -> list[tuple[int, list[str]]]:
    """Every error status some operation documents, each meaning once; a meaning that only
    some routes state in their own words names them."""
    found: dict[int, dict[str, list[str]]] = {}
    shared: set[tuple[int, str]] = set()
    for path, method, op, _ in doc.operations():
        for status, raw in op.get("responses", {}).items():
            if not status.isdigit() or int(status) < 400:
                continue
            meaning = cell(doc.resolve(raw).get("description", ""))
            routes = found.setdefault(int(status), {}).setdefault(meaning, [])
            if "$ref" in raw:
                shared.add((int(status), meaning))
            else:
                routes.append(f"`{method.upper()} {path}`")
    return [
        (
            status,
            [
                m if (status, m) in shared else f"{m} ({', '.join(routes)})"
                for m, routes in meanings.items()
            ],
        )
        for status, meanings in sorted(found.items())
    ]


def render(raw: dict[str, Any]) -> str:
    doc = Document(raw)
    info = raw.get("info", {})
    lines = [
        "# HTTP API",
        "",
        "<!-- Written at build time from GET /openapi.json (docs/hooks/openapi_page.py). -->",
        "",
        f"{info.get('summary', '')} OpenAPI {raw['openapi']}, API version "
        f"`{info.get('version', '')}`: this page is written from the document that "
        "`GET /openapi.json` serves, when the site is built.",
        "",
        info.get("description", ""),
        "",
        "## Rules on every route",
        "",
        "- An unknown query parameter (`?tll=5`, `?include=bogus`) is 400 naming it: a typo "
        "never falls back to a default silently.",
        '- `If-Match` takes a quoted version, `"3"`: unquoted (`If-Match: 3`) it is a malformed '
        "header, 400; quoted but not the current version, 412, and nothing changes.",
        "- Versions grow by one on every write; `ETag` is the current one "
        "([Versions and ETags](concepts/versions.md)).",
        "- Event streams are Server-Sent Events of `created`, `updated`, `deleted` and "
        "`expired` events ([Change streams](concepts/streams.md)).",
        "",
        "## Errors",
        "",
        "Every error is `application/problem+json` (RFC 9457): "
        '`{"type", "title", "status", "detail"}`. The statuses some operation answers:',
        "",
        "| status | meaning |",
        "|---|---|",
    ]
    for status, descriptions in error_statuses(doc):
        lines.append(f"| {status} | {'<br>'.join(descriptions)} |")
    lines.append("")
    tags = raw.get("tags", [])
    for tag in tags:
        title = TAG_TITLES.get(tag["name"], tag["name"].capitalize())
        lines += [f"## {title}", "", tag.get("description", ""), ""]
        for path, method, op, shared in doc.operations():
            if tag["name"] in op.get("tags", []):
                lines += operation_section(doc, path, method, op, shared)
    untagged = [o for o in doc.operations() if not o[2].get("tags")]
    if untagged:
        lines += ["## Other operations", ""]
        for path, method, op, shared in untagged:
            lines += operation_section(doc, path, method, op, shared)
    lines += ["## Schemas", ""]
    for name, schema in raw.get("components", {}).get("schemas", {}).items():
        lines += [
            f"### {name} {{ #schema-{name.lower()} }}",
            "",
            "```json",
            json.dumps(schema, indent=2, ensure_ascii=False),
            "```",
            "",
        ]
    return "\n".join(lines)
