"""Shared fixtures: a real redis-server and real fastctx servers (in-process ASGI and granian)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
FASTCTX_BIN = Path(sys.executable).with_name("fastctx")

BACKENDS = ("memory", "redis", "cluster")
TRANSPORTS = ("asgi", "granian")
COMBOS = [(b, t) for b in BACKENDS for t in TRANSPORTS]
COMBO_IDS = [f"{b}-{t}" for b, t in COMBOS]

# Settings per configuration profile; the same values go to Settings(...) and to FASTCTX_* env.
API_KEYS = "acme:key-acme,globex:key-globex"
SMALL_MAX_BYTES = 4096
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "tenants": {"api_keys": API_KEYS},
    "small": {"max_context_bytes": SMALL_MAX_BYTES},
}
# Each profile gets its own Redis DB so that configurations never see each other's keys.
REDIS_DB = {"default": 0, "tenants": 1, "small": 2}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**settings: Any) -> dict[str, str]:
    """The current environment without any FASTCTX_* variable, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCTX_")}
    for name, value in settings.items():
        env[f"FASTCTX_{name.upper()}"] = str(value)
    return env


def metric(client: httpx.Client, name: str) -> float:
    """One sample of /metrics, by its full name (a counter's ends in _total)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_healthy(
    base_url: str, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float = 30.0
) -> None:
    """Poll GET /healthz until it answers 200; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"server exited with {proc.returncode} before ready:\n{out}")
        try:
            r = httpx.get(f"{base_url}/healthz", timeout=1.0)
            if r.status_code == 200:
                return
            last = f"status {r.status_code}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    out = log.read_text(errors="replace") if log else ""
    raise RuntimeError(f"server at {base_url} not healthy after {timeout}s ({last}):\n{out}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the process we started, then SIGKILL its own process group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    return proc.returncode


@dataclass
class GranianServer:
    """A `fastctx serve` subprocess (granian) on a free port."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path
    _log_file: Any = field(repr=False)

    @classmethod
    def start(cls, log_dir: Path, backend: str, **settings: Any) -> GranianServer:
        port = free_port()
        log = log_dir / f"granian-{port}.log"
        log_file = log.open("wb")
        env = clean_env(host="127.0.0.1", log_level="warning", **settings)
        proc = subprocess.Popen(
            [str(FASTCTX_BIN), "serve", "--port", str(port), "--backend", backend],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
            start_new_session=True,
        )
        server = cls(proc, f"http://127.0.0.1:{port}", log, log_file)
        try:
            wait_healthy(server.base_url, proc, log)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        stop_process(self.proc)
        self._log_file.close()


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A redis-server we started: loopback, a free port (never 6379), no persistence."""

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    options: list[str] = field(default_factory=list)  # more redis-server arguments

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-h", self.host, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def cli_many(self, commands: list[list[str]]) -> str:
        """Several commands on one connection (for those that depend on it, like WAIT)."""
        script = "".join(" ".join(f'"{part}"' for part in command) + "\n" for command in commands)
        done = subprocess.run(
            ["redis-cli", "-h", self.host, "-p", str(self.port)],
            input=script,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (run `make redis-server`)")
        assert self.port != 6379
        log = self.workdir / "redis.log"
        # fmt: off
        args = [
            exe, "--port", str(self.port), "--bind", self.host, "--dir", str(self.workdir),
            "--save", "", "--appendonly", "no", "--databases", "16", "--logfile", str(log),
            *self.options,
        ]
        # fmt: on
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while not _ping(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(log.read_text(errors="replace"))
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class RedisCluster:
    """A real Redis Cluster: `masters` redis-server processes (each with `replicas` replicas)
    joined by `redis-cli --cluster create`, all on loopback and free ports."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0) -> None:
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        taken: set[int] = set()

        def distinct_port() -> int:
            # free_port() may give a port twice while nothing listens on it yet.
            while (port := free_port()) in taken:
                pass
            taken.add(port)
            return port

        for _ in range(masters * (1 + replicas)):
            port = distinct_port()
            node_dir = workdir / str(port)
            node_dir.mkdir()
            options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            # The bus port is free too, not port + 10000 (which may be taken, or past 65535).
            options += ["--cluster-port", str(distinct_port()), "--cluster-node-timeout", "1000"]
            self.nodes.append(RedisServer(node_dir, port, options=options))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"{n.host}:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes):
            assert time.monotonic() < deadline, "the Redis Cluster did not come up"
            time.sleep(0.1)
        # A replica that never synced is not eligible to take over: wait for every link.
        while not all(self._synced(n) for n in self.nodes):
            assert time.monotonic() < deadline, "the replicas did not sync"
            time.sleep(0.1)
        if self.replicas:
            # CLUSTER SLOTS lists a replica only once the others have seen it replicate
            # something (a replication offset above 0): a few writes, on every master.
            for n in range(64):
                self.nodes[0].cli("-c", "SET", f"fc:warm:{n}", "1")
            replica_ports = [str(n.port) for n in self.nodes if n.cli("ROLE").startswith("slave")]
            while not all(
                all(port in n.cli("CLUSTER", "SLOTS").split() for port in replica_ports)
                for n in self.nodes
            ):
                assert time.monotonic() < deadline, "the replicas are not in CLUSTER SLOTS"
                time.sleep(0.1)
        return self

    @staticmethod
    def _synced(node: RedisServer) -> bool:
        info = node.cli("INFO", "replication")
        return "role:master" in info or "master_link_status:up" in info

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's redis-server; tests share it and keep apart by fresh tokens."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which the test may stop and start again."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir, free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def backend_url(request: pytest.FixtureRequest, redis_server: RedisServer, db: int) -> str:
    """The URL of the backend a test is parametrized with: "memory", "redis" (on database
    `db` of the session's redis-server) or "cluster" (the session's Redis Cluster)."""
    kind = request.param
    if kind == "cluster":
        return str(request.getfixturevalue("server_pool").cluster.url)
    return "memory://" if kind == "memory" else redis_server.url(db)


@contextlib.asynccontextmanager
async def started_backend(url: str) -> AsyncIterator[Any]:
    """A started fastctx backend for `url`, closed afterwards."""
    from fastctx.backends import open_backend
    from fastctx.config import Settings

    opened = open_backend(Settings(backend=url))
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


def make_settings(backend: str, **settings: Any) -> Any:
    """fastctx.config.Settings for an in-process app."""
    from fastctx.config import Settings

    return Settings(backend=backend, **settings)


def _test_client_class() -> type[httpx.Client]:
    """starlette's TestClient; importing it with httpx (not httpx2) warns once, harmlessly."""
    from starlette.exceptions import StarletteDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*httpx2.*", category=StarletteDeprecationWarning
        )
        from starlette.testclient import TestClient
    return TestClient


def open_client(
    stack: contextlib.ExitStack, transport: str, backend_url: str, log_dir: Path, **settings: Any
) -> tuple[httpx.Client, GranianServer | None]:
    """Start an app on `backend_url` and return a client for it; `stack` stops both.

    asgi: the app in-process behind starlette's TestClient (entered, so lifespan runs).
    granian: `fastctx serve` on a free port, settings passed as FASTCTX_* variables.
    """
    if transport == "asgi":
        from fastctx.http import create_app

        app = create_app(make_settings(backend_url, **settings))
        test_client = _test_client_class()(
            app, raise_server_exceptions=False, follow_redirects=False
        )
        return stack.enter_context(test_client), None
    if transport == "granian":
        server = GranianServer.start(log_dir, backend_url, **settings)
        stack.callback(server.stop)
        client = httpx.Client(base_url=server.base_url, timeout=30.0)
        return stack.enter_context(client), server
    raise ValueError(transport)


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

    def backend_url(self, backend: str, profile: str) -> str:
        if backend == "memory":
            return "memory://"
        if backend == "redis":
            return self.redis.url(REDIS_DB[profile])
        if backend == "cluster":
            return self.cluster.url
        if backend == "down":
            # A port held bound but never listening: connections are refused, and no server
            # started later in the session can take it over.
            held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._stack.callback(held.close)
            held.bind(("127.0.0.1", 0))
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
    """A client of a server with FASTCTX_MAX_CONTEXT_BYTES = 4096."""
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


@dataclass
class Spawned:
    """A `fastctx` CLI process started by a test; its output goes to a log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def spawn_fastctx(tmp_path: Path) -> Iterator[Any]:
    """Start `fastctx <args>` with exactly the given FASTCTX_* settings; stopped after the test."""
    started: list[Spawned] = []

    def spawn(*args: str, **settings: Any) -> Spawned:
        log = tmp_path / f"fastctx-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(FASTCTX_BIN), *args],
                env=clean_env(**settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=tmp_path,
                start_new_session=True,
            )
        spawned = Spawned(proc, log)
        started.append(spawned)
        return spawned

    yield spawn
    for s in started:
        stop_process(s.proc)


# Two nodes on one Redis: the DB is theirs alone, so the cache-coherence tests see only
# their own writes (and those they make through redis-cli on purpose).
NODES_DB = 3


@pytest.fixture(scope="session")
def redis_nodes(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GranianServer, GranianServer]]:
    """Two `fastctx serve` processes (granian) on the same Redis database."""
    log_dir = tmp_path_factory.mktemp("nodes")
    url = redis_server.url(NODES_DB)
    first = GranianServer.start(log_dir, url)
    try:
        second = GranianServer.start(log_dir, url)
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


class OwnRedis:
    """A redis-server of the test's own, which it may stop and start again on the same port."""

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.extra_args = extra_args  # e.g. "--appendonly", "yes" (later flags win)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, check=True, text=True
        )
        return out.stdout.strip()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
