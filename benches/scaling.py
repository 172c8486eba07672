"""Scaling evidence: what one read costs as fastctx nodes are added in front of one Redis.

On a 2-core machine the throughput of 1..4 nodes cannot grow linearly, so this measures what
does not depend on free cores: for each node count and each request mix, the CPU the fastctx
processes spend per request, the commands and CPU Redis spends per request, and the share of
reads answered from the node's cache. Flat costs per request as nodes are added mean the
nodes scale out; Redis's cost per request says how many nodes one Redis can feed.

Every node is one granian worker (`fastctx serve`) on the same Redis; each node gets its own
wrk, paced (WRK_DELAY_MS) so that the machine is not saturated and the CPU figures are not
inflated by contention. The mixes:
  hit       GET of 500 warm contexts (served from each node's cache)
  no-cache  the same GETs with `Cache-Control: no-cache` (a Redis read each)
  mixed     9 GETs to 1 merge PATCH over the same 500 contexts: every write invalidates the
            other nodes' copies, so their next read of that context goes to Redis

Run: .venv/bin/python benches/scaling.py [--nodes 1,2,3,4] [--duration 8]
Writes benches/results/scaling.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from load import Request, Result, write_requests, wrk
from run import CONTEXT, MERGE_PATCH, cache_reads, create_contexts
from servers import BENCHES, SERVERS, Process, Stack, free_port

RESULTS = BENCHES / "results" / "scaling.json"
TOKENS = 500
CONNECTIONS = 8  # per node
DELAY_MS = 1.0  # per request and connection: about 4-6k req/s per node, well under saturation
MIXES = ("hit", "no-cache", "mixed")


def mix_requests(mix: str, tokens: Sequence[str]) -> list[Request]:
    reads = [
        Request(
            "GET",
            f"/v1/contexts/{token}",
            {"Cache-Control": "no-cache"} if mix == "no-cache" else {},
            None,
        )
        for token in tokens
    ]
    if mix != "mixed":
        return reads
    requests: list[Request] = []
    for step, read in enumerate(reads):
        requests.append(read)
        if step % 9 == 8:
            body = b'{"step":%d}' % step
            requests.append(Request("PATCH", read.path, MERGE_PATCH, body))
    return requests


class Redis:
    """Redis's own counters, read through redis-cli."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def counters(self) -> dict[str, float]:
        info: dict[str, float] = {}
        for line in self.stack.redis_cli("INFO", "all").splitlines():
            key, _, value = line.strip().partition(":")
            if key in ("total_commands_processed", "used_cpu_user", "used_cpu_sys"):
                info[key] = float(value)
            elif key.startswith("cmdstat_"):  # cmdstat_get:calls=12,usec=...
                info[key] = float(value.split(",")[0].removeprefix("calls="))
        return info


def cpu_seconds(processes: Sequence[Process]) -> float:
    total = 0.0
    for process in processes:
        for member in process.tree():
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system
    return total


@contextlib.contextmanager
def nodes(stack: Stack, count: int, workdir: Path) -> Iterator[list[tuple[int, Process]]]:
    template, health = SERVERS["fastctx-redis"]
    started: list[tuple[int, Process]] = []
    try:
        for index in range(count):
            port = free_port()
            command = [part.format(port=port, redis=stack.redis_port) for part in template]
            env = {**os.environ, "FASTCTX_LOG_LEVEL": "warning"}
            process = Process(f"node{index}", command, env, workdir)
            started.append((port, process))
            process.wait_ready(port, health)
        yield started
    finally:
        for _, process in started:
            process.stop()


