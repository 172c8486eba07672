"""fastctx.middleware.ContextMiddleware in a Starlette app, against real granian servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from conftest import ServerPool
from fastctx import Client
from fastctx.middleware import (
    ContextMiddleware,
    apropagate,
    current_token,
    propagation_headers,
    token_from_headers,
)

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
