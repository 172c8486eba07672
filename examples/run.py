"""The example in one command: fastctx, gateway -> pricing -> billing, a listener, one order.

    .venv/bin/python examples/run.py            # fastctx on memory://
    FASTCTX_BACKEND=redis://127.0.0.1:6380/0 .venv/bin/python examples/run.py

Every process is started on a free port of 127.0.0.1 and stopped before the command ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx

from fastctx import Client

HERE = Path(__file__).resolve().parent
FASTCTX = Path(sys.executable).with_name("fastctx")
ORDER = {
    "id": 1001,
    "customer": "ada",
    "items": [{"sku": "apple", "qty": 3}, {"sku": "pear", "qty": 2}],
}
TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process whose output goes to a log file, shown if it fails."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            # Its own session: a Ctrl-C on this command reaches it only through stop().
            self.proc = subprocess.Popen(
                args, env=env, cwd=HERE, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def wait_http(self, url: str) -> None:
        """Until `url` answers at all (any status: the service is up)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()}")
            try:
                httpx.get(url, timeout=1.0)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    log = self.log.read_text()
                    raise RuntimeError(f"{self.name} did not start:\n{log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Listener:
    """examples/listener.py as a child process; its lines are printed as they arrive."""

    def __init__(self, fastctx_url: str, session: str) -> None:
        args = [sys.executable, "-u", str(HERE / "listener.py"), fastctx_url, session]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=HERE)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,))
        self._reader.start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            print(f"  [listener] {line.rstrip()}", flush=True)
            with self._changed:
                self.lines.append(line.rstrip())
                self._changed.notify_all()

    def wait_for(self, start: str) -> None:
        """Until the listener has printed a line that starts with `start`."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: any(line.startswith(start) for line in self.lines), TIMEOUT
            ):
                raise RuntimeError(f"the listener never printed {start!r}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self._reader.join()


def service_env(**urls: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCTX_")}
    env.update(urls)
    return env


def granian(app: str, port: int) -> list[str]:
    # fmt: off
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--log-level", "warning", app,
    ]
    # fmt: on


def main() -> int:
    backend = os.environ.get("FASTCTX_BACKEND", "memory://")
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stack:
        started: list[Process] = []

        def start(name: str, args: list[str], env: dict[str, str], probe: str) -> None:
            process = Process(name, args, env, Path(logs))
            started.append(process)
            stack.callback(process.stop)
            process.wait_http(probe)

        ports = {name: free_port() for name in ("fastctx", "gateway", "pricing", "billing")}
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        fastctx_args = [
            str(FASTCTX),
            "serve",
            "--backend",
            backend,
            "--port",
            str(ports["fastctx"]),
        ]
        server_env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCTX_")}
        server_env |= {"FASTCTX_HOST": "127.0.0.1", "FASTCTX_LOG_LEVEL": "warning"}
        start("fastctx", fastctx_args, server_env, f"{url['fastctx']}/healthz")
        env = service_env(
            FASTCTX_URL=url["fastctx"], PRICING_URL=url["pricing"], BILLING_URL=url["billing"]
        )
        for name in ("billing", "pricing", "gateway"):
            start(name, granian(f"{name}:app", ports[name]), env, url[name])
        print(f"fastctx ({backend}) on :{ports['fastctx']}", end="")
        print("".join(f", {name} on :{ports[name]}" for name in ("gateway", "pricing", "billing")))

        with Client(url["fastctx"]) as fastctx:
            session = fastctx.create_session(ttl=600, meta={"example": "checkout"})
            listener = Listener(url["fastctx"], session)
            stack.callback(listener.stop)
            listener.wait_for("listening")

            placed = httpx.post(f"{url['gateway']}/orders", params={"session": session}, json=ORDER)
            listener.wait_for("v3 updated")
            answer: dict[str, Any] = placed.json()
            print(f"POST gateway/orders -> {placed.status_code} {json.dumps(answer)}")
            if placed.status_code != 201:
                return 1
            final = httpx.get(f"{url['gateway']}/order", headers={"Context-Token": answer["token"]})
            print("final context, as the gateway loads it by its token:")
            for key, value in final.json().items():
                print(f"  {key}: {json.dumps(value)}")

            fastctx.http.delete(f"/v1/sessions/{session}").raise_for_status()
            listener.wait_for("v3 deleted")
        print("session deleted; stopping the listener, the services and fastctx")
    print("all stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
