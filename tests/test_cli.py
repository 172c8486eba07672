"""The `fastctx serve` command: flags, environment variables, refusals."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

import fastctx
from fastctx.cli import GC_THRESHOLD
from fastctx.config import Settings, masked_url
from support.ports import free_port
from support.processes import FASTCTX_BIN, Spawned, clean_env, stop_process
from support.redis import RedisServer
from support.servers import metric, wait_healthy

FLAGS = ("--backend", "--host", "--port", "--workers", "--http", "--log-format", "--access-log")


def _wait_exit(spawned: Any, timeout: float = 30.0) -> int:
    return int(spawned.proc.wait(timeout=timeout))


def _wait_healthy(spawned: Spawned, port: int) -> None:
    wait_healthy(f"http://127.0.0.1:{port}", spawned.proc, spawned.log)


def test_memory_backend_refuses_several_workers(spawn_fastctx: Any) -> None:
    spawned = spawn_fastctx(
        "serve", "--backend", "memory://", "--workers", "2", "--port", str(free_port())
    )
    assert _wait_exit(spawned) == 2, spawned.output()
    assert "worker" in spawned.output().lower()


def test_memory_backend_refuses_several_workers_from_env(spawn_fastctx: Any) -> None:
    spawned = spawn_fastctx("serve", backend="memory://", workers=2, port=free_port())
    assert _wait_exit(spawned) == 2, spawned.output()
    assert "worker" in spawned.output().lower()


def test_serve_help_lists_the_flags(spawn_fastctx: Any) -> None:
    spawned = spawn_fastctx("serve", "--help")
    assert _wait_exit(spawned) == 0, spawned.output()
    out = spawned.output()
    for flag in FLAGS:
        assert flag in out, (flag, out)


def test_top_level_help_names_serve(spawn_fastctx: Any) -> None:
    spawned = spawn_fastctx("--help")
    assert _wait_exit(spawned) == 0, spawned.output()
    assert "serve" in spawned.output()


# What a client speaking HTTP/2 with prior knowledge (h2c) sends first: the connection
# preface, then its SETTINGS frame (empty).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
H2_SETTINGS_FRAME = 4


def _answers_h2c(port: int) -> bool:
    """Whether the server answers the HTTP/2 preface with its own SETTINGS frame."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(H2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    return len(head) == 9 and head[3] == H2_SETTINGS_FRAME


@pytest.mark.parametrize(("flags", "h2c"), [((), False), (("--http", "auto"), True)])
def test_http_versions(spawn_fastctx: Any, flags: tuple[str, ...], h2c: bool) -> None:
    """HTTP/1.1 unless told otherwise (each connection costs less); `auto` adds h2c."""
    port = free_port()
    spawned = spawn_fastctx("serve", "--port", str(port), *flags, backend="memory://")
    _wait_healthy(spawned, port)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").http_version == "HTTP/1.1"
    assert _answers_h2c(port) is h2c


def test_http_versions_from_environment_are_checked() -> None:
    assert Settings.from_env({}).http == "1"
    assert Settings.from_env({"FASTCTX_HTTP": "auto"}).http == "auto"
    with pytest.raises(ValueError, match="FASTCTX_HTTP"):
        Settings.from_env({"FASTCTX_HTTP": "3"})


def test_the_document_limit_is_read_and_checked() -> None:
    assert Settings().max_document_bytes == 16 * 1024 * 1024
    env = {"FASTCTX_MAX_CONTEXT_BYTES": "1000", "FASTCTX_MAX_DOCUMENT_BYTES": "5000"}
    settings = Settings.from_env(env)
    assert (settings.max_context_bytes, settings.max_document_bytes) == (1000, 5000)
    assert Settings.from_env(settings.to_env()) == settings
    for document in ("999", "0", str(64 * 1024 * 1024 + 1)):
        with pytest.raises(ValueError, match="FASTCTX_MAX_DOCUMENT_BYTES"):
            Settings.from_env({**env, "FASTCTX_MAX_DOCUMENT_BYTES": document})


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--http", "3"),
        ("serve", "--port", "not-a-port"),
        ("serve", "--backend", "ftp://127.0.0.1/"),
        ("serve", "--workers", "0", "--backend", "redis://127.0.0.1:1/0"),
        ("serve", "--no-such-flag"),
        ("no-such-command",),
    ],
)
def test_bad_arguments_exit_non_zero(spawn_fastctx: Any, args: tuple[str, ...]) -> None:
    spawned = spawn_fastctx(*args)
    code = _wait_exit(spawned)
    assert code != 0, spawned.output()
    assert spawned.output().strip(), "a refusal says why"


