"""FASTCTX_MAX_STREAMS: past as many open event streams, a new one is 503 with Retry-After."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.servers import GranianServer, metric

LIMIT = 2
ACCEPT = "application/json, text/event-stream"
MCP = {"Content-Type": "application/json", "Accept": ACCEPT, "MCP-Protocol-Version": "2025-11-25"}
MODERN = {
    "Content-Type": "application/json",
    "Accept": ACCEPT,
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "subscriptions/listen",
}
LISTEN = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "subscriptions/listen",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
        "notifications": {"resourceSubscriptions": []},
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GranianServer]:
    server = GranianServer.start(tmp_path_factory.mktemp("streams"), "memory://", max_streams=LIMIT)
    yield server
    server.stop()


@pytest.fixture
def client(server: GranianServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        yield client


def _mcp_session(client: httpx.Client) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}},
    }
    r = client.post("/mcp", json=body, headers=MCP)
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]


def _open_streams(client: httpx.Client) -> float:
    return metric(client, "fastctx_open_streams")


def _until_open(client: httpx.Client, count: int) -> None:
    """Until the server counts `count` open streams (it hears of a client leaving a little
    after the client has gone)."""
    deadline = time.monotonic() + 5
    while _open_streams(client) != count:
        assert time.monotonic() < deadline, f"the server never counted {count} open streams"
        time.sleep(0.02)


def _refused(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.headers["content-type"] == "application/problem+json"
    assert json.loads(r.read())["type"].endswith(":unavailable")


def test_streams_past_the_limit_are_refused_until_one_ends(
    server: GranianServer, client: httpx.Client
) -> None:
    token = client.post("/v1/contexts", json={"n": 1}).json()["token"]
    session = client.post("/v1/sessions", json={}).json()["session"]
    mcp_session = _mcp_session(client)
    paths = [f"/v1/contexts/{token}/events", f"/v1/sessions/{session}/events"]
    with contextlib.ExitStack() as held:
        for path in paths:
            response = held.enter_context(client.stream("GET", path))
            assert response.status_code == 200
        _until_open(client, LIMIT)
        # Every kind of stream is refused now: SSE, the MCP GET stream, subscriptions/listen.
        for path in paths:
            with client.stream("GET", path) as refused:
                _refused(refused)
        mcp_get = {**MCP, "Accept": "text/event-stream", "Mcp-Session-Id": mcp_session}
        with client.stream("GET", "/mcp", headers=mcp_get) as refused:
            _refused(refused)
        with client.stream("POST", "/mcp", json=LISTEN, headers=MODERN) as refused:
            _refused(refused)
        # The refused listen held an in-flight slot as any POST does, and gave it back.
        assert metric(client, "fastctx_inflight_requests") == 0
        # Requests that are not streams go on as before.
        assert client.get(f"/v1/contexts/{token}").status_code == 200
        assert metric(client, "fastctx_refused_streams_total") == 4
    _until_open(client, 0)
    with client.stream("GET", paths[0]) as again:
        assert again.status_code == 200
    _until_open(client, 0)


def test_a_stream_that_fails_gives_its_slot_back(client: httpx.Client) -> None:
    unknown = "0AbCdEfGhIjKlMnOpQrStU"
    for _ in range(LIMIT + 1):
        assert client.get(f"/v1/contexts/{unknown}/events").status_code == 404
    _until_open(client, 0)


def test_the_limit_is_checked_at_start() -> None:
    from fastctx.config import Settings

    assert Settings().max_streams == 10_000
    with pytest.raises(ValueError, match="FASTCTX_MAX_STREAMS"):
        Settings.from_env({"FASTCTX_MAX_STREAMS": "-1"})


def test_no_bound_with_zero(tmp_path: Path) -> None:
    server = GranianServer.start(tmp_path, "memory://", max_streams=0)
    try:
        with httpx.Client(base_url=server.base_url, timeout=5) as client:
            token = client.post("/v1/contexts", json={"n": 1}).json()["token"]
            with contextlib.ExitStack() as held:
                for _ in range(LIMIT + 3):
                    path = f"/v1/contexts/{token}/events"
                    assert held.enter_context(client.stream("GET", path)).status_code == 200
                _until_open(client, LIMIT + 3)
    finally:
        server.stop()


def test_every_kind_of_stream_sends_the_same_head(client: httpx.Client) -> None:
    token = client.post("/v1/contexts", json={"n": 1}).json()["token"]
    session = client.post("/v1/sessions", json={}).json()["session"]
    mcp_get = {**MCP, "Accept": "text/event-stream", "Mcp-Session-Id": _mcp_session(client)}
    streams = [
        ("GET", f"/v1/contexts/{token}/events", {}, None),
        ("GET", f"/v1/sessions/{session}/events", {}, None),
        ("GET", "/mcp", mcp_get, None),
        ("POST", "/mcp", MODERN, LISTEN),
    ]
    for method, path, headers, body in streams:
        with client.stream(method, path, headers=headers, json=body) as response:
            assert response.status_code == 200, path
            assert response.headers["content-type"] == "text/event-stream", path
            assert response.headers["cache-control"] == "no-cache", path
            assert response.headers["x-accel-buffering"] == "no", path
        _until_open(client, 0)
    # A reply sent as a one-event stream carries the same cache headers.
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    r = client.post("/mcp", json=ping, headers={**mcp_get, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/event-stream"
    assert (r.headers["cache-control"], r.headers["x-accel-buffering"]) == ("no-cache", "no")
