"""The code samples of README.md and docs/ run against a real server, so they cannot drift.

Each page's `sh` blocks run in order as one bash script, its `python` blocks in order as one
program, with `localhost:8000` and `127.0.0.1:8000` pointing at a `fastctx serve` on a free
port. A block preceded by `<!-- not run: why -->` is skipped; other languages never run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN = ("sh", "python")
NOT_RUN = re.compile(r"^<!-- not run: .+ -->$")
FENCE = re.compile(r"^```\s*([\w+-]*)")
ADDRESSES = ("localhost:8000", "127.0.0.1:8000")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skipped: bool


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, outside any other block."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start = index
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            index += 1
        previous = lines[start - 1].strip() if start else ""
        found.append(
            Block(
                page,
                start + 1,
                opening.group(1).lower(),
                "\n".join(lines[start + 1 : index]) + "\n",
                bool(NOT_RUN.match(previous)),
            )
        )
        index += 1
    return found


def program(page: Path, language: str, port: int) -> str:
    """The page's runnable blocks of one language, each headed by where it comes from."""
    parts = []
    for block in blocks(page):
        if block.language == language and not block.skipped:
            code = block.code
            for address in ADDRESSES:
                code = code.replace(address, f"127.0.0.1:{port}")
            parts.append(f"# {page.relative_to(REPO)}, line {block.line}\n{code}")
    return "\n".join(parts)


CASES = [
    pytest.param(page, language, id=f"{page.relative_to(REPO)}-{language}")
    for page in PAGES
    for language in RUN
    if any(b.language == language and not b.skipped for b in blocks(page))
]


def test_the_samples_are_found() -> None:
    """The pages the quick start lives in have samples that run (a parser gone wrong would
    otherwise pass every page by finding nothing)."""
    ids = {case.id for case in CASES}
    for wanted in ("README.md-sh", "README.md-python", "docs/getting-started.md-sh"):
        assert wanted in ids
    assert "docs/getting-started.md-python" in ids


@pytest.mark.parametrize(("page", "language"), CASES)
def test_sample(page: Path, language: str, server_pool: object, tmp_path: Path) -> None:
    server = server_pool.granian("memory")  # type: ignore[attr-defined]
    port = int(server.base_url.rsplit(":", 1)[1])
    source = program(page, language, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCTX_")}
    # python3 in the samples is this interpreter, which has fastctx and the MCP SDK.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if language == "sh":
        command = ["bash", "-c", "set -euo pipefail\n" + source]
    else:
        command = [sys.executable, "-c", source]
    # A session of its own, so that whatever a sample starts is stopped with it.
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "timed out after 90 s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, (
        f"{page.relative_to(REPO)} ({language}) exited {proc.returncode}\n"
        f"--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- program\n{source}"
    )


def test_skipped_blocks_say_why() -> None:
    """`<!-- not run -->` alone would hide a sample for no stated reason."""
    for page in PAGES:
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if line.startswith("<!-- not run"):
                assert NOT_RUN.match(line), f"{page}:{number}: <!-- not run: why -->"
                assert FENCE.match(lines[number]), f"{page}:{number}: not before a fence"
