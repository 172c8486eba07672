"""FASTCTX_TENANT_RATE and FASTCTX_TENANT_BYTES: each tenant's requests a second and the bytes
it keeps stored, across the deployment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

import fastctx
from fastctx.backends import Backend
from fastctx.config import Settings
from support.backends import backend_url, started_backend
from support.mcp_calls import tool_call
from support.pool import ServerPool
from support.redis import RedisServer
from support.servers import GranianServer, two_nodes

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
def test_each_setting_is_a_bound_and_overrides(
    text: str, parsed: tuple[int, dict[str, int]]
) -> None:
    assert Settings(tenant_rate=text).tenant_rates() == parsed
    assert Settings(tenant_bytes=text).tenant_quotas() == parsed


@pytest.mark.parametrize("text", ["fast", "-1", "1.5", "acme=", "=5", "bad tenant=5", "99999999"])
def test_a_malformed_rate_is_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError, match="TENANT_RATE"):
        Settings(tenant_rate=text)


@pytest.mark.parametrize("text", ["big", "-1", "1e6", "acme=", "=5", "bad tenant=5", str(1 << 51)])
def test_a_malformed_storage_quota_is_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError, match="TENANT_BYTES"):
        Settings(tenant_bytes=text)


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
        started = time.monotonic()
        statuses = [client.get("/v1/sessions/" + "0" * 22, headers=ACME).status_code
                    for _ in range(40)]  # fmt: skip
        elapsed = time.monotonic() - started
        # The burst (one second's worth: one), and one more for each second that passed.
        assert statuses[0] == 404
        assert 1 <= statuses.count(404) <= 2 + int(elapsed)
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


@pytest.mark.anyio
async def test_a_tenants_kept_bytes_are_counted_context_by_context(backend: Backend) -> None:
    tenant = f"t{time.monotonic_ns()}"
    keep = backend.quotas.keep
    now = 1_000_000
    later = now + 60_000
    assert await keep(tenant, 100, [("a", 60, later)], now) == (True, 60)
    assert await keep(tenant, 100, [("b", 50, later)], now) == (False, 60)  # would be 110
    assert await keep(tenant, 100, [("a", 70, later)], now) == (True, 70)  # a grows by 10
    assert await keep(tenant, 100, [("b", 30, later)], now) == (True, 100)  # exactly the quota
    assert await keep(tenant, 100, [("b", 31, later)], now) == (False, 100)
    assert await keep(tenant, 100, [("a", 10, later)], now) == (True, 40)  # shrinking passes
    # Over the quota already (it was lowered): what adds is refused, what shrinks passes.
    assert await keep(tenant, 20, [("b", 31, later)], now) == (False, 40)
    assert await keep(tenant, 20, [("b", 29, later)], now) == (True, 39)
    assert await keep(tenant, 0, [("a", 0, 0), ("b", 0, 0)], now) == (True, 0)  # deleted
    # A context stops counting when it expires; another one, written again, counts once.
    assert await keep(tenant, 100, [("c", 40, now + 10)], now) == (True, 40)
    assert await keep(tenant, 100, [("d", 50, later)], now) == (True, 90)
    assert await keep(tenant, 100, [("d", 50, later)], now) == (True, 90)
    assert await keep(tenant, 100, [("e", 50, later)], now + 10) == (True, 100)
    assert await keep(tenant + "-other", 100, [("a", 100, later)], now) == (True, 100)
    # A delete of a context never counted changes nothing.
    assert await keep(tenant, 100, [("z", 0, 0)], now + 10) == (True, 100)


BYTES_DB = 13  # a DB of its own, so that the counts start from nothing
BIG = {"pad": "x" * 300}  # about 310 bytes of JSON


def _empty_nodes(redis_server: RedisServer) -> Iterator[tuple[str, str]]:
    """In process on memory://, then through granian on Redis, each with nothing counted yet."""
    yield "asgi", "memory://"
    redis_server.cli("-n", str(BYTES_DB), "FLUSHDB")
    yield "granian", redis_server.url(BYTES_DB)


def _problem(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["type"]).removeprefix("urn:fastctx:problem:")


