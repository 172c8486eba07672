"""Schemathesis against the /openapi.json a live server serves: no 5xx, every answer documented."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fastctx.http.openapi import OPENAPI
from support.pool import ServerPool

# (backend, settings profile of tests/support/pool.py, headers every request carries)
TARGETS = [
    ("memory", "default", {}),
    ("redis", "default", {}),
    ("redis", "tenants", {"Authorization": "Bearer key-acme"}),
]
# Enough to reach every parameter and body shape of an operation; the whole file stays well
# under a minute on two cores.
MAX_EXAMPLES = 25
REQUEST_TIMEOUT = 10.0
METHODS = ("get", "head", "post", "put", "patch", "delete")
OPERATIONS = [
    (method.upper(), path)
    for path, item in OPENAPI["paths"].items()
    for method in METHODS
    if method in item
]
# Operations whose input has a schema that some request can break (the others, such as
# free-form header strings, have no negative cases at all).
NEGATABLE = {
    ("POST", "/v1/contexts"),
    ("POST", "/v1/contexts/mget"),
    ("PUT", "/v1/contexts/{token}"),
    ("PATCH", "/v1/contexts/{token}"),
    ("POST", "/v1/sessions"),
    ("POST", "/mcp"),
}
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Invalid input need not produce a documented body shape, but never a 5xx or an undocumented
# status or media type.
NEGATIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


Live = tuple[str, schemathesis.BaseSchema, dict[str, str]]


@pytest.fixture(scope="module", params=TARGETS, ids=["memory", "redis", "redis-keys"])
def live_schema(request: pytest.FixtureRequest, server_pool: ServerPool) -> Live:
    """(base URL, the schema as the server serves it, headers) for one granian server."""
    backend, profile, headers = request.param
    server = server_pool.granian(backend, profile)
    # Fetched here rather than with from_url, which would leave /openapi.json itself unfuzzed.
    served = httpx.get(f"{server.base_url}/openapi.json", timeout=REQUEST_TIMEOUT)
    assert served.status_code == 200
    return server.base_url, schemathesis.openapi.from_dict(served.json()), headers


def _operation(schema: schemathesis.BaseSchema, method: str, path: str) -> Any:
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() == method and operation.path == path:
            return operation
    raise AssertionError(f"{method} {path} is not in the served document")


def _refused_by_granian(response: Any) -> bool:
    """granian's own answer to a request it cannot parse (a Content-Length that is not a
    number, say): a bare 400 that closes the connection, before any app sees the request.
    fastctx never answers an error without a problem+json body."""
    return bool(
        response.status_code == 400
        and not response.content
        and "content-type" not in response.headers
        and response.headers.get("connection", "").lower() == "close"
    )


def _run(
    operation: Any,
    base_url: str,
    headers: dict[str, str],
    mode: GenerationMode,
    checks: list[Callable[..., Any]],
) -> int:
    """Send MAX_EXAMPLES generated requests and validate each response; returns how many."""
    sent = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        nonlocal sent
        response = case.call(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT)
        sent += 1
        if _refused_by_granian(response):
            return
        case.validate_response(response, checks=checks)

    check()
    return sent


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms(live_schema: Live, method: str, path: str) -> None:
    base_url, schema, headers = live_schema
    operation = _operation(schema, method, path)
    assert _run(operation, base_url, headers, GenerationMode.POSITIVE, POSITIVE_CHECKS) > 0
    try:
        negatives = _run(operation, base_url, headers, GenerationMode.NEGATIVE, NEGATIVE_CHECKS)
    except Unsatisfiable:
        negatives = 0
    assert negatives > 0 or (method, path) not in NEGATABLE
    # Whatever was sent, the server still serves.
    assert httpx.get(f"{base_url}/healthz", timeout=REQUEST_TIMEOUT).status_code == 200


def test_every_documented_operation_is_fuzzed(live_schema: Live) -> None:
    _, schema, _ = live_schema
    served = {
        (result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()
    }
    assert served == set(OPERATIONS)
