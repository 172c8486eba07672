"""The Makefile's serve and example targets: the environment and the make variables both count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from support.ports import free_port
from support.processes import FASTCTX_BIN, REPO, clean_env, stop_process
from support.redis import RedisServer
from support.servers import wait_healthy

MAKE_DB = 5  # shared with test_cli's, keys apart by their random tokens
MakeServe = Callable[..., tuple[subprocess.Popen[bytes], Path]]


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A stand-in for the Makefile's .venv whose build is up to date: make builds nothing."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "bin" / "fastctx").symlink_to(FASTCTX_BIN)
    for stamp in (".fastctx-built", ".fastctx-served"):
        (venv / stamp).touch()
    return venv


@pytest.fixture
def make_serve(venv: Path, tmp_path: Path) -> Iterator[MakeServe]:
    """Run `make serve` with the given make variables and FASTCTX_* settings."""
    started: list[subprocess.Popen[bytes]] = []

    def run(*variables: str, **settings: Any) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"make-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    "make",
                    "--no-print-directory",
                    "-C",
                    str(REPO),
                    "serve",
                    f"VENV={venv}",
                    *variables,
                ],
                env=clean_env(**settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started.append(proc)
        return proc, log

    yield run
    for proc in started:
        # make does not hand a signal on to the server it runs: stop the whole group.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        stop_process(proc)


def test_make_serve_takes_the_environment(make_serve: MakeServe) -> None:
    port = free_port()
    proc, log = make_serve(port=port, host="127.0.0.1", backend="memory://")
    wait_healthy(f"http://127.0.0.1:{port}", proc, log)
    lines = log.read_text().splitlines()
    assert lines[0] == f"Serving http://127.0.0.1:{port} (Ctrl-C stops it)", lines
    assert not any(".venv/bin/fastctx" in line or "fastctx serve" in line for line in lines)


def test_make_variables_win_over_the_environment(make_serve: MakeServe) -> None:
    env_port, make_port = free_port(), free_port()
    proc, log = make_serve(f"PORT={make_port}", port=env_port)
    wait_healthy(f"http://127.0.0.1:{make_port}", proc, log)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{env_port}/healthz", timeout=1.0)


def test_make_serve_backend_from_the_environment(
    make_serve: MakeServe, redis_server: RedisServer
) -> None:
    port = free_port()
    proc, log = make_serve(port=port, backend=redis_server.url(MAKE_DB))
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, proc, log)
    token = httpx.post(f"{base}/v1/contexts", json={"via": "make serve"}).json()["token"]
    with redis.Redis(host=redis_server.host, port=redis_server.port, db=MAKE_DB) as db:
        assert any(token in key.decode() for key in db.scan_iter(count=1000))


@pytest.mark.parametrize(
    ("variables", "settings", "shown"),
    [
        ((), {"backend": "redis://127.0.0.1:6390/4"}, 'FASTCTX_BACKEND="redis://127.0.0.1:6390/4"'),
        (
            ("BACKEND=redis://h:1/0",),
            {"backend": "redis://x:2/0"},
            'FASTCTX_BACKEND="redis://h:1/0"',
        ),
        ((), {}, 'FASTCTX_BACKEND="memory://"'),
    ],
)
def test_make_example_takes_the_backend_from_the_environment(
    venv: Path, variables: tuple[str, ...], settings: dict[str, str], shown: str
) -> None:
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "-C",
            str(REPO),
            "example",
            f"VENV={venv}",
            *variables,
        ],
        env=clean_env(**settings),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert shown in done.stdout, done.stdout
