"""benches/conversation.py, run small end to end: the result file keeps every field it promises."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from support.processes import REPO, clean_env

ROW_FIELDS = {
    "size": str,
    "size_bytes": int,
    "way": str,
    "read": str,
    "clients": int,
    "conversations": int,
    "turns_per_conversation": int,
    "turns": int,
    "seconds": float,
    "turns_per_s": float,
    "redis_received_bytes_per_turn": float,
    "redis_sent_bytes_per_turn": float,
    "redis_bytes_per_turn": float,
    "redis_cpu_ms_per_turn": float,
    "node_cpu_ms_per_turn": float,
    "client_cpu_ms_per_turn": float,
    "p50_ms": float,
    "p99_ms": float,
    "max_ms": float,
    "document_bytes_end_max": int,
    "conflicts": int,
    "stale_reads": int,
    "b_reads_by_x_cache": dict,
    "other_cpu_cores": float,
    "noisy": bool,
}
OPTIONS = {
    "sizes_bytes", "ways", "read", "conversations", "turns_per_client", "growth_share",
    "max_seconds", "warmup_turns", "message_bytes", "recent_messages", "server_workers", "nodes",
}  # fmt: skip
MACHINE = {"cpu", "nproc", "kernel", "python", "packages", "redis_server", "wrk"}


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_small_run_writes_every_field_and_the_docs_page_shows_it(tmp_path: Path) -> None:
    output = tmp_path / "conversation.json"
    # The whole read: it works on every server; the partial read is the default of `make bench`.
    done = subprocess.run(
        [
            sys.executable, str(REPO / "benches" / "conversation.py"),
            "--sizes", "1KiB,8KiB", "--conversations", "2", "--turns", "15", "--warmup", "1",
            "--duration", "2", "--read", "whole", "--noise-budget", "0", "--output", str(output),
        ],
        env=clean_env(), cwd=REPO, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads(output.read_text())

    assert set(saved) == {
        "date", "command", "options", "machine", "rows", "targets", "noisy_rows", "elapsed_s",
    }  # fmt: skip
    assert saved["command"].startswith("benches/conversation.py --sizes 1KiB,8KiB")
    assert set(saved["options"]) == OPTIONS
    assert saved["options"]["read"] == "whole"
    assert set(saved["machine"]) == MACHINE
    rows = {(row["size_bytes"], row["way"]): row for row in saved["rows"]}
    assert list(rows) == [(1024, "delta"), (1024, "whole"), (8192, "delta"), (8192, "whole")]
    for (size, way), row in rows.items():
        assert set(row) == set(ROW_FIELDS), (size, way)
        for field, kind in ROW_FIELDS.items():
            allowed = (int, float) if kind is float else kind
            assert isinstance(row[field], allowed), (size, way, field, row[field])
        assert row["read"] == "whole"
        assert 2 <= row["turns"] <= 2 * 15
        assert row["turns_per_s"] > 0
        # Every turn writes a message of 300 bytes to Redis and reads at least one back.
        assert row["redis_received_bytes_per_turn"] > 300
        assert row["redis_sent_bytes_per_turn"] > 300
        assert row["node_cpu_ms_per_turn"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert sum(row["b_reads_by_x_cache"].values()) == row["turns"]
    # A 1 KiB conversation takes one turn, then the next: it stays about its size.
    assert rows[(1024, "delta")]["turns_per_conversation"] == 1
    assert rows[(1024, "delta")]["document_bytes_end_max"] == 1024 + 301

    targets = saved["targets"]
    assert [t["target"].split(",")[0] for t in targets] == [
        "turns/s at 8 KiB / at 1 KiB",
        "Redis bytes per turn",
        "Redis bytes per turn at 8 KiB",
    ]
    for target in targets:
        assert isinstance(target["measured"], float)
        assert target["verdict"] == {True: "PASS", False: "FAIL"}[target["met"]]
        printed = [line for line in done.stdout.splitlines() if line.startswith(target["target"])]
        assert printed, target
        assert printed[0].endswith(target["verdict"])
    assert "turns/s  Redis B/turn  node CPU ms/turn  p50 ms  p99 ms" in done.stdout

    page = load(REPO / "benches" / "docs_page.py").render(tmp_path, tmp_path / "no-history")
    section = page.split("## Conversations (`benches/conversation.py`)", 1)[1]
    assert "Command: `benches/conversation.py --sizes 1KiB,8KiB" in section
    assert "| 8 KiB | whole | whole |" in section
    assert "| Redis bytes per turn at 8 KiB, whole way / delta way | >= 100x |" in section
