"""Client.watch and AsyncClient.watch: the live document, on every backend, across two nodes;
the async client in process as well as over granian."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from test_client_sync import requests_seen

from fastctx import AsyncClient, Client, NotFound
from support.asgi import app_client
from support.pool import node_urls

BACKENDS = ("memory", "redis", "cluster")
ASYNC_COMBOS = [(b, t) for b in BACKENDS for t in ("asgi", "granian")]
WAIT = 10.0
# Merge patches, JSON Patches and PUTs, as `write` sends them.
WRITES: list[tuple[str, Any]] = [
    ("merge", {"a": 1, "nested": {"x": "y"}}),
    ("json", [{"op": "add", "path": "/list", "value": [1, 2]}]),
    ("put", {"replaced": True, "text": "a line\u2028and another"}),
    ("json", [{"op": "copy", "from": "/text", "path": "/copy"}]),
    ("merge", {"replaced": None, "n": 2.5}),
    ("put", [1, "two"]),
    ("json", [{"op": "add", "path": "/-", "value": {"three": 3}}]),
    ("merge", {"object": "again"}),
]


def write(client: httpx.Client, token: str, kind: str, body: Any) -> int:
    content = json.dumps(body).encode()
    types = {
        "put": "application/json",
        "merge": "application/merge-patch+json",
        "json": "application/json-patch+json",
    }
    method = "PUT" if kind == "put" else "PATCH"
    reply = client.request(
        method, f"/v1/contexts/{token}", content=content, headers={"Content-Type": types[kind]}
    )
    assert reply.status_code == 200, reply.text
    version: int = reply.json()["version"]
    return version


def document(client: httpx.Client, token: str) -> tuple[Any, int]:
    reply = client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert reply.status_code == 200, reply.text
    return reply.json(), int(reply.headers["etag"].strip('"'))


# --- the blocking client, over granian ----------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def nodes(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, Client]]:
    """(a writer on one node, a fastctx.Client of the other)."""
    urls = node_urls(request, request.param, "granian")
    with httpx.Client(base_url=urls[0], timeout=WAIT) as writer, Client(urls[-1]) as fc:
        yield writer, fc


def test_watch_yields_the_live_document_in_order(nodes: tuple[httpx.Client, Client]) -> None:
    """One write at a time: each is applied from its event's patch, with no read but the first."""
    writer, fc = nodes
    token = writer.post("/v1/contexts", json={"start": 0}).json()["token"]
    reads = requests_seen(fc.base_url, "/v1/contexts/{token}", "GET")
    with fc.watch(token) as live:
        assert next(live) == {"start": 0}
        assert live.version == 1
        for kind, body in WRITES:
            version = write(writer, token, kind, body)
            assert next(live) == document(writer, token)[0]
            assert live.version == version
        writer.delete(f"/v1/contexts/{token}")
        assert list(live) == []  # it ends with the context
    same_node = str(writer.base_url).rstrip("/") == fc.base_url
    expected = 1 + (len(WRITES) if same_node else 0)  # the writer's own reads, if there
    assert requests_seen(fc.base_url, "/v1/contexts/{token}", "GET") - reads == expected


def test_watch_recovers_after_a_dropped_connection(nodes: tuple[httpx.Client, Client]) -> None:
    writer, fc = nodes
    token = writer.post("/v1/contexts", json={"start": 0}).json()["token"]
    live = fc.watch(token)
    assert next(live) == {"start": 0}
    for kind, body in WRITES[:3]:
        write(writer, token, kind, body)
        next(live)
    assert live.stream is not None
    assert live.stream.response is not None
    live.stream.response.close()  # the connection drops; these writes happen while it is down
    for kind, body in WRITES[3:]:
        last = write(writer, token, kind, body)
    seen = []
    while live.version < last:
        seen.append((live.version, next(live)))
    assert [v for v, _ in seen] == sorted({v for v, _ in seen})  # in order, none twice
    assert seen[-1][1] == document(writer, token)[0]
    live.close()


def test_watch_of_an_unknown_context_is_not_found(nodes: tuple[httpx.Client, Client]) -> None:
    _, fc = nodes
    with pytest.raises(NotFound):
        next(fc.watch("0" * 22))