def test_port_from_environment(spawn_fastctx: Any) -> None:
    port = free_port()
    spawned = spawn_fastctx("serve", port=port, host="127.0.0.1", backend="memory://")
    _wait_healthy(spawned, port)
    # A working server, not just a health check: store and read back a context.
    base = f"http://127.0.0.1:{port}"
    r = httpx.post(f"{base}/v1/contexts", json={"from": "env"})
    assert r.status_code == 201
    assert httpx.get(f"{base}/v1/contexts/{r.json()['token']}").json() == {"from": "env"}


def test_flag_overrides_environment(spawn_fastctx: Any) -> None:
    env_port, flag_port = free_port(), free_port()
    spawned = spawn_fastctx(
        "serve", "--port", str(flag_port), port=env_port, host="127.0.0.1", backend="memory://"
    )
    _wait_healthy(spawned, flag_port)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{env_port}/healthz", timeout=1.0)


def test_sigterm_stops_the_server(spawn_fastctx: Any) -> None:
    port = free_port()
    spawned = spawn_fastctx(
        "serve", "--port", str(port), "--host", "127.0.0.1", backend="memory://"
    )
    _wait_healthy(spawned, port)
    spawned.proc.terminate()
    assert _wait_exit(spawned, timeout=15) is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)


def test_sigterm_stops_the_server_while_a_stream_is_open(spawn_fastctx: Any) -> None:
    """An event stream stays open until its client leaves: it must not hold a stop forever."""
    port = free_port()
    spawned = spawn_fastctx("serve", "--port", str(port), "--host", "127.0.0.1")
    _wait_healthy(spawned, port)
    created = httpx.post(
        f"http://127.0.0.1:{port}/v1/contexts",
        content=b"{}",
        headers={"Content-Type": "application/json"},
    )
    token = created.json()["token"]
    with socket.create_connection(("127.0.0.1", port)) as stream:
        stream.sendall(b"GET /v1/contexts/%s/events HTTP/1.1\r\nHost: x\r\n\r\n" % token.encode())
        assert stream.recv(4096).startswith(b"HTTP/1.1 200")
        spawned.proc.terminate()
        # It used to wait for the client forever (over 20 s here).
        assert _wait_exit(spawned, timeout=15) is not None


def test_settings_from_environment_only(spawn_fastctx: Any, redis_server: Any) -> None:
    port = free_port()
    spawned = spawn_fastctx(
        "serve",
        port=port,
        host="127.0.0.1",
        backend=redis_server.url(5),
        default_ttl=120,
        max_context_bytes=100,
        api_keys="solo:key-solo",
    )
    _wait_healthy(spawned, port)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer key-solo"}
    assert httpx.post(f"{base}/v1/contexts", json={"a": 1}).status_code == 401
    big = {"pad": "x" * 200}
    assert httpx.post(f"{base}/v1/contexts", json=big, headers=auth).status_code == 413
    before = datetime.now(UTC)
    r = httpx.post(f"{base}/v1/contexts", json={"from": "env"}, headers=auth)
    assert r.status_code == 201
    token = r.json()["token"]
    expires = datetime.fromisoformat(r.json()["expires_at"])
    assert abs((expires - before).total_seconds() - 120) < 5
    # The context went to the Redis DB that FASTCTX_BACKEND named.
    with redis.Redis(host="127.0.0.1", port=redis_server.port, db=5) as db:
        assert any(token in key.decode() for key in db.scan_iter(count=1000))