def test_over_its_storage_quota_a_write_is_refused_and_changes_nothing(
    start_app: Callable[..., httpx.Client], redis_server: RedisServer
) -> None:
    for transport, backend in _empty_nodes(redis_server):
        client = start_app(transport, backend, api_keys=KEYS, tenant_bytes="0,acme=1000")
        tokens = []
        for _ in range(3):  # three of about 310 bytes fit in 1000
            created = client.post("/v1/contexts", json=BIG, headers=ACME)
            assert created.status_code == 201
            tokens.append(created.json()["token"])
        refused = client.post("/v1/contexts", json=BIG, headers=ACME)
        assert refused.status_code == 413
        assert _problem(refused) == "storage-quota-exceeded"
        assert "1000" in refused.json()["detail"]
        # A patch that grows a context is refused, and the context is as it was.
        grow = {"more": "y" * 200}
        patched = client.patch(
            f"/v1/contexts/{tokens[0]}",
            json=grow,
            headers={**ACME, "Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 413
        assert _problem(patched) == "storage-quota-exceeded"
        kept = client.get(f"/v1/contexts/{tokens[0]}", headers=ACME)
        assert kept.json() == BIG
        assert kept.headers["etag"] == '"1"'
        put = client.put(f"/v1/contexts/{tokens[1]}", json={**BIG, **grow}, headers=ACME)
        assert put.status_code == 413
        # A tenant without a quota is not held back by acme's.
        for _ in range(5):
            assert client.post("/v1/contexts", json=BIG, headers=GLOBEX).status_code == 201
        # Writes that shrink pass; so does a delete, which makes room.
        small = client.put(f"/v1/contexts/{tokens[1]}", json={"n": 1}, headers=ACME)
        assert small.status_code == 200
        assert client.delete(f"/v1/contexts/{tokens[2]}", headers=ACME).status_code == 204
        for _ in range(2):  # 310 + 310 + a few bytes
            assert client.post("/v1/contexts", json=BIG, headers=ACME).status_code == 201
        assert client.post("/v1/contexts", json=BIG, headers=ACME).status_code == 413
        # MCP writes are the same tenant's.
        result = _mcp_create(client, BIG)
        assert result["isError"] is True
        assert "storage quota exceeded" in result["content"][0]["text"]


def _mcp_create(client: httpx.Client, document: object) -> dict[str, Any]:
    """tools/call context_create, in the 2026-07-28 era (no session)."""
    call, headers = tool_call("context_create", {"data": document})
    response = client.post("/mcp", json=call, headers={**ACME, **headers})
    assert response.status_code == 200, response.text
    return dict(response.json()["result"])


def test_contexts_that_expire_or_leave_with_their_session_make_room(
    start_app: Callable[..., httpx.Client], redis_server: RedisServer
) -> None:
    for transport, backend in _empty_nodes(redis_server):
        client = start_app(transport, backend, api_keys=KEYS, tenant_bytes="700")
        session = client.post("/v1/sessions", json={}, headers=ACME).json()["session"]
        in_session = f"/v1/contexts?session={session}"
        assert client.post(in_session, json=BIG, headers=ACME).status_code == 201
        assert client.post("/v1/contexts?ttl=1", json=BIG, headers=ACME).status_code == 201
        assert client.post("/v1/contexts", json=BIG, headers=ACME).status_code == 413
        time.sleep(1.2)  # the second one expires
        assert client.post("/v1/contexts", json=BIG, headers=ACME).status_code == 201
        assert client.post("/v1/contexts", json=BIG, headers=ACME).status_code == 413
        assert client.delete(f"/v1/sessions/{session}", headers=ACME).status_code == 204
        assert client.post("/v1/contexts", json=BIG, headers=ACME).status_code == 201


@pytest.mark.parametrize("kind", ["redis", "cluster"])
def test_two_nodes_share_one_storage_quota(
    kind: str, server_pool: ServerPool, tmp_path: Any
) -> None:
    """What one node stores counts on the other: the quota is the tenant's, not a node's."""
    url = server_pool.redis.url(BYTES_DB) if kind == "redis" else server_pool.cluster.url
    tenant = f"q{time.monotonic_ns()}"  # counted from nothing on a shared server
    keys = f"{tenant}:key-{tenant}"
    headers = {"Authorization": f"Bearer key-{tenant}"}
    with (
        two_nodes(tmp_path, url, api_keys=keys, tenant_bytes="1000") as (a, b),
        httpx.Client(headers=headers) as client,
    ):
        statuses = [
            client.post(f"{node.base_url}/v1/contexts", json=BIG).status_code
            for node in (a, b, a, b)
        ]
        assert statuses == [201, 201, 201, 413]
        # What is left (about 70 bytes) still takes a small context, through either node.
        assert client.post(f"{b.base_url}/v1/contexts", json={"n": 1}).status_code == 201


def test_the_client_raises_what_the_quotas_answer(
    start_app: Callable[..., httpx.Client], redis_server: RedisServer
) -> None:
    redis_server.cli("-n", str(BYTES_DB), "FLUSHDB")
    settings = {"api_keys": KEYS, "tenant_rate": "0,globex=1", "tenant_bytes": "0,acme=400"}
    served = start_app("granian", redis_server.url(BYTES_DB), **settings)
    with fastctx.Client(str(served.base_url), api_key="key-acme") as acme:
        token = acme.create(BIG)
        with pytest.raises(fastctx.StorageQuotaExceeded) as refused:
            acme.create(BIG)
        assert refused.value.status == 413
        assert acme.get(token) == BIG  # nothing changed
    with fastctx.Client(str(served.base_url), api_key="key-globex") as globex:
        globex.create({"n": 1})  # its burst: one
        with pytest.raises(fastctx.RateLimited) as limited:
            globex.create({"n": 2})
        assert limited.value.retry_after == 1


def test_with_redis_gone_a_bounded_tenant_still_gets_its_stale_reads(
    own_redis: RedisServer, tmp_path: Any
) -> None:
    """The bucket is out of reach with Redis: the node holds the tenant to its rate by itself
    rather than refuse what it can still serve."""
    server = GranianServer.start(
        tmp_path, own_redis.url(), api_keys=KEYS, tenant_rate="1000", backend_timeout=0.5
    )
    try:
        with httpx.Client(base_url=server.base_url, headers=ACME, timeout=10) as client:
            token = client.post("/v1/contexts", json={"n": 1}).json()["token"]
            assert client.get(f"/v1/contexts/{token}").status_code == 200
            own_redis.stop()
            time.sleep(1.1)  # the lease has lapsed: the next request would ask the bucket
            answers = [client.get(f"/v1/contexts/{token}") for _ in range(5)]
            assert [r.status_code for r in answers] == [200] * 5
            assert {r.headers["x-cache"] for r in answers} == {"stale"}
            # What needs Redis is 503 as ever, not a 429.
            assert client.post("/v1/contexts", json={"n": 2}).status_code == 503
    finally:
        server.stop()
