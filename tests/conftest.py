"""Shared fixtures: real redis-server processes and real fastctx servers (in-process ASGI and
granian). What they stand on lives in tests/support."""

from __future__ import annotations

import contextlib
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.oidc import AuthorizationServer, provider_missing
from support.pool import COMBO_IDS, COMBOS, NODES_DB, TRANSPORTS, ServerPool
from support.processes import Spawned
from support.redis import RedisServer
from support.servers import GranianServer, open_client, two_nodes


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's redis-server; tests share it and keep apart by fresh tokens."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def authorization_server(tmp_path: Path) -> Iterator[AuthorizationServer]:
    """oidc-provider on a free port, the test's own: it may rotate its keys or stop it."""
    missing = provider_missing()
    if missing is not None:
        raise RuntimeError(missing)  # a failure, not a skip: the tests would prove nothing
    server = AuthorizationServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers of the test's own, stopped after it:
    start_redis(*options, stop_signal=signal.SIGTERM, kind="redis"), each in a directory of its
    own; kind="valkey" starts a valkey-server."""
    with contextlib.ExitStack() as stack:

        def start(
            *options: str, stop_signal: signal.Signals = signal.SIGTERM, kind: str = "redis"
        ) -> RedisServer:
            workdir = Path(tempfile.mkdtemp(prefix="redis-", dir=tmp_path))
            server = RedisServer(workdir, options=options, stop_signal=stop_signal, kind=kind)
            return stack.enter_context(server)

        yield start


@pytest.fixture
def private_redis(start_redis: Callable[..., RedisServer]) -> RedisServer:
    """A redis-server of the test's own, which the test may stop (SIGTERM) and start again."""
    return start_redis()


@pytest.fixture
def own_redis(start_redis: Callable[..., RedisServer]) -> RedisServer:
    """A redis-server of the test's own, which it may kill (stop() is SIGKILL, a crash) and
    start again on the same port."""
    return start_redis(stop_signal=signal.SIGKILL)


@pytest.fixture(scope="session")
def server_pool(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerPool]:
    pool = ServerPool(redis_server, tmp_path_factory.mktemp("servers"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=COMBOS, ids=COMBO_IDS)
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(backend, transport) for the contract suite."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def client(server_pool: ServerPool, target: tuple[str, str]) -> httpx.Client:
    """A client of a server with the default settings, for every backend x transport."""
    return server_pool.client(*target, "default")


@pytest.fixture
def tenant_client(server_pool: ServerPool, target: tuple[str, str]) -> httpx.Client:
    """A client of a server with FASTCTX_API_KEYS = acme:key-acme,globex:key-globex."""
    return server_pool.client(*target, "tenants")


@pytest.fixture
def small_client(server_pool: ServerPool, target: tuple[str, str]) -> httpx.Client:
    """A client of a server with FASTCTX_MAX_CONTEXT_BYTES = 4096 and
    FASTCTX_MAX_DOCUMENT_BYTES = 16384."""
    return server_pool.client(*target, "small")


@pytest.fixture(params=TRANSPORTS)
def down_client(server_pool: ServerPool, request: pytest.FixtureRequest) -> httpx.Client:
    """A client of a server whose Redis backend is unreachable."""
    return server_pool.client("down", request.param, "down")


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Any]:
    """Start a server of the test's own: start_app(transport, backend_url, **settings)."""
    with contextlib.ExitStack() as stack:

        def start(transport: str, backend_url: str, **settings: Any) -> httpx.Client:
            return open_client(stack, transport, backend_url, tmp_path, **settings)[0]

        yield start


@pytest.fixture
def spawn_fastctx(tmp_path: Path) -> Iterator[Any]:
    """Start `fastctx <args>` with exactly the given FASTCTX_* settings; stopped after the test."""
    started: list[Spawned] = []

    def spawn(*args: str, **settings: Any) -> Spawned:
        log = tmp_path / f"fastctx-{len(started)}.log"
        started.append(Spawned.start(args, log, tmp_path, **settings))
        return started[-1]

    yield spawn
    for spawned in started:
        spawned.stop()


@pytest.fixture(scope="session")
def redis_nodes(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GranianServer, GranianServer]]:
    """Two `fastctx serve` processes (granian) on the same Redis database."""
    with two_nodes(tmp_path_factory.mktemp("nodes"), redis_server.url(NODES_DB)) as nodes:
        yield nodes


@pytest.fixture(params=["redis", "valkey"])
def shared_nodes(request: pytest.FixtureRequest) -> tuple[GranianServer, GranianServer]:
    """Two nodes on one Redis, then two on one Valkey: what crosses nodes, on both servers."""
    nodes: tuple[GranianServer, GranianServer] = request.getfixturevalue(f"{request.param}_nodes")
    return nodes


@pytest.fixture(scope="session")
def valkey_nodes(
    server_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GranianServer, GranianServer]]:
    """Two `fastctx serve` processes (granian) on the session's valkey-server."""
    url = server_pool.valkey.url(NODES_DB)
    with two_nodes(tmp_path_factory.mktemp("valkey-nodes"), url) as nodes:
        yield nodes


@pytest.fixture(scope="session")
def cluster_nodes(
    server_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GranianServer, GranianServer]]:
    """Two `fastctx serve` processes (granian) on the session's Redis Cluster."""
    with two_nodes(tmp_path_factory.mktemp("cluster-nodes"), server_pool.cluster.url) as nodes:
        yield nodes