def _log_says_unauthenticated(text: str) -> bool:
    lower = text.lower()
    return "warn" in lower and ("api_keys" in lower or "api key" in lower or "auth" in lower)


def test_warns_when_open_beyond_loopback(spawn_fastctx: Any) -> None:
    port = free_port()
    spawned = spawn_fastctx("serve", "--host", "0.0.0.0", "--port", str(port), log_level="info")
    _wait_healthy(spawned, port)
    deadline = time.monotonic() + 5
    while not _log_says_unauthenticated(spawned.output()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _log_says_unauthenticated(spawned.output()), spawned.output()


def test_no_warning_on_loopback(spawn_fastctx: Any) -> None:
    port = free_port()
    spawned = spawn_fastctx("serve", "--host", "127.0.0.1", "--port", str(port), log_level="info")
    _wait_healthy(spawned, port)
    assert not _log_says_unauthenticated(spawned.output()), spawned.output()


def test_served_workers_freeze_their_start_up_heap(spawn_fastctx: Any) -> None:
    port = free_port()
    spawned = spawn_fastctx("serve", "--port", str(port))
    _wait_healthy(spawned, port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        # The app, its modules and classes: tens of thousands of objects, out of every
        # collection.
        assert metric(client, "fastctx_gc_frozen_objects") > 10_000
        assert 'python_gc_collections_total{generation="0"}' in client.get("/metrics").text


def test_tune_collector_freezes_and_raises_the_first_threshold() -> None:
    # In a child process: freezing this one would change the collector for every later test.
    script = (
        "import gc, json\n"
        "from fastctx.cli import tune_collector\n"
        "before = gc.get_threshold()\n"
        "tune_collector()\n"
        "print(json.dumps([gc.get_freeze_count(), before, gc.get_threshold()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, timeout=60
    )
    frozen, before, after = json.loads(done.stdout)
    assert frozen > 0
    assert after == [GC_THRESHOLD, *before[1:]]


def _run(tmp_path: Path, *args: str, **settings: Any) -> subprocess.CompletedProcess[str]:
    """Run `fastctx <args>` to its end with exactly the given FASTCTX_* settings."""
    with subprocess.Popen(
        [str(FASTCTX_BIN), *args],
        env=clean_env(**settings),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            stop_process(proc)  # one that serves instead of refusing, workers and all
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_version_prints_the_version(tmp_path: Path) -> None:
    done = _run(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"fastctx {fastctx.__version__}\n"


def _refused_in_one_line(done: subprocess.CompletedProcess[str], *named: str) -> None:
    """Exit status 2 and one line on stderr that names the problem; no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fastctx: "), lines
    for word in named:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in done.stdout + done.stderr


def test_port_in_use_is_refused_before_granian_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run(tmp_path, "serve", "--port", str(port), host="127.0.0.1")
    _refused_in_one_line(done, f"port {port}", "in use")
    assert "granian" not in done.stdout + done.stderr.lower()


@pytest.mark.parametrize(
    ("args", "settings", "named"),
    [
        (("--port", "70000"), {}, ("PORT", "65535")),
        ((), {"port": 65536}, ("FASTCTX_PORT", "65535")),
        (("--host", "no-such-host.invalid"), {}, ("no-such-host.invalid",)),
        # TEST-NET-3: an address no machine here has.
        (("--host", "203.0.113.7"), {}, ("203.0.113.7", "not an address of this machine")),
        ((), {"host": "256.1.1.1"}, ("256.1.1.1",)),
        ((), {"log_format": "xml"}, ("FASTCTX_LOG_FORMAT", "json")),
        ((), {"access_log": "maybe"}, ("FASTCTX_ACCESS_LOG", "maybe")),
        (("--backend", "redis://127.0.0.1:port/0"), {}, ("backend URL", "127.0.0.1:port")),
        (("--backend", "redis://127.0.0.1:6390/first"), {}, ("database", "first")),
        (("--backend", "redis+cluster://127.0.0.1:7000/2"), {}, ("only database 0",)),
        ((), {"workers": "many"}, ("FASTCTX_WORKERS", "many")),
        ((), {"host": " "}, ("FASTCTX_HOST", "empty")),
        ((), {"cache_bytes": 10**23}, ("FASTCTX_CACHE_BYTES", "too large")),
        ((), {"max_document_bytes": 1000}, ("FASTCTX_MAX_DOCUMENT_BYTES", "1048576")),
        ((), {"backend": "redis://[::1"}, ("FASTCTX_BACKEND", "not a URL")),
    ],
)
def test_bad_setting_is_one_line_and_status_2(
    tmp_path: Path, args: tuple[str, ...], settings: dict[str, Any], named: tuple[str, ...]
) -> None:
    # Whatever is not refused would serve: on a free port, never the default one.
    port = () if "--port" in args or "port" in settings else ("--port", str(free_port()))
    done = _run(tmp_path, "serve", *port, *args, **settings)
    _refused_in_one_line(done, *named)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:port/0", "redis://:***@127.0.0.1:port/0"),
        ("ftp://user:hunter2@127.0.0.1/", "ftp://user:***@127.0.0.1/"),
    ],
)
def test_a_password_never_reaches_an_error_message(tmp_path: Path, url: str, shown: str) -> None:
    done = _run(tmp_path, "serve", "--backend", url)
    _refused_in_one_line(done, shown)
    assert "hunter2" not in done.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:secret@h/2", "rediss://user:***@h/2"),
        ("redis+cluster://u:s%40cret@a:1,b:2", "redis+cluster://u:***@a:1,b:2"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("redis://user@h:1/0", "redis://user@h:1/0"),
        ("memory://", "memory://"),
    ],
)
def test_masked_url(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_unreachable_backend_warns_once_and_serves(spawn_fastctx: Any) -> None:
    """The server starts; the warning names the URL without its password and what to expect."""
    port, nobody = free_port(), free_port()
    url = f"redis://:hunter2@127.0.0.1:{nobody}/0"
    spawned = spawn_fastctx("serve", "--port", str(port), backend=url, log_level="info")
    _wait_healthy(spawned, port)
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 503
    out = spawned.output()
    warnings = [line for line in out.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, out
    assert f"127.0.0.1:{nobody}" in warnings[0]
    assert f"redis://:***@127.0.0.1:{nobody}/0" in warnings[0]
    assert "/readyz answers 503" in warnings[0]
    assert "hunter2" not in out


def test_backend_that_comes_later_is_used(spawn_fastctx: Any, tmp_path: Path) -> None:
    """What the warning promises: once Redis answers, the server is ready and stores in it."""
    port, later = free_port(), free_port()
    spawned = spawn_fastctx("serve", "--port", str(port), backend=f"redis://127.0.0.1:{later}/0")
    _wait_healthy(spawned, port)
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/readyz").status_code == 503
    assert httpx.post(f"{base}/v1/contexts", json={"a": 1}).status_code == 503
    redis_server = RedisServer(tmp_path, later).start()
    try:
        deadline = time.monotonic() + 15
        while httpx.get(f"{base}/readyz").status_code != 200:
            assert time.monotonic() < deadline, spawned.output()
            time.sleep(0.1)
        assert httpx.post(f"{base}/v1/contexts", json={"a": 1}).status_code == 201
    finally:
        redis_server.stop()


def test_reachable_backend_gives_no_warning(spawn_fastctx: Any, redis_server: Any) -> None:
    port = free_port()
    spawned = spawn_fastctx("serve", "--port", str(port), backend=redis_server.url(0))
    _wait_healthy(spawned, port)
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    assert "cannot be reached" not in spawned.output()


def test_localhost_is_bound_as_its_address(spawn_fastctx: Any) -> None:
    """A host name that resolves is served, where granian alone takes only IP addresses."""
    port = free_port()
    spawned = spawn_fastctx("serve", "--port", str(port), "--host", "localhost")
    _wait_healthy(spawned, port)
