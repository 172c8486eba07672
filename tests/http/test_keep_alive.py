"""A refusal sent before the request's body was read closes the connection, and says so.

granian does not read a body the app left unread to reuse the connection: without
`Connection: close`, a client would send its next request into a connection that is closing
and get no answer (what httpx reports as "Server disconnected without sending a response").
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from support.pool import ServerPool

pytestmark = pytest.mark.parametrize("backend", ["memory", "redis"])


def _connect(base_url: str) -> socket.socket:
    url = urlsplit(base_url)
    return socket.create_connection((url.hostname, url.port), timeout=10)


def _head(sock: socket.socket, request: bytes) -> bytes:
    """Send `request` (a head, perhaps without its body) and read the response's head."""
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return received.split(b"\r\n\r\n", 1)[0].lower()


def test_a_refusal_before_the_body_is_read_says_connection_close(
    server_pool: ServerPool, backend: str
) -> None:
    base = server_pool.granian(backend).base_url
    # The head alone: the body is still to come when the answer is chosen.
    cases = [
        b"PUT /v1/sessions/x HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\n\r\n",  # 405
        b"PATCH /v1/contexts/0123456789abcdefABCDEF HTTP/1.1\r\nhost: t\r\n"
        b"content-type: text/plain\r\ncontent-length: 2\r\n\r\n",  # 415
        b"POST /v1/contexts HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\n"
        b"transfer-encoding: chunked\r\n\r\n",  # 415
        b"POST /mcp HTTP/1.1\r\nhost: t\r\norigin: https://elsewhere.example\r\n"
        b"content-type: application/json\r\ncontent-length: 40\r\n\r\n",  # 403
    ]
    for request in cases:
        with _connect(base) as sock:
            head = _head(sock, request)
            assert head.startswith(b"http/1.1 4"), head
            assert b"\r\nconnection: close" in head, head


def test_a_refusal_after_the_body_was_read_keeps_the_connection(
    server_pool: ServerPool, backend: str
) -> None:
    base = server_pool.granian(backend).base_url
    with _connect(base) as sock:
        head = _head(
            sock,
            b"POST /v1/contexts HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"content-length: 3\r\n\r\n{x}",  # read whole, then refused: 400
        )
        assert head.startswith(b"http/1.1 400"), head
        assert b"connection: close" not in head
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    with _connect(base) as sock:
        head = _head(sock, b"GET /v1/contexts/nope HTTP/1.1\r\nhost: t\r\n\r\n")
        assert head.startswith(b"http/1.1 404")
        assert b"connection: close" not in head
