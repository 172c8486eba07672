"""Helpers of the hostile-input tests: raw HTTP/1.1 over a socket, MCP calls, a victim context."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis import Redis

JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
# A document whose exact bytes (spacing, key order, escapes) a read must give back unchanged.
PROTECTED = b'{ "victim" : [1, 2.50, "\\u00e9\\n", {"k": null}],\n  "z": true }'

HEADER_TIMEOUT = 2  # seconds: FASTCTX_HEADER_TIMEOUT of the own_* servers (fuzz_servers)


DEEP = 100_000  # nesting levels
MIB = 1024 * 1024
UNKNOWN_TOKEN = "0AbCdEfGhIjKlMnOpQrStU"
ACME = {"Authorization": "Bearer key-acme"}  # the `tenants` profile of tests/support/pool.py
GLOBEX = {"Authorization": "Bearer key-globex"}


@dataclasses.dataclass
class Live:
    """A granian server, a client of it, and its Redis DB when the server has one to itself."""

    base_url: str
    client: httpx.Client
    db: Redis | None

    def keys(self) -> int | None:
        return None if self.db is None else int(self.db.dbsize())


def mcp_session(client: httpx.Client, headers: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of a new MCP session (2025-11-25), opened with initialize."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "hostile", "version": "0"},
        },
    }
    r = client.post("/mcp", json=init, headers={**MCP_HEADERS, **(headers or {})})
    assert r.status_code == 200, r.text
    return {
        **MCP_HEADERS,
        **(headers or {}),
        "Mcp-Session-Id": r.headers["mcp-session-id"],
        "MCP-Protocol-Version": "2025-11-25",
    }


def call_tool(client: httpx.Client, session: dict[str, str], tool: str, args: Any) -> Any:
    body = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": tool, "arguments": args},
    }
    r = client.post("/mcp", json=body, headers=session)
    assert r.status_code == 200, r.text
    return r.json()


@dataclasses.dataclass
class RawResponse:
    status: int | None  # None: the server closed or reset without answering
    headers: dict[str, str]
    body: bytes


def address(base_url: str) -> tuple[str, int]:
    url = urlsplit(base_url)
    assert url.hostname is not None
    assert url.port is not None
    return url.hostname, url.port


def read_response(sock: socket.socket) -> RawResponse:
    """One HTTP/1.1 response (framed by Content-Length, or by the close) from `sock`."""
    data = b""
    try:
        while True:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return RawResponse(None, {}, data)
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            if status >= 200:
                break
            data = body  # an interim response (100 Continue): the final one follows
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return RawResponse(status, headers, body[:length] if length >= 0 else body)
    except ConnectionResetError:
        return RawResponse(None, {}, data)


def raw_request(base_url: str, request: bytes, timeout: float = 30.0) -> RawResponse:
    """Send `request` exactly as given on a new connection and read the answer."""
    with socket.create_connection(address(base_url), timeout=timeout) as sock:
        # The server may refuse before it has read everything; then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return read_response(sock)


def closes_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes `sock` (EOF or reset) within `seconds`."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def create_protected(client: httpx.Client, headers: dict[str, str] | None = None) -> str:
    """A context holding PROTECTED; returns its token."""
    r = client.post("/v1/contexts", content=PROTECTED, headers={**JSON, **(headers or {})})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def assert_intact(client: httpx.Client, token: str, headers: dict[str, str] | None = None) -> None:
    """The context still holds PROTECTED byte for byte, at version 1, and the server serves."""
    r = client.get(
        f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache", **(headers or {})}
    )
    assert r.status_code == 200, r.text
    assert r.content == PROTECTED
    assert r.headers["etag"] == '"1"'
    assert client.get("/healthz").status_code == 200


def assert_client_error(r: httpx.Response | RawResponse, *allowed: int) -> None:
    """A 4xx (one of `allowed`, when given): never a 5xx, never a success."""
    status = r.status_code if isinstance(r, httpx.Response) else r.status
    assert status is not None, "the server closed the connection without answering"
    assert 400 <= status < 500, (status, r.content if isinstance(r, httpx.Response) else r.body)
    if allowed:
        assert status in allowed, status


def wire(method: str, target: bytes, headers: dict[bytes, bytes], body: bytes = b"") -> bytes:
    """An HTTP/1.1 request exactly as given: target, header names and values are not checked."""
    lines = [b"%s %s HTTP/1.1" % (method.encode(), target), b"Host: fuzz", b"Connection: close"]
    lines += [b"%s: %s" % item for item in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send_head(base_url: str, head: bytes) -> socket.socket:
    """A connection that has sent `head` (and maybe part of a body), and waits."""
    sock = socket.create_connection(address(base_url), timeout=30.0)
    sock.sendall(head)
    return sock
