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

Every node talks to one Redis, or (--redis cluster) to a 3-master Redis Cluster of its own.

Run: .venv/bin/python benches/scaling.py [--redis single|cluster] [--nodes 1,2,3,4]
Writes benches/results/scaling-{single,cluster}.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from load import Request, Result, write_requests, wrk
from run import CONTEXT, MERGE_PATCH, cache_reads, create_contexts
from servers import BENCHES, SERVERS, Process, Stack, free_port

RESULTS = BENCHES / "results" / "scaling.json"  # written as scaling-single/-cluster.json
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


class Cluster:
    """A 3-master Redis Cluster of our own (no replicas), on free ports."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.ports = [free_port() for _ in range(masters)]
        self.processes = []
        for port in self.ports:
            node_dir = workdir / f"cluster-{port}"
            node_dir.mkdir()
            command = [
                "redis-server",
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)),
                *("--save", "", "--appendonly", "no", "--cluster-enabled", "yes"),
                *("--cluster-port", str(free_port()), "--cluster-config-file", "nodes.conf"),
            ]
            self.processes.append(Process(f"redis-{port}", command, dict(os.environ), node_dir))
        for port in self.ports:
            deadline = time.monotonic() + 10
            while self.cli(port, "PING") != "PONG":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} did not start")
                time.sleep(0.05)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
            capture_output=True,
            check=True,
        )
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO") for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @staticmethod
    def cli(port: int, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    def flush(self) -> None:
        for port in self.ports:
            self.cli(port, "FLUSHALL")

    def close(self) -> None:
        for process in self.processes:
            process.stop()


# Redis's INFO fields that Redis.counters reads (besides the cmdstat_ calls).
COUNTERS = (
    "total_commands_processed",
    "used_cpu_user",
    "used_cpu_sys",
    "total_net_input_bytes",
    "total_net_output_bytes",
)


class Redis:
    """Redis's own counters, read through redis-cli; summed over a cluster's masters."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = ports

    def counters(self) -> dict[str, float]:
        info: dict[str, float] = {}
        for port in self.ports:
            for line in Cluster.cli(port, "INFO", "all").splitlines():
                key, _, text = line.strip().partition(":")
                if key in COUNTERS:
                    value = float(text)
                elif key.startswith("cmdstat_"):  # cmdstat_get:calls=12,usec=...
                    value = float(text.split(",")[0].removeprefix("calls="))
                else:
                    continue
                info[key] = info.get(key, 0.0) + value
        return info


def cpu_seconds(processes: Sequence[Process]) -> float:
    total = 0.0
    for process in processes:
        for member in process.tree():
            with contextlib.suppress(psutil.Error):
                total += _cpu_of(member)
    return total


def _cpu_of(member: psutil.Process) -> float:
    """A process's CPU seconds: to the nanosecond from its threads' schedstat where Linux
    gives it (cpu_times counts in clock ticks of 10 ms, which a short run of a fast node can
    fall entirely between), else from cpu_times."""
    total, found = 0, False
    for stat in Path(f"/proc/{member.pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[0])
            found = True
    if found:
        return total / 1e9
    times = member.cpu_times()
    return float(times.user + times.system)


@contextlib.contextmanager
def nodes(backend: str, count: int, workdir: Path) -> Iterator[list[tuple[int, Process]]]:
    template, health = SERVERS["fastctx-redis"]
    started: list[tuple[int, Process]] = []
    try:
        for index in range(count):
            port = free_port()
            command = [part.format(port=port, redis=0) for part in template]
            command[command.index("--backend") + 1] = backend
            env = {**os.environ, "FASTCTX_LOG_LEVEL": "warning"}
            process = Process(f"node{index}", command, env, workdir)
            started.append((port, process))
            process.wait_ready(port, health)
        yield started
    finally:
        for _, process in started:
            process.stop()


def measure(
    redis: Redis, servers: list[tuple[int, Process]], mix: str, tokens: Sequence[str], args: Any
) -> dict[str, Any]:
    requests_file = Path(args.workdir) / f"{mix}.lua"
    write_requests(mix_requests(mix, tokens), requests_file)
    # A short unmeasured run warms every node's cache with the contexts.
    drive(servers, requests_file, 2.0)
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
        "redis": args.redis,
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
    parser.add_argument(
        "--redis", choices=("single", "cluster"), default="single", help="one Redis or 3 masters"
    )
    parser.add_argument("--output", type=Path, default=None, help="the JSON to write")
    args = parser.parse_args(argv)
    args.output = args.output or RESULTS.with_name(f"scaling-{args.redis}.json")
    counts = [int(n) for n in args.nodes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastctx-scaling-") as workdir:
        args.workdir = workdir
        redis: Stack | Cluster
        if args.redis == "cluster":
            redis = Cluster(Path(workdir))
            backend, ports, flush = redis.url, redis.ports, redis.flush
        else:
            redis = Stack(Path(workdir), None)
            backend = f"redis://127.0.0.1:{redis.redis_port}/0"
            ports = [redis.redis_port]

            def flush() -> None:
                redis.redis_cli("FLUSHALL")

        try:
            for count in counts:
                flush()
                with nodes(backend, count, Path(workdir)) as servers:
                    tokens = create_contexts(servers[0][0], TOKENS)
                    for mix in MIXES:
                        row = measure(Redis(ports), servers, mix, tokens, args)
                        print(table([row]).splitlines()[-1], flush=True)
                        rows.append(row)
        finally:
            redis.close()
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
