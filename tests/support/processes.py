"""Child processes of the tests: the `fastctx` command with exactly the settings given."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FASTCTX_BIN = Path(sys.executable).with_name("fastctx")


def clean_env(**settings: Any) -> dict[str, str]:
    """The current environment without any FASTCTX_* variable, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCTX_")}
    for name, value in settings.items():
        env[f"FASTCTX_{name.upper()}"] = str(value)
    return env


def stop_process(
    proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Signal the process we started (SIGTERM unless told), then SIGKILL its own process group
    if it lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    return proc.returncode


@dataclass
class Spawned:
    """A `fastctx` process in a session of its own; its stdout and stderr go to `log`."""

    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, args: Sequence[str], log: Path, cwd: Path, **settings: Any) -> Spawned:
        """`fastctx <args>` with exactly the given FASTCTX_* settings, run in `cwd`."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(FASTCTX_BIN), *args],
                env=clean_env(**settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )
        return cls(proc, log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.proc)
