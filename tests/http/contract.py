"""Helpers shared by the HTTP contract tests (assertions on the wire format of SPEC.md)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx

TOKEN_RE = re.compile(r"^[0-9A-Za-z]{22}$")
JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
# A well-formed token that no server ever issued (the chance of a collision is 2**-128).
UNKNOWN_TOKEN = "0AbCdEfGhIjKlMnOpQrStU"


def create(
    client: httpx.Client,
    body: Any = None,
    *,
    raw: bytes | None = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """POST a context and return its token (asserting the 201)."""
    content = raw if raw is not None else json.dumps(body).encode()
    r = client.post(
        "/v1/contexts", content=content, params=params, headers={**JSON, **(headers or {})}
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert TOKEN_RE.match(token), token
    return str(token)


def create_session(
    client: httpx.Client, body: Any = None, headers: dict[str, str] | None = None
) -> str:
    if body is None:
        r = client.post("/v1/sessions", headers=headers)
    else:
        r = client.post("/v1/sessions", json=body, headers=headers)
    assert r.status_code == 201, r.text
    sid = r.json()["session"]
    assert TOKEN_RE.match(sid), sid
    return str(sid)


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem document with the expected status."""
    assert r.status_code == status, (r.status_code, r.text)
    ctype = r.headers.get("content-type", "")
    assert ctype.split(";")[0].strip() == "application/problem+json", ctype
    doc = r.json()
    assert isinstance(doc, dict), doc
    assert doc.get("status") == status, doc
    for key in ("type", "title", "detail"):
        assert isinstance(doc.get(key), str), (key, doc)
    assert doc["title"], doc
    return doc


def parse_ts(value: Any) -> datetime:
    """An RFC 3339 UTC timestamp as used in bodies (e.g. 2026-11-24T01:30:50.123Z)."""
    assert isinstance(value, str), value
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]00:00)$", value), value
    ts = datetime.fromisoformat(value)
    offset = ts.utcoffset()
    assert offset is not None, value
    assert offset.total_seconds() == 0, value
    return ts


def now() -> datetime:
    return datetime.now(UTC)


def get_state(
    client: httpx.Client, token: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str | None]:
    """(status, body, ETag) of a GET that bypasses the cache: used to check nothing changed."""
    r = client.get(
        f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache", **(headers or {})}
    )
    return r.status_code, r.content, r.headers.get("etag")
