"""Change stream fan-out: idle subscribers' cost to one worker, and one event's reach.

(a) 10,000 idle SSE subscribers on one `fastctx serve` worker (Redis backend), each on a
    context of its own: the growth of the server's RSS (target <= 100 MiB) and the rate of the
    REST GET hot path (wrk, cache hits) with them connected against without (target: within
    10%).
(b) 1,000 subscribers of one context on node A, the write made through node B: the delay
    from sending the write to each subscriber receiving its event (target: all within 100 ms).
(c) The floor of (a): the RSS growth of granian serving `hold` below, an app that only holds
    each event stream open, to as many clients, in HTTP/1-only mode (as `fastctx serve` runs
    it) and, for comparison, granian's `auto` mode (HTTP/1 and HTTP/2).

Subscribers are raw asyncio sockets (an HTTP/1.1 GET and a byte scan, no HTTP library) in a
child process of their own (this file, run with --subscriber-process), so that the client
does not take the server's core. Both run with RLIMIT_NOFILE raised to its hard limit: this
process raises it before it starts anything, and every child inherits it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.client
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from load import OtherLoad, Quiet, Request, Result, write_requests, wrk
from run import create_contexts
from servers import BENCHES, Process, Stack, free_port, granian

RESULTS = BENCHES / "results" / "fanout.json"
RSS_TARGET_MIB = 100.0
RATE_TARGET = 0.10  # the GET rate with subscribers may be at most this much lower
LATENCY_TARGET_MS = 100.0
JSON = {"Content-Type": "application/json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
# A wrk run during which other processes used more CPU than this (in cores) is rerun while the
# run's budget for waiting lasts, and flagged if it stays so: this machine is shared.
NOISY_CORES = 0.25


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def hold(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor of an idle event stream: headers, a `retry:` line, then wait for the client
    to leave; /healthz answers at once."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass


# The subscriber process: commands in, one JSON line per command out.

_UPDATED = re.compile(rb'event: updated\ndata: \{"token":"[0-9A-Za-z]+","version":(\d+)')


class Subscribers:
    """Raw SSE clients: each sends one GET and then only scans what arrives for events."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.arrivals: list[tuple[int, int, float]] = []  # (subscriber, version, monotonic)

    async def open(self, port: int, paths: list[str], concurrency: int) -> dict[str, Any]:
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []

        async def one(path: str) -> None:
            async with gate:
                try:
                    async with asyncio.timeout(30):
                        await self._subscribe(port, path)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    failures.append(repr(exc))

        started = time.monotonic()
        await asyncio.gather(*(one(path) for path in paths))
        return {
            "opened": len(paths) - len(failures),
            "failed": len(failures),
            "failures": failures[:5],
            "seconds": round(time.monotonic() - started, 2),
        }

    async def _subscribe(self, port: int, path: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            writer.close()
            raise ValueError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        seen = b""
        while b"retry:" not in seen:  # sent once the server has subscribed this client
            chunk = await reader.read(4096)
            if not chunk:
                raise ValueError("the stream ended before it started")
            seen += chunk
        index = len(self.writers)
        self.writers.append(writer)
        self.tasks.append(asyncio.create_task(self._follow(index, reader, seen)))

    async def _follow(self, index: int, reader: asyncio.StreamReader, tail: bytes) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                now = time.monotonic()
                buffer = tail + data
                end = 0
                for match in _UPDATED.finditer(buffer):
                    self.arrivals.append((index, int(match.group(1)), now))
                    end = match.end()
                tail = buffer[max(end, len(buffer) - 512) :]

    async def close(self) -> int:
        count = len(self.writers)
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.writers, self.tasks = [], []
        return count


async def subscriber_process() -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    subscribers = Subscribers()
    while line := await stdin.readline():
        command = json.loads(line)
        reply: dict[str, Any]
        if "open" in command:
            spec = command["open"]
            reply = await subscribers.open(spec["port"], spec["paths"], spec["concurrency"])
        elif "arrivals" in command:
            reply = {"arrivals": subscribers.arrivals}
            subscribers.arrivals = []
        elif "close" in command:
            reply = {"closed": await subscribers.close()}
        else:
            break
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    await subscribers.close()


class SubscriberProcess:
    """The parent's handle on the subscriber process."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, __file__, "--subscriber-process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.popen.stdin is not None
        assert self.popen.stdout is not None
        self.popen.stdin.write(json.dumps(command) + "\n")
        self.popen.stdin.flush()
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"the subscriber process exited with {self.popen.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stop(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


# The measuring process.


def rss_mib(process: Process) -> float:
    """Resident memory of the server's whole process tree (granian's and its worker's)."""
    total = 0
    for member in process.tree():
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def settled_rss(process: Process, seconds: float = 3.0) -> float:
    """RSS once it has stopped moving (the largest of the last samples)."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_mib(process))
        time.sleep(0.25)
    return max(samples[-4:])


def write_get_requests(tokens: list[str], workdir: Path) -> Path:
    requests_file = workdir / "get.lua"
    write_requests([Request("GET", f"/v1/contexts/{t}", {}, None) for t in tokens], requests_file)
    return requests_file


def get_rate(port: int, tokens: list[str], workdir: Path, args: argparse.Namespace) -> Result:
    """One wrk run of cache-hit GETs, in a quiet moment if the budget allows."""
    requests_file = write_get_requests(tokens, workdir)
    quiet: Quiet = args.quiet
    while True:
        quiet.wait()
        other = OtherLoad()
        summary = wrk(port, requests_file, args.duration, args.connections, None)
        load = other.cores()
        if not quiet.noisy(load) or not quiet.afford(args.duration):
            break
    result = Result.from_wrk("GET", summary)
    result.details["other_cpu_cores"] = round(load, 3)
    return result


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def idle_subscribers(
    stack: Stack, subscribers: SubscriberProcess, args: argparse.Namespace
) -> dict[str, Any]:
    port, node = stack.node("fanout-idle")
    try:
        hot = create_contexts(port, 500)
        followed = create_contexts(port, args.idle)
        wrk(port, write_get_requests(hot, stack.workdir), 2, args.connections, None)  # warm-up
        rss_before = settled_rss(node)
        without = get_rate(port, hot, stack.workdir, args)
        paths = [f"/v1/contexts/{token}/events" for token in followed]
        opened = subscribers.ask({"open": {"port": port, "paths": paths, "concurrency": 256}})
        rss_with = settled_rss(node)
        with_subscribers = get_rate(port, hot, stack.workdir, args)
        subscribers.ask({"close": True})
        time.sleep(2)
        without_after = get_rate(port, hot, stack.workdir, args)
    finally:
        node.stop()
    baseline = (without.rps + without_after.rps) / 2
    growth = rss_with - rss_before
    change = with_subscribers.rps / baseline - 1
    return {
        "subscribers": opened,
        "rss_before_mib": round(rss_before, 1),
        "rss_with_mib": round(rss_with, 1),
        "rss_growth_mib": round(growth, 1),
        "rss_per_subscriber_kib": round(growth * 1024 / max(1, opened["opened"]), 2),
        "rss_target_mib": RSS_TARGET_MIB,
        "rss_met": growth <= RSS_TARGET_MIB and opened["failed"] == 0,
        "get_rps_without": without.rps,
        "get_rps_with": with_subscribers.rps,
        "get_rps_without_after": without_after.rps,
        "get_p99_ms_without": without.p99_ms,
        "get_p99_ms_with": with_subscribers.p99_ms,
        "get_rate_change": round(change, 4),
        "get_errors": {
            "without": without.errors,
            "with": with_subscribers.errors,
            "without_after": without_after.errors,
        },
        "other_cpu_cores": {
            "without": without.details["other_cpu_cores"],
            "with": with_subscribers.details["other_cpu_cores"],
            "without_after": without_after.details["other_cpu_cores"],
        },
        "rate_target": f"within {RATE_TARGET:.0%}",
        "rate_met": change >= -RATE_TARGET,
    }


def floor(stack: Stack, subscribers: SubscriberProcess, args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mode in ("auto", "1"):
        port = free_port()
        template = granian("fanout:hold", mode, "--backpressure", str(raise_nofile()))
        command = [part.format(port=port) for part in template]
        process = Process(f"floor-http-{mode}", command, dict(os.environ), stack.workdir)
        try:
            process.wait_ready(port, "/healthz")
            before = settled_rss(process)
            opened = subscribers.ask(
                {"open": {"port": port, "paths": ["/events"] * args.idle, "concurrency": 256}}
            )
            growth = settled_rss(process) - before
            subscribers.ask({"close": True})
        finally:
            process.stop()
        found[f"http_{mode}"] = {
            "streams": opened["opened"],
            "rss_growth_mib": round(growth, 1),
            "rss_per_stream_kib": round(growth * 1024 / max(1, opened["opened"]), 2),
        }
    return found


def one_event_to_many(
    stack: Stack, subscribers: SubscriberProcess, args: argparse.Namespace
) -> dict[str, Any]:
    port_a, node_a = stack.node("fanout-a")
    try:
        port_b, node_b = stack.node("fanout-b")
        try:
            (token,) = create_contexts(port_b, 1)
            paths = [f"/v1/contexts/{token}/events"] * args.fanout
            opened = subscribers.ask({"open": {"port": port_a, "paths": paths, "concurrency": 256}})
            time.sleep(1)
            sent: dict[int, float] = {}
            acknowledged: list[float] = []
            connection = http.client.HTTPConnection("127.0.0.1", port_b, timeout=10)
            try:
                for n in range(args.trials):
                    started = time.monotonic()
                    connection.request(
                        "PATCH", f"/v1/contexts/{token}", b'{"n":%d}' % n, MERGE_PATCH
                    )
                    response = connection.getresponse()
                    body = response.read()
                    acknowledged.append((time.monotonic() - started) * 1000)
                    if response.status != 200:
                        raise RuntimeError(f"PATCH answered {response.status}: {body!r}")
                    sent[int(json.loads(body)["version"])] = started
                    time.sleep(args.pause)
            finally:
                connection.close()
            time.sleep(1)
            arrivals = subscribers.ask({"arrivals": True})["arrivals"]
            subscribers.ask({"close": True})
        finally:
            node_b.stop()
    finally:
        node_a.stop()
    latencies = sorted(
        (at - sent[version]) * 1000 for _, version, at in arrivals if version in sent
    )
    expected = opened["opened"] * len(sent)
    per_trial: dict[int, float] = {}
    for _, version, at in arrivals:
        if version in sent:
            per_trial[version] = max(per_trial.get(version, 0.0), (at - sent[version]) * 1000)
    return {
        "subscribers": opened,
        "writes": len(sent),
        "deliveries": len(latencies),
        "missed": expected - len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2),
        "slowest_per_write_ms": [round(per_trial[v], 1) for v in sorted(per_trial)],
        "write_ack_p50_ms": round(statistics.median(acknowledged), 2),
        "target_ms": LATENCY_TARGET_MS,
        "met": latencies[-1] <= LATENCY_TARGET_MS and expected == len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscriber-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=int, default=10_000, help="idle subscribers, (a)")
    parser.add_argument("--fanout", type=int, default=1000, help="subscribers of one context, (b)")
    parser.add_argument("--trials", type=int, default=30, help="writes through node B, (b)")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between writes, (b)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run, (a)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections, (a)")
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=120.0,
        help="seconds this run may spend waiting for, and rerunning after, other processes' load",
    )
    args = parser.parse_args()
    args.quiet = Quiet(NOISY_CORES, args.quiet_budget)
    nofile = raise_nofile()
    if args.subscriber_process:
        import uvloop

        uvloop.run(subscriber_process())
        return 0
    needed = args.idle + args.connections + 100
    if nofile < needed:
        raise SystemExit(f"RLIMIT_NOFILE is {nofile}; {needed} descriptors are needed")
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(Path(workdir), None)
        subscribers = SubscriberProcess()
        try:
            idle = idle_subscribers(stack, subscribers, args)
            fanout = one_event_to_many(stack, subscribers, args)
            held = floor(stack, subscribers, args)
        finally:
            subscribers.stop()
            stack.close()
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rlimit_nofile": nofile,
        "cpus": os.cpu_count(),
        "idle_subscribers": idle,
        "fanout": fanout,
        "floor": held,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    verdict = {True: "met", False: "NOT met"}
    print(
        f"{idle['subscribers']['opened']} idle subscribers on one worker "
        f"({idle['subscribers']['failed']} refused): RSS +{idle['rss_growth_mib']:.1f} MiB "
        f"({idle['rss_per_subscriber_kib']:.1f} KiB each; target <= {RSS_TARGET_MIB:.0f} MiB: "
        f"{verdict[idle['rss_met']]})"
    )
    print(
        f"GET hot path: {idle['get_rps_with']:.0f} req/s with them, "
        f"{idle['get_rps_without']:.0f} / {idle['get_rps_without_after']:.0f} without (before / "
        f"after): {idle['get_rate_change']:+.1%} (target within {RATE_TARGET:.0%}: "
        f"{verdict[idle['rate_met']]})"
    )
    print(
        f"one write through node B to {fanout['subscribers']['opened']} subscribers on node A, "
        f"{fanout['writes']} writes: p50 {fanout['p50_ms']:.1f} ms, p99 {fanout['p99_ms']:.1f} "
        f"ms, max {fanout['max_ms']:.1f} ms, {fanout['missed']} missed (target all <= "
        f"{LATENCY_TARGET_MS:.0f} ms: {verdict[fanout['met']]})"
    )
    print(
        "floor, granian holding as many streams for an app that does nothing else: "
        + ", ".join(
            f"HTTP mode {mode.removeprefix('http_')} +{f['rss_growth_mib']:.1f} MiB "
            f"({f['rss_per_stream_kib']:.1f} KiB each)"
            for mode, f in held.items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