def measure(
    stack: Stack, servers: list[tuple[int, Process]], mix: str, tokens: Sequence[str], args: Any
) -> dict[str, Any]:
    requests_file = Path(args.workdir) / f"{mix}.lua"
    write_requests(mix_requests(mix, tokens), requests_file)
    # A short unmeasured run warms every node's cache with the contexts.
    drive(servers, requests_file, 2.0)
    redis = Redis(stack)
    processes = [process for _, process in servers]
    before_redis, before_cpu = redis.counters(), cpu_seconds(processes)
    before_reads = [cache_reads(port) for port, _ in servers]
    summaries = drive(servers, requests_file, args.duration)
    after_redis, after_cpu = redis.counters(), cpu_seconds(processes)
    after_reads = [cache_reads(port) for port, _ in servers]

    served = sum(summary["requests"] for summary in summaries)
    errors = sum(Result.from_wrk(mix, summary).error_count for summary in summaries)
    pairs = list(zip(after_reads, before_reads, strict=True))
    hits = sum(after.get("hit", 0) - before.get("hit", 0) for after, before in pairs)
    reads = sum(sum(after.values()) - sum(before.values()) for after, before in pairs)
    redis_cpu = sum(after_redis[k] - before_redis[k] for k in ("used_cpu_user", "used_cpu_sys"))
    commands = after_redis["total_commands_processed"] - before_redis["total_commands_processed"]
    # Commands run inside scripts count too (Redis counts them), so a PATCH's script shows
    # as EVALSHA plus the GET, SET, XADD... it runs.
    calls = {k: after_redis[k] - before_redis.get(k, 0) for k in after_redis if "cmdstat_" in k}
    by_command = {k.removeprefix("cmdstat_"): round(v / served, 4) for k, v in calls.items() if v}
    seconds = max(summary["duration_us"] for summary in summaries) / 1e6
    return {
        "nodes": len(servers),
        "mix": mix,
        "requests": served,
        "rps": round(served / seconds, 1),
        "errors": errors,
        "node_cpu_us_per_request": round((after_cpu - before_cpu) / served * 1e6, 2),
        "redis_cpu_us_per_request": round(redis_cpu / served * 1e6, 2),
        "redis_commands_per_request": round(commands / served, 4),
        "cache_hit_share": round(hits / reads, 4) if reads else None,
        "redis_commands_per_request_by_command": by_command,
    }


def drive(servers: list[tuple[int, Process]], requests_file: Path, seconds: float) -> list[Any]:
    """One paced wrk per node, all at once; their summaries."""
    summaries: list[Any] = [None] * len(servers)

    def one(index: int, port: int) -> None:
        summaries[index] = wrk(port, requests_file, seconds, CONNECTIONS, None, DELAY_MS)

    threads = [
        threading.Thread(target=one, args=(index, port)) for index, (port, _) in enumerate(servers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summaries


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'nodes':>5}  {'mix':<8}  {'req/s':>8}  {'node CPU us/req':>15}  "
        f"{'Redis CPU us/req':>16}  {'Redis cmds/req':>14}  {'cache hits':>10}  {'errors':>6}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        hit = row["cache_hit_share"]
        lines.append(
            f"{row['nodes']:>5}  {row['mix']:<8}  {row['rps']:>8,.0f}  "
            f"{row['node_cpu_us_per_request']:>15.1f}  {row['redis_cpu_us_per_request']:>16.2f}  "
            f"{row['redis_commands_per_request']:>14.3f}  "
            f"{'-' if hit is None else f'{hit:.1%}':>10}  {row['errors']:>6}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,2,3,4", help="node counts, comma-separated")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastctx-scaling-") as workdir:
        args.workdir = workdir
        stack = Stack(Path(workdir), None)
        try:
            for count in counts:
                stack.redis_cli("FLUSHALL")
                with nodes(stack, count, Path(workdir)) as servers:
                    tokens = create_contexts(servers[0][0], TOKENS)
                    for mix in MIXES:
                        row = measure(stack, servers, mix, tokens, args)
                        print(table([row]).splitlines()[-1], flush=True)
                        rows.append(row)
        finally:
            stack.close()
    print(f"\n{table(rows)}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benches/scaling.py", *(sys.argv[1:] if argv is None else argv)]),
        "connections_per_node": CONNECTIONS,
        "delay_ms": DELAY_MS,
        "context_bytes": len(CONTEXT),
        "rows": rows,
    }
    args.output.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"\nsaved to {args.output}")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
