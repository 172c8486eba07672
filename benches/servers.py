"""Start, wait for and stop the processes of the HTTP benchmark: Redis and the servers tested."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

BENCHES = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
# The OAuth rows' authorization server is the one the tests use (tests/support/oidc.py).
sys.path.append(str(BENCHES.parent / "tests"))
# The resource the OAuth rows' tokens are for; the server need not be reachable under it.
OAUTH_PUBLIC_URL = "https://ctx.example.com"
TRACED_SHARE = 0.1  # the share of requests the traced rows sample


def granian(target: str, http: str = "1", *extra: str) -> list[str]:
    """The options `fastctx serve` gives granian, so the floors differ from it only by the app;
    `http` and `extra` options for the measurements that vary them."""
    return [
        str(BIN / "granian"),
        *("--interface", "asgi", "--workers", "1", "--loop", "uvloop", "--http", http, "--no-ws"),
        *extra,
        *("--log-level", "warning", "--host", "127.0.0.1", "--port", "{port}", target),
    ]


def _fastctx(backend: str) -> list[str]:
    return [str(BIN / "fastctx"), "serve", "--backend", backend, "--port", "{port}"]


# Each kind of server: its command ("{port}" and "{redis}" filled in at start), its health path.
SERVERS: dict[str, tuple[list[str], str]] = {
    "floor-bare": (granian("floors:bare"), "/"),
    "floor-starlette": (granian("floors:starlette"), "/"),
    "floor-bare-redis": (granian("floors:bare_redis"), "/"),
    "fastctx-memory": (_fastctx("memory://"), "/healthz"),
    "fastctx-redis": (_fastctx("redis://127.0.0.1:{redis}/0"), "/healthz"),
    # The same server again, started afresh for the MCP rows over an emptied Redis, so they do
    # not read behind the contexts the POST row leaves.
    "fastctx-mcp": (_fastctx("redis://127.0.0.1:{redis}/0"), "/healthz"),
    # The same again with OAuth on (Stack.server adds the settings): a JWT on every request.
    "fastctx-mcp-oauth": (_fastctx("redis://127.0.0.1:{redis}/0"), "/healthz"),
    # The same server with traces on (Stack.server adds the OTEL_* variables): one request in
    # ten sampled, exported over OTLP/HTTP to a receiver in this process.
    "fastctx-redis-traced": (_fastctx("redis://127.0.0.1:{redis}/0"), "/healthz"),
    # The same server with encryption at rest (FASTCTX_ENCRYPTION_KEYS, one AES-256 key).
    "fastctx-redis-sealed": (_fastctx("redis://127.0.0.1:{redis}/0"), "/healthz"),
    # uvicorn's fastest documented set-up: uvloop, httptools, no access log, one worker.
    "peer-fastapi": (
        [
            str(BIN / "uvicorn"),
            "peers.fastapi_redis:app",
            *("--loop", "uvloop", "--http", "httptools", "--workers", "1"),
            *("--no-access-log", "--log-level", "warning", "--port", "{port}"),
        ],
        "/healthz",
    ),
    # The MCP peers, on granian as fastctx is; each module documents its configuration.
    "peer-fastmcp": (granian("peers.fastmcp_redis:app"), "/healthz"),
    "peer-mcp-sdk": (granian("peers.mcp_sdk_redis:app"), "/healthz"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cores: str | None, command: list[str]) -> list[str]:
    return ["taskset", "-c", cores, *command] if cores else command


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Process:
    """A child process in its own process group, stopped with the whole group."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=BENCHES,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self.popen.pid)
            return [parent, *parent.children(recursive=True)]
        return []

    def wait_ready(self, port: int, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request(port, "GET", path)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


class Stack:
    """One redis-server (never 6379) for the whole run; each kind of server started on demand."""

    def __init__(self, workdir: Path, redis_cores: str | None) -> None:
        self.workdir = workdir
        self.redis_port = free_port()
        command = [
            "redis-server",
            *("--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(workdir)),
            *("--save", "", "--appendonly", "no"),
        ]
        self.redis = Process("redis", pinned(redis_cores, command), dict(os.environ), workdir)
        self._authorization: Any = None  # support.oidc.AuthorizationServer, once a row needs it
        self._otlp: Any = None  # support.otlp.OtlpReceiver, once a row needs it
        deadline = time.monotonic() + 10
        while self.redis_cli("PING") != "PONG":
            if time.monotonic() > deadline or self.redis.popen.poll() is not None:
                self.redis.stop()
                raise RuntimeError(f"redis-server did not start:\n{self.redis.log_tail()}")
            time.sleep(0.05)

    def redis_cli(self, *args: str, stdin: str | None = None) -> str:
        """One command, or (`stdin`) one command per line, as redis-cli reads them."""
        done = subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    @contextlib.contextmanager
    def server(self, kind: str, cores: str | None) -> Iterator[tuple[int, Process]]:
        self.redis_cli("FLUSHALL")  # each kind of server starts from an empty Redis
        port = free_port()
        template, health = SERVERS[kind]
        command = [part.format(port=port, redis=self.redis_port) for part in template]
        env = {
            **os.environ,
            "PYTHONPATH": str(BENCHES),
            "FASTCTX_LOG_LEVEL": "warning",
            "PEER_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
        }
        if kind.endswith("-traced"):
            env |= {
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_receiver().endpoint,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(TRACED_SHARE),
            }
        if kind.endswith("-sealed"):
            env["FASTCTX_ENCRYPTION_KEYS"] = f"bench:{base64.b64encode(os.urandom(32)).decode()}"
        if kind.endswith("-oauth"):
            env |= {
                "FASTCTX_PUBLIC_URL": OAUTH_PUBLIC_URL,
                "FASTCTX_OAUTH_ISSUER": self.authorization_server().issuer,
            }
        process = Process(kind, pinned(cores, command), env, self.workdir)
        try:
            process.wait_ready(port, health)
            yield port, process
        finally:
            process.stop()

    def node(self, name: str, **settings: str) -> tuple[int, Process]:
        """One more `fastctx serve` on this Redis, beside any others already running, with the
        FASTCTX_* `settings` given (`max_context_bytes="..."`); the caller stops it."""
        port = free_port()
        template, health = SERVERS["fastctx-redis"]
        command = [part.format(port=port, redis=self.redis_port) for part in template]
        env = {**os.environ, "FASTCTX_LOG_LEVEL": "warning"}
        env |= {f"FASTCTX_{key.upper()}": value for key, value in settings.items()}
        process = Process(name, command, env, self.workdir)
        try:
            process.wait_ready(port, health)
        except RuntimeError:
            process.stop()
            raise
        return port, process

    def authorization_server(self) -> Any:
        """oidc-provider, started the first time a row needs it (not pinned: it only issues
        the row's one token and its keys, before the row is measured)."""
        if self._authorization is None:
            from support.oidc import AuthorizationServer, provider_missing

            missing = provider_missing()
            if missing is not None:
                raise RuntimeError(missing)
            self._authorization = AuthorizationServer(self.workdir)
            self._authorization.start()
        return self._authorization

    def otlp_receiver(self) -> Any:
        """An OTLP/HTTP receiver (the tests'), started the first time a traced row needs it."""
        if self._otlp is None:
            from support.otlp import OtlpReceiver

            self._otlp = OtlpReceiver().start()
        return self._otlp

    def access_token(self) -> str:
        """A JWT for the MCP endpoint of OAUTH_PUBLIC_URL, by client credentials."""
        return str(self.authorization_server().token(resource=OAUTH_PUBLIC_URL + "/mcp"))

    def close(self) -> None:
        if self._authorization is not None:
            self._authorization.stop()
        if self._otlp is not None:
            self._otlp.stop()
        self.redis.stop()


def serving_worker(process: Process) -> psutil.Process:
    """The granian worker that answers requests: the busiest process of the server's tree."""
    return max(process.tree(), key=lambda p: sum(p.cpu_times()[:2]))
