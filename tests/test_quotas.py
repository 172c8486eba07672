"""FASTCTX_TENANT_RATE: each tenant's requests a second, across the deployment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from fastctx.backends import Backend
from fastctx.config import Settings
from support.backends import backend_url, started_backend
from support.pool import ServerPool
from support.redis import RedisServer
from support.servers import two_nodes

QUOTAS_DB = 12  # a DB no other test uses
KEYS = "acme:key-acme,globex:key-globex"
ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", (0, {})),
        ("0", (0, {})),
        ("100", (100, {})),
        ("100, acme=500,globex=0", (100, {"acme": 500, "globex": 0})),
        ("acme=5", (0, {"acme": 5})),
    ],
)
def test_the_setting_is_a_rate_and_overrides(text: str, parsed: tuple[int, dict[str, int]]) -> None:
    assert Settings(tenant_rate=text).tenant_rates() == parsed


@pytest.mark.parametrize("text", ["fast", "-1", "1.5", "acme=", "=5", "bad tenant=5", "99999999"])
def test_a_malformed_rate_is_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError, match="TENANT_RATE"):
        Settings(tenant_rate=text)


@pytest.fixture(params=["memory", "redis", "cluster", "valkey"])
async def backend(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[Backend]:
    async with started_backend(backend_url(request, redis_server, QUOTAS_DB)) as opened:
        yield opened


@pytest.mark.anyio
async def test_a_bucket_grants_its_burst_then_its_rate(backend: Backend, request: Any) -> None:
    tenant = f"t{time.monotonic_ns()}"  # a bucket no other run has touched
    quotas = backend.quotas
    assert await quotas.take(tenant, 6, rate=10, burst=10) == (6, 0)
    granted, wait = await quotas.take(tenant, 6, rate=10, burst=10)
    assert granted == 4  # the rest of the burst, no more
    assert 0 < wait <= 100  # the next token comes within a tenth of a second at 10/s
    assert (await quotas.take(tenant, 1, rate=10, burst=10))[0] == 0
    await asyncio.sleep(0.25)
    assert (await quotas.take(tenant, 10, rate=10, burst=10))[0] in (2, 3)
    other = await quotas.take(tenant + "-other", 10, rate=10, burst=10)
    assert other == (10, 0)  # one tenant's bucket is its own


def test_over_its_rate_a_tenant_gets_429_and_the_other_is_untouched(
    start_app: Callable[..., httpx.Client], redis_server: RedisServer
) -> None:
    for transport in ("asgi", "granian"):
        redis_server.cli("-n", str(QUOTAS_DB), "DEL", "fc:r:{acme}")  # a full bucket to start
        client = start_app(
            transport, redis_server.url(QUOTAS_DB), api_keys=KEYS, tenant_rate="1000,acme=1"
        )
        statuses = [client.get("/v1/sessions/" + "0" * 22, headers=ACME).status_code
                    for _ in range(40)]  # fmt: skip
        # The burst (one second's worth: one), and one more if a second passed meanwhile.
        assert statuses[0] == 404
        assert statuses.count(404) in (1, 2)
        assert 429 in statuses
        refused = client.get("/v1/sessions/" + "0" * 22, headers=ACME)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:fastctx:problem:rate-limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 1
        assert refused.headers["ratelimit-policy"] == '"tenant";q=1;w=1'
        assert refused.headers["ratelimit"] == '"tenant";r=0;t=1'
        # The other tenant, at the same moment, on the same node: served.
        assert client.post("/v1/contexts", json={"n": 1}, headers=GLOBEX).status_code == 201
        # Probes and metrics are nobody's requests.
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
        # MCP counts too: the same tenant's budget.
        hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        r = client.post("/mcp", json=hello, headers={**ACME, "Accept": "application/json"})
        assert r.status_code == 429
        time.sleep(1.1)  # the bucket fills again
        assert client.get("/v1/sessions/" + "0" * 22, headers=ACME).status_code == 404


async def _hammer(url: str, headers: dict[str, str], seconds: float) -> list[int]:
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        statuses: list[int] = []
        deadline = time.monotonic() + seconds

        async def one() -> None:
            while time.monotonic() < deadline:
                statuses.append((await client.get("/v1/sessions/" + "0" * 22)).status_code)

        await asyncio.gather(*(one() for _ in range(8)))
    return statuses


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_two_nodes_share_one_rate(kind: str, server_pool: ServerPool, tmp_path: Any) -> None:
    """One tenant hammers two nodes at once: the deployment admits no more than its burst and
    rate allow, and not much less; the other tenant, under its rate, is served throughout."""
    url = server_pool.redis.url(QUOTAS_DB) if kind == "redis" else server_pool.cluster.url
    rate, seconds = 50, 3.0
    with two_nodes(tmp_path, url, api_keys=KEYS, tenant_rate=f"{rate},globex=100000") as (a, b):

        async def run() -> tuple[list[int], list[int], list[int]]:
            return await asyncio.gather(
                _hammer(a.base_url, ACME, seconds),
                _hammer(b.base_url, ACME, seconds),
                _hammer(a.base_url, GLOBEX, seconds),
            )

        through_a, through_b, other = asyncio.run(run())
    admitted = (through_a + through_b).count(404)
    assert set(through_a + through_b) <= {404, 429}
    assert through_a.count(404)  # both nodes admitted some
    assert through_b.count(404)
    assert admitted <= rate + rate * seconds + rate * 0.2  # burst + rate x time (+ clock slack)
    assert admitted >= 0.7 * rate * seconds  # leases left unspent cost little
    assert set(other) == {404}  # the tenant under its rate was never refused
