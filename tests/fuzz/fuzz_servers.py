"""The servers the hostile-input tests attack (a pytest plugin: `pytest_plugins = [...]`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hostile import HEADER_TIMEOUT, Live, create_protected
from redis import Redis

from support.pool import PROFILES, ServerPool
from support.redis import RedisServer
from support.servers import GranianServer

BACKENDS = ("memory", "redis")


def _live(pool: ServerPool, backend: str, profile: str) -> Iterator[Live]:
    """A client of the session's shared server (its Redis DB is shared too: no key counts)."""
    with httpx.Client(base_url=pool.granian(backend, profile).base_url, timeout=30.0) as client:
        yield Live(str(client.base_url).rstrip("/"), client, None)


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[Live]:
    """A server with the default settings (no API keys)."""
    yield from _live(server_pool, request.param, "default")


@pytest.fixture(scope="module", params=BACKENDS)
def tenant_live(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[Live]:
    """A server with FASTCTX_API_KEYS set: keys of acme and globex."""
    yield from _live(server_pool, request.param, "tenants")


BODY_TIMEOUT = 2  # seconds: FASTCTX_BODY_TIMEOUT of the own_* servers
OWN_DB = {"default": 13, "tenants": 14}  # their Redis DBs, theirs alone


def _own(redis: RedisServer, log_dir: Path, backend: str, profile: str) -> Iterator[Live]:
    """A server of these tests' own, alone on its Redis DB so that key counts are exact."""
    url = "memory://" if backend == "memory" else redis.url(OWN_DB[profile])
    server = GranianServer.start(
        log_dir,
        url,
        body_timeout=BODY_TIMEOUT,
        header_timeout=HEADER_TIMEOUT,
        **PROFILES[profile],
    )
    db = None
    if backend == "redis":
        db = Redis(host=redis.host, port=redis.port, db=OWN_DB[profile])
    try:
        # The server closes a keep-alive connection idle for HEADER_TIMEOUT (it waits that long
        # for the next request's head); a client that kept it longer could send a request just
        # as it closes. Pooled connections expire first, as they should with any client.
        limits = httpx.Limits(keepalive_expiry=HEADER_TIMEOUT / 2)
        with httpx.Client(base_url=server.base_url, timeout=30.0, limits=limits) as client:
            yield Live(server.base_url, client, db)
    finally:
        server.stop()
        if db is not None:
            db.close()


@pytest.fixture(scope="module", params=BACKENDS)
def own_live(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """A server with request bodies due within BODY_TIMEOUT seconds, no API keys."""
    yield from _own(redis_server, tmp_path_factory.mktemp("own"), request.param, "default")


@pytest.fixture(scope="module", params=BACKENDS)
def own_tenant_live(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """As own_live, with the API keys of the `tenants` profile."""
    yield from _own(redis_server, tmp_path_factory.mktemp("own"), request.param, "tenants")


@pytest.fixture
def protected(live: Live) -> str:
    return create_protected(live.client)
