"""Drive a server with wrk and benches/wrk/requests.lua, and read back what it measured."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from servers import BENCHES, pinned

WRK_SCRIPT = BENCHES / "wrk" / "requests.lua"
_ERRORS = {"non_2xx_3xx": "status", "connect": "connect", "read": "read", "write": "write"}
_ERRORS["timeout"] = "timeout"


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes | None


@dataclasses.dataclass
class Result:
    """One row of the table; `errors` holds only the kinds that happened."""

    row: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    ratio: float | None = None
    note: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    failed: str | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @classmethod
    def from_wrk(cls, row: str, summary: Mapping[str, Any]) -> Result:
        seconds = summary["duration_us"] / 1e6
        return cls(
            row=row,
            rps=round(summary["requests"] / seconds, 1) if seconds else 0.0,
            p50_ms=summary["p50_us"] / 1000,
            p90_ms=summary["p90_us"] / 1000,
            p99_ms=summary["p99_us"] / 1000,
            max_ms=summary["max_us"] / 1000,
            requests=summary["requests"],
            seconds=round(seconds, 3),
            errors={name: summary[key] for name, key in _ERRORS.items() if summary[key]},
        )


def _lua_string(value: str | bytes) -> str:
    text = value.decode() if isinstance(value, bytes) else value
    return json.dumps(text)  # a JSON string literal is a Lua one too, for ASCII text


def write_requests(requests: Sequence[Request], path: Path) -> None:
    """The Lua file that requests.lua cycles through."""
    lines = []
    for request in requests:
        headers = ", ".join(
            f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in request.headers.items()
        )
        body = "nil" if request.body is None else _lua_string(request.body)
        lines.append(
            f"  {{method = {_lua_string(request.method)}, path = {_lua_string(request.path)}, "
            f"headers = {{{headers}}}, body = {body}}},"
        )
    path.write_text("return {\n" + "\n".join(lines) + "\n}\n")


def wrk(
    port: int,
    requests_file: Path,
    seconds: float,
    connections: int,
    cores: str | None,
    delay_ms: float | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run wrk (one thread) with requests.lua and return the summary its done() hook prints."""
    command = pinned(
        cores,
        [
            shutil.which("wrk") or "wrk",
            *(
                "-t1",
                f"-c{connections}",
                f"-d{max(1, math.ceil(seconds))}s",
                "--latency",
                "--timeout",
                "5s",
            ),
            *("-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}"),
        ],
    )
    env = {**os.environ, "WRK_REQUESTS": str(requests_file)}
    if delay_ms is not None:
        env["WRK_DELAY_MS"] = f"{delay_ms:.3f}"
    if stop_after is not None:
        env["WRK_STOP_AFTER"] = str(stop_after)
    output = []
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith("@@stopped"):
                # wrk's main thread sleeps for all of -d even once its worker has stopped.
                process.send_signal(signal.SIGINT)
    for line in output:
        if line.startswith("@@wrk "):
            summary: dict[str, Any] = json.loads(line.removeprefix("@@wrk "))
            return summary
    raise RuntimeError(f"wrk gave no summary (exit {process.returncode}):\n{''.join(output)}")


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    # Steal counts too: a hypervisor that takes the CPU away disturbs a run like a process does.
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0) - _guest(times))


def _guest(times: Any) -> float:
    # Linux already counts guest time inside user time.
    return float(getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0))


def _own_seconds() -> float:
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    ended = os.times()  # children that ended and were waited for: wrk runs, redis-cli
    return total + ended.children_user + ended.children_system


class OtherLoad:
    """CPU that processes outside this benchmark used while a row ran, in cores.

    This machine is shared (builds, tests); a row measured while something else ran is
    flagged rather than silently reported as the server's speed.
    """

    def __init__(self) -> None:
        self._busy, self._own, self._clock = _busy_seconds(), _own_seconds(), time.monotonic()

    def cores(self) -> float:
        busy, own = _busy_seconds() - self._busy, _own_seconds() - self._own
        elapsed = time.monotonic() - self._clock
        return max(0.0, (busy - own) / elapsed) if elapsed > 0 else 0.0


class Quiet:
    """Waits out other processes before a measured run, within one time budget for the run."""

    def __init__(self, threshold_cores: float, budget_s: float) -> None:
        self.threshold = threshold_cores
        self.budget = budget_s

    def noisy(self, cores: float) -> bool:
        return cores > self.threshold

    def wait(self) -> float:
        """Seconds spent waiting for the other processes' CPU to fall under the threshold."""
        started = time.monotonic()
        while self.budget > 0:
            probe = OtherLoad()
            time.sleep(0.5)
            self.budget -= 0.5
            if not self.noisy(probe.cores()):
                break
        return time.monotonic() - started

    def afford(self, seconds: float) -> bool:
        """Take `seconds` from the budget for a rerun, if it has them."""
        if self.budget < seconds:
            return False
        self.budget -= seconds
        return True
