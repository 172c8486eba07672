"""The HTTP benchmark's targets, its tables, and the machine facts saved with its results."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from load import Result

# From the rows of one script, by name: run.py's Results, or another script's own records.
Measure = Callable[[Mapping[str, Any]], float | None]


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal of the issue: the measured value must reach `bound` (or, `at_most`, stay under)."""

    name: str
    measure: Measure
    bound: float
    at_most: bool = False
    unit: str = ""

    @property
    def goal(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.bound:g}{self.unit}"

    def met(self, value: float) -> bool:
        return value <= self.bound if self.at_most else value >= self.bound


def _measured(results: Mapping[str, Result], *rows: str) -> bool:
    return all(row in results and not results[row].failed for row in rows)


def ratio(row: str) -> Measure:
    return lambda r: r[row].ratio if _measured(r, row) else None


def times(row: str, peer: str) -> Measure:
    return lambda r: r[row].rps / r[peer].rps if _measured(r, row, peer) else None


def p99(row: str) -> Measure:
    return lambda r: r[row].p99_ms if _measured(r, row) else None


def errors(r: Mapping[str, Result]) -> float:
    """Error responses and socket errors, with each row that could not run as one more."""
    return float(sum(x.error_count + bool(x.failed) for x in r.values()))


def evaluate(targets: Sequence[Target], results: Mapping[str, Any]) -> list[dict[str, Any]]:
    evaluated = []
    for target in targets:
        value = target.measure(results)
        evaluated.append(
            {
                "target": target.name,
                "goal": target.goal,
                "measured": None if value is None else round(value, 3),
                "unit": target.unit,
                "met": None if value is None else target.met(value),
            }
        )
    return evaluated


def table(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """Aligned columns: the first to the left, the last free, the numbers between to the right."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *lines, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        middle = [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
        return "  ".join([cells[0].ljust(widths[0]), *middle, cells[-1]]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), rule, *(fmt(line) for line in lines)])


def results_table(results: Sequence[Result]) -> str:
    lines = []
    for r in results:
        if r.failed:
            lines.append([r.row, "-", "-", "-", "-", "-", f"FAILED: {r.failed.splitlines()[0]}"])
            continue
        timed = bool(r.rps) and "contexts_created" not in r.details
        lines.append(
            [
                r.row,
                f"{r.rps:,.0f}" if timed else "-",
                f"{r.p50_ms:.2f}" if timed else "-",
                f"{r.p99_ms:.2f}" if timed else "-",
                "-" if r.ratio is None else f"{r.ratio:.2f}",
                json.dumps(r.errors) if r.errors else "0",
                r.note,
            ]
        )
    return table(["row", "req/s", "p50 ms", "p99 ms", "/ bare", "errors", "note"], lines)


VERDICTS: Mapping[bool | None, str] = {True: "met", False: "NOT MET", None: "not measured"}


def targets_table(
    evaluated: Sequence[Mapping[str, Any]], verdicts: Mapping[bool | None, str] = VERDICTS
) -> str:
    lines = [
        [
            t["target"],
            t["goal"],
            "-" if t["measured"] is None else f"{t['measured']:g}{t['unit']}",
            verdicts[t["met"]],
        ]
        for t in evaluated
    ]
    return table(["target", "goal", "measured", ""], lines)


def _first_line(command: Sequence[str]) -> str:
    with contextlib.suppress(OSError, IndexError):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).splitlines()[0].strip()
    return "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = ["fastctx", "granian", "starlette", "redis", "hiredis", "uvloop"]
    packages += ["fastapi", "uvicorn", "httptools", "orjson", "mcp", "fastmcp"]
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "redis_server": _first_line(["redis-server", "--version"]),
        "wrk": _first_line(["wrk", "-v"]),
    }
