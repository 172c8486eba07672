"""fastctx servers the tests talk to: `fastctx serve` (granian) on a free port, or the app
in-process behind starlette's TestClient."""

from __future__ import annotations

import contextlib
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.ports import free_port
from support.processes import Spawned, stop_process


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


def metric(client: httpx.Client, name: str) -> float:
    """One sample of /metrics, by its full name (a counter's ends in _total)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@dataclass
class GranianServer:
    """A `fastctx serve` subprocess (granian) on a free port, ready once start() returns."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path

    @classmethod
    def start(
        cls, log_dir: Path, backend: str, port: int | None = None, **settings: Any
    ) -> GranianServer:
        port = port or free_port()
        log = log_dir / f"granian-{port}.log"
        args = ["serve", "--port", str(port), "--backend", backend]
        spawned = Spawned.start(
            args, log, log_dir, host="127.0.0.1", log_level="warning", **settings
        )
        server = cls(spawned.proc, f"http://127.0.0.1:{port}", log)
        try:
            wait_healthy(server.base_url, server.proc, log)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        stop_process(self.proc)


@contextlib.contextmanager
def two_nodes(
    log_dir: Path, backend: str, **settings: Any
) -> Iterator[tuple[GranianServer, GranianServer]]:
    """Two fastctx nodes (granian) on one backend, as two hosts of a deployment would be."""
    first = GranianServer.start(log_dir, backend, **settings)
    try:
        second = GranianServer.start(log_dir, backend, **settings)
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


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
