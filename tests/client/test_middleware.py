"""fastctx.middleware.ContextMiddleware in a Starlette app, against real granian servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from test_client_cache import Reads

from fastctx import Client
from fastctx.middleware import (
    ContextMiddleware,
    apropagate,
    current_token,
    propagation_headers,
    token_from_headers,
)
from support.pool import ServerPool
from support.redis import RedisServer
from support.servers import GranianServer

if TYPE_CHECKING:
    # What starlette's TestClient answers with (it speaks httpx2 when installed).
    from httpx2 import Response

UNKNOWN = "0" * 22
DOCUMENT = {"order": 42, "items": ["a", "b"]}


@pytest.fixture(params=["memory", "redis"])
def base_url(server_pool: ServerPool, request: pytest.FixtureRequest) -> str:
    url: str = server_pool.granian(request.param).base_url
    return url


@pytest.fixture
def token(base_url: str) -> Iterator[str]:
    with Client(base_url) as fc:
        token = fc.create(DOCUMENT, ttl=60)
        yield token
        fc.delete(token)


async def show(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "context": request.state.context,
            "token": current_token(),
            "headers": propagation_headers(),
        }
    )


def threaded(request: Request) -> JSONResponse:
    # Starlette runs a sync endpoint in a worker thread: the token must follow it there.
    return JSONResponse({"token": current_token()})


def make_app(base_url: str, **options: Any) -> Starlette:
    routes = [Route("/", show), Route("/threaded", threaded)]
    return Starlette(
        routes=routes, middleware=[Middleware(ContextMiddleware, base_url=base_url, **options)]
    )


def call(base_url: str, headers: dict[str, str] | None = None, **options: Any) -> Response:
    # Entered, so that one event loop serves every request and lifespan closes the client.
    with TestClient(make_app(base_url, **options)) as tc:
        return tc.get("/", headers=headers)


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    return problem


def test_header_token_loads_the_context(base_url: str, token: str) -> None:
    response = call(base_url, {"Context-Token": token})
    assert response.status_code == 200
    assert response.json() == {
        "context": DOCUMENT,
        "token": token,
        "headers": {"Context-Token": token},
    }


def test_baggage_member_carries_the_token(base_url: str, token: str) -> None:
    response = call(base_url, {"baggage": f"userId=alice, fastctx={token};prop=1"})
    assert response.status_code == 200
    assert response.json()["context"] == DOCUMENT
    assert response.json()["token"] == token


def test_header_wins_over_baggage(base_url: str, token: str) -> None:
    response = call(base_url, {"Context-Token": token, "baggage": f"fastctx={UNKNOWN}"})
    assert response.json()["context"] == DOCUMENT


def test_no_token_passes_with_none(base_url: str) -> None:
    response = call(base_url, {"baggage": "userId=alice"})
    assert response.status_code == 200
    assert response.json() == {"context": None, "token": None, "headers": {}}


def test_no_token_is_400_when_required(base_url: str) -> None:
    problem = assert_problem(call(base_url, required=True), 400)
    assert problem["type"] == "urn:fastctx:problem:bad-request"


@pytest.mark.parametrize(
    "headers",
    [{"Context-Token": "not-a-token"}, {"Context-Token": ""}, {"baggage": "fastctx=abc"}],
    ids=["header", "empty", "baggage"],
)
def test_malformed_token_is_400(base_url: str, headers: dict[str, str]) -> None:
    assert_problem(call(base_url, headers), 400)


def test_unknown_token_is_404(base_url: str) -> None:
    problem = assert_problem(call(base_url, {"Context-Token": UNKNOWN}), 404)
    assert problem["type"] == "urn:fastctx:problem:not-found"


def test_unknown_token_ignored_when_configured(base_url: str) -> None:
    response = call(base_url, {"Context-Token": UNKNOWN}, on_missing="ignore")
    assert response.status_code == 200
    assert response.json()["context"] is None


def test_token_follows_sync_endpoints_and_is_reset(base_url: str, token: str) -> None:
    with TestClient(make_app(base_url)) as tc:
        assert tc.get("/threaded", headers={"Context-Token": token}).json() == {"token": token}
        assert tc.get("/threaded").json() == {"token": None}
    assert current_token() is None


def test_outgoing_calls_propagate_the_token(base_url: str, token: str) -> None:
    # A downstream service with the same middleware, reached through an httpx client that
    # carries the propagation hook: it must load the same context from the token alone.
    downstream = ContextMiddleware(Starlette(routes=[Route("/", show)]), base_url=base_url)

    async def upstream_view(request: Request) -> JSONResponse:
        transport = httpx.ASGITransport(app=downstream)
        hooks = {"request": [apropagate]}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://downstream", event_hooks=hooks
        ) as http:
            answer = await http.get("/")
        # ASGITransport runs no lifespan, so nothing else closes the downstream's client.
        await downstream.client.close()
        return JSONResponse(answer.json(), answer.status_code)

    upstream = Starlette(
        routes=[Route("/", upstream_view)],
        middleware=[Middleware(ContextMiddleware, base_url=base_url)],
    )
    with TestClient(upstream) as tc:
        response = tc.get("/", headers={"baggage": f"fastctx={token}"})
    assert response.status_code == 200
    assert response.json()["context"] == DOCUMENT
    assert response.json()["token"] == token


def test_fastctx_down_is_503(server_pool: ServerPool) -> None:
    down = server_pool.granian("down", "down").base_url
    problem = assert_problem(call(down, {"Context-Token": UNKNOWN}, retries=0), 503)
    assert problem["type"] == "urn:fastctx:problem:unavailable"


def test_fastctx_unreachable_is_503() -> None:
    # Nothing listens on port 9 of localhost: the connection itself fails.
    response = call("http://127.0.0.1:9", {"Context-Token": UNKNOWN}, retries=0)
    assert "retry-after" in response.headers
    assert_problem(response, 503)


def test_token_from_headers_parses_baggage() -> None:
    token = "A" * 22
    assert token_from_headers([(b"baggage", f"a=1,fastctx = {token} ;p=1".encode())]) == token
    assert token_from_headers([(b"baggage", b"a=1"), (b"Baggage", f"fastctx={token}".encode())])
    assert token_from_headers([(b"baggage", b"fastctxx=1,x=fastctx")]) is None


def assert_bad_gateway(response: Response) -> dict[str, Any]:
    problem = assert_problem(response, 502)
    assert problem["type"] == "urn:fastctx:problem:bad-gateway"
    assert problem["detail"].startswith("fastctx: ")
    assert "retry-after" not in response.headers
    return problem


def test_stopped_server_is_503(tmp_path: Path) -> None:
    server = GranianServer.start(tmp_path, "memory://")
    try:
        with Client(server.base_url) as fc:
            token = fc.create(DOCUMENT)
        with TestClient(make_app(server.base_url, retries=0)) as tc:
            assert tc.get("/", headers={"Context-Token": token}).json()["context"] == DOCUMENT
            server.stop()  # the port is now one nobody listens on
            response = tc.get("/", headers={"Context-Token": token})
    finally:
        server.stop()
    problem = assert_problem(response, 503)
    assert problem["type"] == "urn:fastctx:problem:unavailable"
    assert "cannot reach" in problem["detail"]
    assert int(response.headers["retry-after"]) >= 0


def test_redis_down_serves_cached_contexts_and_503_for_others(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    server = GranianServer.start(tmp_path, own_redis.url())
    try:
        with Client(server.base_url) as fc:
            held = fc.create(DOCUMENT)
            fc.get(held)  # now in the server's in-process cache
        with TestClient(make_app(server.base_url, retries=0)) as tc:
            own_redis.stop()
            # What the server's cache still holds it answers (X-Cache: stale): the request
            # goes through with its context.
            loaded = tc.get("/", headers={"Context-Token": held})
            unknown = tc.get("/", headers={"Context-Token": UNKNOWN})
    finally:
        server.stop()
    assert loaded.status_code == 200
    assert loaded.json()["context"] == DOCUMENT
    problem = assert_problem(unknown, 503)
    assert problem["type"] == "urn:fastctx:problem:unavailable"
    assert problem["detail"].startswith("fastctx: ")
    assert int(unknown.headers["retry-after"]) >= 1


class NotFastctx(BaseHTTPRequestHandler):
    """A real HTTP server that is not fastctx: a wrong base_url, or a proxy in front of it."""

    answer: ClassVar[tuple[int, str, bytes]] = (200, "text/plain", b"")

    def do_GET(self) -> None:
        status, content_type, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 301:
            self.send_header("Location", "/login")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def not_fastctx() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFastctx)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


PROBLEM_500 = b'{"type":"urn:fastctx:problem:internal-error","status":500,"detail":"it broke"}'
HTML = "text/html"


@pytest.mark.parametrize(
    "answer",
    [
        (500, "application/problem+json", PROBLEM_500),
        (500, HTML, b"<h1>Internal Server Error</h1>"),
        (502, HTML, b"<html>502 Bad Gateway</html>"),
        (504, HTML, b"<html>504 Gateway Time-out</html>"),
        (200, HTML, b"<html>a web page</html>"),
        (200, "application/json", b'{"truncated":'),
        (301, HTML, b"moved"),
        (304, HTML, b""),
    ],
    ids=["500-problem", "500-html", "502", "504", "200-html", "200-bad-json", "301", "304"],
)
def test_fastctx_failing_otherwise_is_502(not_fastctx: str, answer: tuple[int, str, bytes]) -> None:
    NotFastctx.answer = answer
    problem = assert_bad_gateway(call(not_fastctx, {"Context-Token": UNKNOWN}, retries=0))
    status = answer[0]
    if answer[2] == PROBLEM_500:
        assert problem["detail"] == "fastctx: it broke"
    elif status >= 400:
        assert answer[2].decode() in problem["detail"]  # what the other server said
    else:
        assert problem["detail"].startswith("fastctx: not a fastctx answer: HTTP ")


def test_rejected_api_key_is_502(server_pool: ServerPool) -> None:
    url = server_pool.granian("memory", "tenants").base_url
    problem = assert_bad_gateway(call(url, {"Context-Token": UNKNOWN}, api_key="wrong"))
    assert "Authorization" in problem["detail"]


def test_cache_size_revalidates_between_requests(base_url: str, token: str) -> None:
    reads = Reads(base_url)
    with TestClient(make_app(base_url, cache_size=16)) as tc:
        for _ in range(3):
            response = tc.get("/", headers={"Context-Token": token})
            assert response.json()["context"] == DOCUMENT
    assert reads.delta() == {"200": 1, "304": 2}