def test_watch_ends_when_the_context_expires(nodes: tuple[httpx.Client, Client]) -> None:
    writer, fc = nodes
    token = writer.post("/v1/contexts?ttl=1", json={"n": 0}).json()["token"]
    ended = threading.Event()

    def follow() -> None:
        with fc.watch(token) as live:
            assert list(live) == [{"n": 0}]
        ended.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert ended.wait(WAIT)


# --- the async client, in process and over granian ----------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=ASYNC_COMBOS, ids=[f"{b}-{t}" for b, t in ASYNC_COMBOS])
def where(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    backend, transport = request.param
    return transport, node_urls(request, backend, transport)


@pytest.fixture
async def async_nodes(
    where: tuple[str, list[str]],
) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncClient]]:
    """(a writer on one node, a fastctx.AsyncClient of the other)."""
    transport, urls = where
    async with contextlib.AsyncExitStack() as stack:
        https = []
        for url in urls:
            if transport == "granian":
                opened = httpx.AsyncClient(base_url=url, timeout=WAIT)
                https.append(await stack.enter_async_context(opened))
            else:
                https.append(await stack.enter_async_context(app_client(url)))
        fc = await stack.enter_async_context(AsyncClient(str(https[-1].base_url)))
        if transport == "asgi":
            await fc.http.aclose()
            fc.http = https[-1]  # the in-process app's transport
        yield https[0], fc


async def awrite(client: httpx.AsyncClient, token: str, kind: str, body: Any) -> int:
    content = json.dumps(body).encode()
    types = {
        "put": "application/json",
        "merge": "application/merge-patch+json",
        "json": "application/json-patch+json",
    }
    method = "PUT" if kind == "put" else "PATCH"
    reply = await client.request(
        method, f"/v1/contexts/{token}", content=content, headers={"Content-Type": types[kind]}
    )
    assert reply.status_code == 200, reply.text
    version: int = reply.json()["version"]
    return version


async def adocument(client: httpx.AsyncClient, token: str) -> Any:
    reply = await client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert reply.status_code == 200, reply.text
    return reply.json()


pytest_async = pytest.mark.anyio


@pytest_async
async def test_async_watch_yields_the_live_document_in_order(
    async_nodes: tuple[httpx.AsyncClient, AsyncClient],
) -> None:
    writer, fc = async_nodes
    token = (await writer.post("/v1/contexts", json={"start": 0})).json()["token"]
    with anyio.fail_after(WAIT):
        async with fc.watch(token) as live:
            assert await anext(live) == {"start": 0}
            for kind, body in WRITES:
                version = await awrite(writer, token, kind, body)
                assert await anext(live) == await adocument(writer, token)
                assert live.version == version
            await writer.delete(f"/v1/contexts/{token}")
            assert [doc async for doc in live] == []


@pytest_async
async def test_async_watch_converges_after_a_burst_of_writes(
    async_nodes: tuple[httpx.AsyncClient, AsyncClient],
) -> None:
    """Writes faster than the events go out: whatever it applies or reads again, it hands out
    versions in order and ends with the document exactly."""
    writer, fc = async_nodes
    token = (await writer.post("/v1/contexts", json={"start": 0})).json()["token"]
    versions: list[int] = []
    with anyio.fail_after(WAIT):
        async with fc.watch(token) as live:
            assert await anext(live) == {"start": 0}
            for kind, body in WRITES * 3:
                last = await awrite(writer, token, kind, body)
            final = None
            async for doc in live:
                versions.append(live.version)
                if live.version == last:
                    final = doc
                    break
    assert versions == sorted(set(versions))
    assert final == await adocument(writer, token)


@pytest_async
async def test_async_watch_recovers_after_a_dropped_connection(
    async_nodes: tuple[httpx.AsyncClient, AsyncClient],
) -> None:
    writer, fc = async_nodes
    token = (await writer.post("/v1/contexts", json={"start": 0})).json()["token"]
    with anyio.fail_after(WAIT):
        live = fc.watch(token)
        assert await anext(live) == {"start": 0}
        await awrite(writer, token, *WRITES[0])
        await anext(live)
        assert live.stream is not None
        assert live.stream.response is not None
        await live.stream.response.aclose()  # the connection drops; writes go on meanwhile
        for kind, body in WRITES[1:]:
            last = await awrite(writer, token, kind, body)
        seen = [live.version]
        while live.version < last:
            doc = await anext(live)
            seen.append(live.version)
        await live.aclose()
    assert seen == sorted(set(seen))
    assert doc == await adocument(writer, token)
