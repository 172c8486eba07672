"""The integrations' servers: example programs run as a user runs them, on free ports."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.ports import free_port
from support.processes import REPO, clean_env, stop_process


@dataclass
class Program:
    """An example program serving HTTP on 127.0.0.1:port."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_listening(program: Program, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if program.proc.poll() is not None:
            raise RuntimeError(f"exited with {program.proc.returncode}:\n{program.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", program.port)):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not listening after {timeout}s:\n{program.output()}")


@pytest.fixture
def run_example(tmp_path: Path) -> Iterator[object]:
    """run_example("file.py", FASTCTX_URL=..., ...): the example on a port of its own."""
    started: list[Program] = []

    def run(name: str, **env: str) -> Program:
        port = free_port()
        log = tmp_path / f"{name}-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(REPO / "examples" / name), "--port", str(port)],
                env={**clean_env(), **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                start_new_session=True,
            )
        started.append(Program(proc, log, port))
        wait_listening(started[-1])
        return started[-1]

    yield run
    for program in started:
        stop_process(program.proc)
