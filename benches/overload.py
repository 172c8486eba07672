"""Overload: one worker offered twice what it serves, with and without FASTCTX_MAX_INFLIGHT.

For each bound, the script first measures what one `fastctx serve` worker (Redis backend)
completes per second (closed loop), then offers twice that rate open loop for a while: a
request is due at a fixed time whether or not earlier ones were answered, and its latency is
counted from when it was due (no coordinated omission). It prints, per bound, how many were
admitted (2xx) and shed (503), and the p50/p99 latency of the admitted ones.

    .venv/bin/python benches/overload.py [--limits 0,128,1024] [--seconds 8] [--kind patch]
    .venv/bin/python benches/overload.py --sweep   # where throughput stops growing

The load generator is a minimal HTTP/1.1 client on raw asyncio connections, so that it can
offer more than the server serves on the same host.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from servers import Stack, http_request

try:
    import uvloop
except ImportError:  # pragma: no cover - the dev extra installs it
    uvloop = None  # type: ignore[assignment]

# The server gets a core of its own; Redis and this client share the others, so that what is
# measured is the server, not the client's own lag (on a one-core host all share one).
CORES = sorted(os.sched_getaffinity(0))
SERVER_CORES = str(CORES[0]) if len(CORES) > 1 else None
OTHER_CORES = ",".join(map(str, CORES[1:])) if len(CORES) > 1 else None
CONTEXTS = 500  # documents the patch and read loads spread over
MAX_CONNECTIONS = 4000  # the client opens up to this many while requests wait


def document(size: int) -> bytes:
    """A JSON object of about `size` bytes: a conversation's turns."""
    turn = b'{"role": "user", "text": "%s"}' % (b"x" * 200)
    count = max(1, size // (len(turn) + 1))
    return b'{"turns": [' + b",".join([turn] * count) + b"]}"


def _requests(kind: str, tokens: list[str], body: bytes) -> list[bytes]:
    """The requests to cycle through: one per token, or one create."""
    if kind == "create":
        return [
            b"POST /v1/contexts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        ]
    if kind == "read":
        return [
            b"GET /v1/contexts/%s HTTP/1.1\r\nHost: x\r\nCache-Control: no-cache\r\n\r\n"
            % token.encode()
            for token in tokens
        ]
    patch = b'{"step": "checkout"}'
    return [
        b"PATCH /v1/contexts/%s HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/merge-patch+json\r\nContent-Length: %d\r\n\r\n%s"
        % (token.encode(), len(patch), patch)
        for token in tokens
    ]


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, done: collections.deque[_Connection]) -> None:
        self.idle = done
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.pending: asyncio.Future[int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.pending = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.pending

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        length = 0
        marker = head.find(b"content-length:")
        if marker >= 0:
            length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[end + 4 + length :]
        if self.pending is not None and not self.pending.done():
            self.pending.set_result(status)
        self.pending = None
        self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.pending is not None and not self.pending.done():
            self.pending.set_result(0)


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: collections.deque[_Connection] = collections.deque()
        self.opened = 0

    async def connection(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost:
                return conn
        if self.opened >= MAX_CONNECTIONS:
            return None
        self.opened += 1
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: _Connection(self.idle), "127.0.0.1", self.port
        )
        return conn

    async def one(self, request: bytes) -> int:
        conn = await self.connection()
        if conn is None:
            return -1  # the client ran out of connections: counted apart
        return await conn.send(request)


async def closed_loop(
    port: int, requests: list[bytes], connections: int, seconds: float
) -> tuple[float, list[float]]:
    """2xx per second, and their latencies, with `connections` clients each waiting for its
    answer before it sends again."""
    client = Client(port)
    cycle = itertools.cycle(requests)
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        while (sent := time.monotonic()) < stop:
            if 200 <= await client.one(next(cycle)) < 300:
                latencies.append(time.monotonic() - sent)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(latencies) / (time.monotonic() - started), latencies


async def open_loop(
    port: int, requests: list[bytes], rate: float, seconds: float
) -> dict[int, list[float]]:
    """Latencies (s, from when each request was due) by status, at `rate` requests/s."""
    client = Client(port)
    cycle = itertools.cycle(requests)
    results: dict[int, list[float]] = collections.defaultdict(list)
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float, request: bytes) -> None:
        status = await client.one(request)
        results[status].append(time.monotonic() - due)

    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due_count = int((now - start) * rate) - sent
        for i in range(due_count):
            task = asyncio.ensure_future(one(start + (sent + i) / rate, next(cycle)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent += max(due_count, 0)
        await asyncio.sleep(0.001)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    return results


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _contexts(port: int, kind: str, body: bytes) -> list[str]:
    """The tokens of CONTEXTS new contexts to read or patch; none for a row of creates."""
    tokens = []
    for _ in range(0 if kind == "create" else CONTEXTS):
        status, answer = http_request(port, "POST", "/v1/contexts", body, {
            "content-type": "application/json"
        })  # fmt: skip
        assert status == 201, answer
        tokens.append(answer.split(b'"token":"')[1].split(b'"')[0].decode())
    return tokens


def run(limit: int, kind: str, size: int, seconds: float, stack: Stack) -> dict[str, float]:
    os.environ["FASTCTX_MAX_INFLIGHT"] = str(limit)
    body = document(size)
    with stack.server("fastctx-redis", SERVER_CORES) as (port, _):
        requests = _requests(kind, _contexts(port, kind, body), body)
        capacity, _ = asyncio.run(closed_loop(port, requests, 32, 3.0))
        results = asyncio.run(open_loop(port, requests, 2 * capacity, seconds))
    admitted = [v for status, values in results.items() if 200 <= status < 300 for v in values]
    shed = results.get(503, [])
    # -1: the client had no connection left to send on; 0: the server closed one.
    unsent = len(results.get(-1, []))
    other = sum(len(v) for s, v in results.items() if not (200 <= s < 300 or s in (503, -1)))
    return {
        "limit": limit,
        "capacity": capacity,
        "offered": 2 * capacity,
        "admitted/s": len(admitted) / seconds,
        "shed": len(shed),
        "unsent": unsent,
        "other": other,
        "p50 ms": 1000 * (statistics.median(admitted) if admitted else float("nan")),
        "p99 ms": 1000 * _pct(admitted, 0.99),
        "shed p99 ms": 1000 * _pct(shed, 0.99),
    }


def sweep(kind: str, size: int, seconds: float, stack: Stack) -> None:
    """Closed loop, no bound, more and more connections: where throughput stops growing,
    more requests in flight only add waiting; that is where a bound belongs."""
    os.environ["FASTCTX_MAX_INFLIGHT"] = "0"
    body = document(size)
    with stack.server("fastctx-redis", SERVER_CORES) as (port, _):
        requests = _requests(kind, _contexts(port, kind, body), body)
        for connections in (4, 16, 64, 128, 256, 512, 1024):
            rate, latencies = asyncio.run(closed_loop(port, requests, connections, seconds))
            print(
                f"in flight={connections:>5}  done={rate:>7.0f}/s  "
                f"p50={1000 * _pct(latencies, 0.5):>7.1f} ms  "
                f"p99={1000 * _pct(latencies, 0.99):>7.1f} ms",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="0,128,1024", help="FASTCTX_MAX_INFLIGHT values")
    parser.add_argument("--seconds", type=float, default=8.0, help="open-loop time per bound")
    # patch: a small request that costs the server a whole document (read, patch, write back).
    parser.add_argument("--kind", choices=("patch", "create", "read"), default="patch")
    # Large enough that the server, not this client, is what runs out of time.
    parser.add_argument("--bytes", type=int, default=65536, help="size of each context")
    parser.add_argument(
        "--sweep", action="store_true", help="closed loop at growing concurrency, no bound"
    )
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.install()
    if OTHER_CORES is not None:
        os.sched_setaffinity(0, set(CORES[1:]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastctx-overload-") as workdir:
        stack = Stack(Path(workdir), OTHER_CORES)
        try:
            if args.sweep:
                sweep(args.kind, args.bytes, args.seconds, stack)
                return 0
            for limit in (int(x) for x in args.limits.split(",")):
                rows.append(run(limit, args.kind, args.bytes, args.seconds, stack))
                print(_format(rows[-1]), flush=True)
        finally:
            with contextlib.suppress(Exception):
                stack.close()
    return 0


def _format(row: dict[str, float]) -> str:
    return (
        f"limit={int(row['limit']):>5}  capacity={row['capacity']:>7.0f}/s  "
        f"offered={row['offered']:>7.0f}/s  admitted={row['admitted/s']:>7.0f}/s  "
        f"shed={int(row['shed']):>7}  unsent={int(row['unsent']):>6}  "
        f"other={int(row['other']):>4}  "
        f"p50={row['p50 ms']:>8.1f} ms  p99={row['p99 ms']:>8.1f} ms  "
        f"shed p99={row['shed p99 ms']:>6.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
