"""`make loadtest`: run the locust scenarios headless against a fastctx it starts, or any URL."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
FASTCTX = Path(sys.executable).with_name("fastctx")
REDIS_PORT_NOT_OURS = 6379  # a developer's own Redis lives there; never load it


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="loadtests/run.py",
        description=(
            "Run the fastctx locust scenarios headless. By default starts a fastctx server of "
            "its own (and a redis-server, for --backend redis); --host targets a deployment."
        ),
        epilog="Arguments after -- go to locust unchanged.",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--host", help="base URL of a running fastctx, e.g. http://10.0.0.5:8000")
    target.add_argument(
        "--backend",
        default="memory://",
        help="backend of the server started here: memory:// (default), redis (a redis-server "
        "started here on a free port) or a redis:// URL",
    )
    parser.add_argument("--workers", type=int, default=1, help="server workers (redis only)")
    parser.add_argument("-u", "--users", type=int, default=50, help="concurrent users (50)")
    parser.add_argument("-r", "--spawn-rate", type=float, help="users started per second (all)")
    parser.add_argument("-t", "--run-time", default="30s", help="how long to run, e.g. 30s, 5m")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("FASTCTX_API_KEY"),
        help="Bearer key for /v1 (default: $FASTCTX_API_KEY); a server started here requires it",
    )
    parser.add_argument(
        "--max-failure-ratio",
        type=float,
        default=0.0,
        help="exit 1 when failed / total requests exceeds this (default 0)",
    )
    parser.add_argument("--reports", type=Path, help="report directory (loadtests/reports/<now>)")
    given = list(sys.argv[1:] if argv is None else argv)
    cut = given.index("--") if "--" in given else len(given)
    args = parser.parse_args(given[:cut])
    args.locust_args = given[cut + 1 :]
    return args


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != REDIS_PORT_NOT_OURS:
            return port


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a process we started; SIGKILL its own process group (its workers) if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + 30
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} was not ready within 30 s; see {log}")
        time.sleep(0.05)


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def redis_server(reports: Path) -> Iterator[str]:
    """A throwaway redis-server: loopback, a free port, a temp dir, no persistence."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (`make redis-server` installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fastctx-load-redis-") as workdir:
        # fmt: off
        args = [
            exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
            "--save", "", "--appendonly", "no", "--logfile", str(reports / "redis.log"),
        ]
        # fmt: on
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until(lambda: redis_answers(port), proc, "redis-server", reports / "redis.log")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(proc)


@contextlib.contextmanager
def fastctx_server(backend: str, workers: int, api_key: str | None, log: Path) -> Iterator[str]:
    """`fastctx serve` on a free loopback port; yields its base URL once /readyz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCTX_")}
    env["FASTCTX_LOG_LEVEL"] = "warning"  # an access line per request would cost the server
    if api_key:
        env["FASTCTX_API_KEYS"] = f"loadtest:{api_key}"
    # fmt: off
    args = [
        str(FASTCTX), "serve", "--backend", backend, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
    ]
    # fmt: on
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_ok(f"{url}/readyz"), proc, "fastctx serve", log)
            yield url
        finally:
            stop(proc)


@dataclass
class Totals:
    requests: int
    failures: int

    @property
    def ratio(self) -> float:
        return self.failures / self.requests if self.requests else 1.0


def run_locust(args: argparse.Namespace, host: str, reports: Path) -> Totals:
    env = dict(os.environ)
    env["FASTCTX_LOAD_TOTALS"] = str(reports / "totals.json")  # written by the locustfile
    if args.api_key:
        env["FASTCTX_API_KEY"] = args.api_key
    # fmt: off
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "-u", str(args.users), "-r", str(args.spawn_rate or args.users), "-t", args.run_time,
        "--stop-timeout", "10", "--only-summary", "--csv", str(reports / "fastctx"),
        "--html", str(reports / "report.html"), "--logfile", str(reports / "locust.log"),
        # The failure ratio decides the exit status below, not locust's any-failure rule.
        "--exit-code-on-error", "0",
        *args.locust_args,
    ]
    # fmt: on
    code = subprocess.run(command, env=env, check=False).returncode
    if code != 0:
        raise SystemExit(f"locust exited with status {code}; see {reports / 'locust.log'}")
    written = json.loads((reports / "totals.json").read_text())
    return Totals(written["requests"], written["failures"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reports = args.reports or HERE / "reports" / datetime.now().strftime("%Y%m%d-%H%M%S")
    reports.mkdir(parents=True, exist_ok=True)
    backend = {"memory": "memory://", "redis": "redis"}.get(args.backend, args.backend)
    with contextlib.ExitStack() as stack:
        if args.host:
            host, what = args.host.rstrip("/"), args.host
        else:
            if backend == "redis":
                backend = stack.enter_context(redis_server(reports))
            log = reports / "fastctx.log"
            host = stack.enter_context(fastctx_server(backend, args.workers, args.api_key, log))
            what = f"a fastctx started here ({backend}, {args.workers} worker(s))"
        print(f"load test: {args.users} users for {args.run_time} against {what}", flush=True)
        result = run_locust(args, host, reports)
    print(
        f"\n{result.requests} requests, {result.failures} failed "
        f"({result.ratio:.4%}, allowed {args.max_failure_ratio:.4%}); reports in {reports}"
    )
    if result.requests == 0:
        print("no request was made", file=sys.stderr)
        return 1
    return 0 if result.ratio <= args.max_failure_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
