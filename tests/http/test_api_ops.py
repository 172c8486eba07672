"""Contract: health, readiness, metrics, OpenAPI, and behaviour with the backend down."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from contract import JSON, MERGE, UNKNOWN_TOKEN, assert_problem, create
from prometheus_client.parser import text_string_to_metric_families


def test_healthz(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200


def test_readyz(client: httpx.Client) -> None:
    assert client.get("/readyz").status_code == 200


def test_metrics(client: httpx.Client, target: tuple[str, str]) -> None:
    token = create(client, {"m": 1})
    for _ in range(3):
        assert client.get(f"/v1/contexts/{token}").status_code == 200
    assert client.get(f"/v1/contexts/{UNKNOWN_TOKEN}").status_code == 404
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(("text/plain", "application/openmetrics-text"))
    families = list(text_string_to_metric_families(r.text))
    by_type: dict[str, list[str]] = {}
    for f in families:
        by_type.setdefault(f.type, []).append(f.name)

    counters = [f for f in families if f.type == "counter" and "request" in f.name]
    assert counters, by_type
    assert sum(s.value for f in counters for s in f.samples if s.name.endswith("_total")) >= 5

    histograms = [
        f
        for f in families
        if f.type == "histogram" and re.search(r"request|latency|duration", f.name)
    ]
    assert histograms, by_type
    counts = [s.value for f in histograms for s in f.samples if s.name.endswith("_count")]
    assert sum(counts) >= 5, histograms

    # Cache outcomes: either in the metric names or as label values of a "cache" label.
    cache_samples = [
        s for f in families for s in f.samples if "cache" in f.name or "cache" in s.labels
    ]
    words = " ".join(s.name + " " + " ".join(s.labels.values()) for s in cache_samples)
    assert "hit" in words, by_type
    if target[0] == "redis":
        # Only Redis has an in-process cache in front of it, so only it can miss.
        assert "miss" in words, by_type


def test_metrics_count_requests(client: httpx.Client) -> None:
    def total(text: str) -> float:
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            if f.type == "counter" and "request" in f.name
            for s in f.samples
            if s.name.endswith("_total")
        )

    before = total(client.get("/metrics").text)
    for _ in range(10):
        client.get(f"/v1/contexts/{UNKNOWN_TOKEN}")
    after = total(client.get("/metrics").text)
    assert after - before >= 10


TABLE = {
    "/v1/contexts": {"post"},
    "/v1/contexts/{}": {"get", "put", "patch", "delete"},
    "/v1/contexts/{}/meta": {"get"},
    "/v1/contexts/mget": {"post"},
    "/v1/sessions": {"post"},
    "/v1/sessions/{}": {"get", "delete"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
}


def test_openapi(client: httpx.Client) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert str(doc["openapi"]).startswith("3.1")
    assert doc["info"]["title"]
    assert doc["info"]["version"]
    paths = {re.sub(r"\{[^}]+\}", "{}", p): ops for p, ops in doc["paths"].items()}
    for path, methods in TABLE.items():
        assert path in paths, (path, sorted(paths))
        assert methods <= set(paths[path]), (path, paths[path])


def test_openapi_lists_the_event_streams(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    paths = {re.sub(r"\{[^}]+\}", "{}", p): ops for p, ops in doc["paths"].items()}
    for path in ("/v1/contexts/{}/events", "/v1/sessions/{}/events"):
        assert path in paths, (path, sorted(paths))
        assert "get" in paths[path]


# --- backend down ---------------------------------------------------------------------------


def test_backend_down_readyz_503(down_client: httpx.Client) -> None:
    assert down_client.get("/healthz").status_code == 200
    r = down_client.get("/readyz")
    assert r.status_code == 503


def _assert_unavailable(r: httpx.Response) -> None:
    assert_problem(r, 503)
    retry_after = r.headers.get("retry-after")
    assert retry_after is not None, r.headers
    assert retry_after.strip().isdigit(), retry_after


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/v1/contexts", b'{"a": 1}', JSON),
        ("PUT", f"/v1/contexts/{UNKNOWN_TOKEN}", b'{"a": 1}', JSON),
        ("PATCH", f"/v1/contexts/{UNKNOWN_TOKEN}", b'{"a": 1}', MERGE),
        ("DELETE", f"/v1/contexts/{UNKNOWN_TOKEN}", None, {}),
        ("GET", f"/v1/contexts/{UNKNOWN_TOKEN}", None, {}),
        ("GET", f"/v1/contexts/{UNKNOWN_TOKEN}/meta", None, {}),
        ("POST", "/v1/sessions", None, {}),
        ("GET", f"/v1/sessions/{UNKNOWN_TOKEN}", None, {}),
    ],
)
def test_backend_down_is_503_with_retry_after(
    down_client: httpx.Client,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
) -> None:
    _assert_unavailable(down_client.request(method, path, content=body, headers=headers))


def test_backend_down_malformed_token_is_still_404(down_client: httpx.Client) -> None:
    # Malformed tokens are refused before any backend call.
    assert_problem(down_client.get("/v1/contexts/not-a-token"), 404)


@pytest.mark.parametrize("transport", ["asgi", "granian"])
def test_backend_outage_and_recovery(start_app: Any, private_redis: Any, transport: str) -> None:
    client = start_app(transport, private_redis.url(0))
    token = create(client, {"survives": "outage"})
    assert client.get(f"/v1/contexts/{token}").status_code == 200
    assert client.get("/readyz").status_code == 200

    private_redis.stop()
    # Reads this node's cache can answer still answer: a fresh hit at first, then (once the
    # entry is older than the invalidation window and the backend is asked) marked stale.
    deadline = time.monotonic() + 5
    while True:
        r = client.get(f"/v1/contexts/{token}")
        assert r.status_code == 200, r.text
        assert r.json() == {"survives": "outage"}
        assert r.headers["etag"] == '"1"'
        if r.headers["x-cache"] != "hit" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert r.headers["x-cache"] == "stale"
    # Everything else is 503 with Retry-After.
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    _assert_unavailable(client.put(f"/v1/contexts/{token}", json={"lost": True}))
    _assert_unavailable(client.post("/v1/contexts", json={"new": True}))
    _assert_unavailable(client.get(f"/v1/contexts/{UNKNOWN_TOKEN}"))

    private_redis.start()  # same port, empty: nothing persisted
    deadline = time.monotonic() + 15
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the server did not recover by itself"
        time.sleep(0.1)
    fresh = create(client, {"after": "recovery"})
    assert client.get(f"/v1/contexts/{fresh}").json() == {"after": "recovery"}
    r = client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert r.status_code == 404  # the restarted Redis kept nothing, and the server asked it
