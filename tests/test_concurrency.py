"""Concurrent writes through a real granian server never lose an update."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from support.pool import ServerPool

N = 64


def _client(base_url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0)


def _create(base_url: str, body: object) -> str:
    r = httpx.post(f"{base_url}/v1/contexts", json=body, timeout=30.0)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.mark.parametrize("backend", ["memory", "redis", "cluster"])
def test_concurrent_merge_patches_lose_nothing(server_pool: ServerPool, backend: str) -> None:
    base_url = server_pool.granian(backend).base_url
    token = _create(base_url, {})

    async def run() -> list[httpx.Response]:
        async with _client(base_url) as c:
            return await asyncio.gather(
                *(
                    c.patch(
                        f"/v1/contexts/{token}",
                        content=json.dumps({f"k{i}": i}).encode(),
                        headers={"Content-Type": "application/merge-patch+json"},
                    )
                    for i in range(N)
                )
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses]
    # Every write got its own version: 2..N+1, each exactly once.
    assert sorted(r.json()["version"] for r in responses) == list(range(2, N + 2))
    r = httpx.get(f"{base_url}/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert r.headers["etag"] == f'"{N + 1}"'
    assert r.json() == {f"k{i}": i for i in range(N)}


@pytest.mark.parametrize("backend", ["memory", "redis", "cluster"])
def test_concurrent_json_patch_appends_lose_nothing(server_pool: ServerPool, backend: str) -> None:
    base_url = server_pool.granian(backend).base_url
    token = _create(base_url, {"items": []})

    async def run() -> list[httpx.Response]:
        async with _client(base_url) as c:
            return await asyncio.gather(
                *(
                    c.patch(
                        f"/v1/contexts/{token}",
                        content=json.dumps([{"op": "add", "path": "/items/-", "value": i}]),
                        headers={"Content-Type": "application/json-patch+json"},
                    )
                    for i in range(N)
                )
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * N
    r = httpx.get(f"{base_url}/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert r.headers["etag"] == f'"{N + 1}"'
    assert sorted(r.json()["items"]) == list(range(N))


@pytest.mark.parametrize("backend", ["memory", "redis", "cluster"])
def test_concurrent_appends_lose_nothing(server_pool: ServerPool, backend: str) -> None:
    """The first to arrive creates the array, every other one appends to it."""
    base_url = server_pool.granian(backend).base_url
    token = _create(base_url, {})

    async def run() -> list[httpx.Response]:
        async with _client(base_url) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        f"/v1/contexts/{token}/append",
                        params={"path": "/items"},
                        content=json.dumps([i, -i]),
                        headers={"Content-Type": "application/json"},
                    )
                    for i in range(1, N + 1)
                )
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == list(range(2, N + 2))
    r = httpx.get(f"{base_url}/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert r.headers["etag"] == f'"{N + 1}"'
    items = r.json()["items"]
    assert sorted(items) == sorted([*range(1, N + 1), *range(-N, 0)])
    for i in range(1, N + 1):  # each request's items stay together, in order
        assert items[items.index(i) + 1] == -i


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_concurrent_puts_with_the_same_if_match(server_pool: ServerPool, backend: str) -> None:
    base_url = server_pool.granian(backend).base_url
    token = _create(base_url, {"writer": None})
    writers = 32

    async def run() -> list[httpx.Response]:
        async with _client(base_url) as c:
            return await asyncio.gather(
                *(
                    c.put(f"/v1/contexts/{token}", json={"writer": i}, headers={"If-Match": '"1"'})
                    for i in range(writers)
                )
            )

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * (writers - 1), statuses
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    assert responses[winner].json() == {"token": token, "version": 2}
    r = httpx.get(f"{base_url}/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
    assert r.headers["etag"] == '"2"'
    assert r.json() == {"writer": winner}


@pytest.mark.parametrize("nodes", ["redis_nodes", "cluster_nodes"])
def test_writers_queued_on_two_nodes_lose_nothing(
    request: pytest.FixtureRequest, nodes: str
) -> None:
    """Patches to one context through two nodes at once: each node writes the patches queued on
    it together, and the two nodes' appends race; every patch lands once, in its own version."""
    a, b = request.getfixturevalue(nodes)
    token = _create(a.base_url, {"items": []})

    async def run() -> list[httpx.Response]:
        async with _client(a.base_url) as on_a, _client(b.base_url) as on_b:
            return await asyncio.gather(
                *(
                    (on_a if i % 2 else on_b).patch(
                        f"/v1/contexts/{token}",
                        content=json.dumps([{"op": "add", "path": "/items/-", "value": i}]),
                        headers={"Content-Type": "application/json-patch+json"},
                    )
                    for i in range(N)
                )
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses]
    assert sorted(r.json()["version"] for r in responses) == list(range(2, N + 2))
    for node in (a, b):
        r = httpx.get(f"{node.base_url}/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
        assert r.headers["etag"] == f'"{N + 1}"'
        assert sorted(r.json()["items"]) == list(range(N))
    # The log holds each version's patch, in order: every version since the last fold reads back.
    r = httpx.get(f"{a.base_url}/v1/contexts/{token}/meta")
    oldest = r.json()["oldest_version"]
    for version in range(oldest, N + 2):
        r = httpx.get(f"{b.base_url}/v1/contexts/{token}", params={"version": version})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == version - 1
