"""`make bench`: drive the floors, fastctx and its peers with wrk side by side; print and save."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import http.client
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import report
from load import OtherLoad, Quiet, Request, Result, write_requests, wrk
from report import Target, errors, p99, ratio, times
from servers import BENCHES, Stack, http_request, serving_worker

RESULTS = BENCHES / "results" / "latest.json"
CONTEXT_BYTES = 1024
TOKENS = 500
JSON = {"Content-Type": "application/json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
# A row during which other processes used more CPU than this (in cores) is flagged as noisy.
NOISY_CORES = 0.25

# Where wrk, Redis and the server under test run on this 2-core machine (--pin).
PINNINGS: dict[str, dict[str, str | None]] = {
    "client": {"server": None, "wrk": "1", "redis": "1"},
    "split": {"server": "0", "wrk": "1", "redis": "1"},
    "none": {"server": None, "wrk": None, "redis": None},
}
PINNING_WHY = {
    "split": (
        "the server under test alone on core 0, wrk and redis-server on core 1: of the three "
        "layouts it gave the steadiest figures here (4 runs each: GET cache hit varied 0.6% "
        "split, 6% with only the client pinned, 11% unpinned). It costs the bare floor about a "
        "quarter, as granian's Rust I/O thread then shares the core with Python: "
        "floor-bare-unpinned shows the difference in each run"
    ),
    "client": "wrk and redis-server on core 1; the server under test free to use both cores",
    "none": "no pinning: the scheduler places everything",
}


def context_document(size: int = CONTEXT_BYTES) -> bytes:
    """A plausible transaction context, padded to exactly `size` bytes of compact JSON."""
    document = {
        "order": 421337,
        "customer": {"id": "c-20931", "tier": "gold", "country": "NL"},
        "items": [{"sku": f"SKU-{i:04d}", "qty": i % 3 + 1, "price": 9.99 + i} for i in range(6)],
        "status": "pending",
        "trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "notes": "",
    }
    filler = size - len(json.dumps(document, separators=(",", ":")))
    if filler < 0:
        raise ValueError(f"a context cannot be smaller than {size - filler} bytes")
    document["notes"] = "x" * filler
    return json.dumps(document, separators=(",", ":")).encode()


CONTEXT = context_document()


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a kind of server (servers.SERVERS) and what wrk sends it."""

    name: str
    server: str
    method: str = "GET"
    path: str = "/"  # "{token}" here or in the body: one per context created, cycled through
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    paced_from: str | None = None  # run at half the rate that row reached, to read its p99
    pin: str | None = None  # a PINNINGS layout for this row instead of the run's --pin
    # Bodies with "{step}" come in this many versions, so that each request to a context
    # differs from the one before it and a write is never a no-op.
    steps: int = 1
    # "api": contexts created through the server's REST API (and so cached by fastctx);
    # "redis": written straight to Redis as ctx:{token}, for peers that have no such API.
    contexts: str = "api"
    # How many contexts the row makes for "{token}" (its requests go round them in turn).
    count: int = TOKENS
    # MCP: open a session with this protocol version before the row, and send its id.
    mcp_session: str | None = None
    # Every request (and the contexts' creation) carries an OAuth access token (a JWT).
    oauth: bool = False

    @property
    def needs_contexts(self) -> bool:
        return "{token}" in self.path or b"{token}" in (self.body or b"")

    @property
    def json_rpc(self) -> bool:
        return self.body is not None and self.body.startswith(b'{"jsonrpc"')

    def requests(
        self, tokens: Sequence[str], extra_headers: Mapping[str, str] | None = None
    ) -> list[Request]:
        headers = {**self.headers, **(extra_headers or {})}
        return [
            Request(self.method, self.path.format(token=token), headers, self._body(step, token))
            for step in range(self.steps)
            for token in (tokens if self.needs_contexts else [""])
        ]

    def _body(self, step: int, token: str) -> bytes | None:
        if self.body is None:
            return None
        return self.body.replace(b"{step}", b"%d" % step).replace(b"{token}", token.encode())


MCP_JSON = {**JSON, "Accept": "application/json, text/event-stream"}
MCP_SESSION_VERSION = "2025-11-25"
MCP_MODERN_VERSION = "2026-07-28"
# 2026-07-28: no session; the envelope rides in params._meta, mirrored by routing headers.
MCP_MODERN = {
    **MCP_JSON,
    "MCP-Protocol-Version": MCP_MODERN_VERSION,
    "Mcp-Method": "tools/call",
    "Mcp-Name": "context_get",
}
MCP_SESSION = {**MCP_JSON, "MCP-Protocol-Version": MCP_SESSION_VERSION}


def rpc_body(method: str, params: Mapping[str, object], id: int | None = 1) -> bytes:
    message: dict[str, object] = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        message["id"] = id
    return json.dumps(message, separators=(",", ":")).encode()


MCP_GET = {"name": "context_get", "arguments": {"token": "{token}"}}
MCP_GET_SESSION = rpc_body("tools/call", MCP_GET)
MCP_GET_MODERN = rpc_body(
    "tools/call",
    {
        **MCP_GET,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MCP_MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    },
)


TOKEN_PATH = "/v1/contexts/{token}"
GET_HIT_ROW = Row("fastctx-redis-get-hit", "fastctx-redis", path=TOKEN_PATH)
POST_ROW = Row("fastctx-redis-post", "fastctx-redis", "POST", "/v1/contexts", JSON, CONTEXT)
PATCH_ROW = Row(
    "fastctx-redis-patch",
    "fastctx-redis",
    "PATCH",
    TOKEN_PATH,
    MERGE_PATCH,
    b'{"status":"paid","step":{step}}',
    steps=2,
)


def _beside(row: Row, variant: str) -> Row:
    """`row` against the server of the same name with one setting turned on (`-sealed`, ...)."""
    return dataclasses.replace(row, name=f"{row.name}-{variant}", server=f"{row.server}-{variant}")


ROWS = [
    Row("floor-bare", "floor-bare"),
    # For scale: the same floor with the scheduler free to place everything.
    Row("floor-bare-unpinned", "floor-bare", pin="none"),
    Row("floor-starlette", "floor-starlette"),
    # What granian alone charges for receiving a 1 KiB POST: the ceiling of any create.
    Row("floor-bare-post", "floor-bare", "POST", "/", JSON, CONTEXT),
    # The same, plus one SET of the body in Redis before the answer: the ceiling of any create
    # stored before it is answered, over fastctx's own connection to Redis.
    Row("floor-redis-post", "floor-bare-redis", "POST", "/", JSON, CONTEXT),
    # The half-rate latency of an app that does nothing, under the same paced load as the GET
    # row's: what wrk's pacing and granian leave of the p99 target before fastctx does anything.
    Row("floor-bare-half-rate", "floor-bare", paced_from="floor-bare"),
    Row("fastctx-memory-get", "fastctx-memory", path=TOKEN_PATH),
    GET_HIT_ROW,
    Row(
        "fastctx-redis-get-half-rate",
        "fastctx-redis",
        path=TOKEN_PATH,
        paced_from="fastctx-redis-get-hit",
    ),
    Row(
        "fastctx-redis-get-nocache",
        "fastctx-redis",
        path=TOKEN_PATH,
        headers={"Cache-Control": "no-cache"},
    ),
    PATCH_ROW,
    # The same patches from every connection to one context (a conversation many clients
    # write, a hot transaction): its writers queue on the node and go to Redis together.
    dataclasses.replace(PATCH_ROW, name="fastctx-redis-patch-one-context", count=1),
    # Last for its server: it leaves a few hundred thousand contexts behind.
    POST_ROW,
    # With encryption at rest: a create and a merge patch, which seal what they store (a
    # cache hit opens nothing; what opening a frame costs is in the micro benchmarks).
    _beside(PATCH_ROW, "sealed"),
    _beside(POST_ROW, "sealed"),
    # With traces on, one request in ten sampled: what tracing costs a hit and a create (rows
    # to read beside the untraced ones; docs/operations/tracing.md says where the cost goes).
    _beside(GET_HIT_ROW, "traced"),
    _beside(POST_ROW, "traced"),
    Row("peer-fastapi-get", "peer-fastapi", path=TOKEN_PATH),
    Row("peer-fastapi-post", "peer-fastapi", "POST", "/v1/contexts", JSON, CONTEXT),
    Row("fastctx-mcp-get-stateless", "fastctx-mcp", "POST", "/mcp", MCP_MODERN, MCP_GET_MODERN),
    # The same call with OAuth on: one client's JWT on every request, as a client sends it.
    Row(
        "fastctx-mcp-get-stateless-oauth",
        "fastctx-mcp-oauth",
        "POST",
        "/mcp",
        MCP_MODERN,
        MCP_GET_MODERN,
        oauth=True,
    ),
    # The session is checked (and its idle expiry slid) in Redis on every request.
    Row(
        "fastctx-mcp-get-session",
        "fastctx-mcp",
        "POST",
        "/mcp",
        MCP_SESSION,
        MCP_GET_SESSION,
        mcp_session=MCP_SESSION_VERSION,
    ),
    # The peers are asked in 2026-07-28 too: with JSON responses, their fastest path (the SDK
    # answers such a request in the ASGI task; a stateless session-era one spins up a session).
    Row(
        "peer-fastmcp-get",
        "peer-fastmcp",
        "POST",
        "/mcp",
        MCP_MODERN,
        MCP_GET_MODERN,
        contexts="redis",
    ),
    Row(
        "peer-mcp-sdk-get",
        "peer-mcp-sdk",
        "POST",
        "/mcp",
        MCP_MODERN,
        MCP_GET_MODERN,
        contexts="redis",
    ),
]
BARE = "floor-bare"
MEMORY = "fastctx-redis-memory"
ROW_NAMES = [*(row.name for row in ROWS), MEMORY]

TARGETS = [
    Target("GET cache hit / bare floor", ratio("fastctx-redis-get-hit"), 0.75),
    Target("GET no-cache / bare floor", ratio("fastctx-redis-get-nocache"), 0.55),
    Target("POST / bare floor", ratio("fastctx-redis-post"), 0.40),
    Target("merge PATCH / bare floor", ratio("fastctx-redis-patch"), 0.25),
    # The write rows against the floor that reads the same 1 KiB body.
    Target("POST / bare POST floor", times("fastctx-redis-post", "floor-bare-post"), 0.75),
    Target("merge PATCH / bare POST floor", times("fastctx-redis-patch", "floor-bare-post"), 0.6),
    Target(
        "Redis GET hit / memory GET", times("fastctx-redis-get-hit", "fastctx-memory-get"), 0.95
    ),
    Target(
        "GET / FastAPI peer GET", times("fastctx-redis-get-hit", "peer-fastapi-get"), 10, unit="x"
    ),
    Target(
        "POST / FastAPI peer POST", times("fastctx-redis-post", "peer-fastapi-post"), 10, unit="x"
    ),
    Target("MCP get stateless / bare floor", ratio("fastctx-mcp-get-stateless"), 0.30),
    Target("MCP get session / bare floor", ratio("fastctx-mcp-get-session"), 0.30),
    Target(
        "MCP get stateless, OAuth / without",
        times("fastctx-mcp-get-stateless-oauth", "fastctx-mcp-get-stateless"),
        0.9,
    ),
    Target(
        "MCP get stateless / FastMCP get",
        times("fastctx-mcp-get-stateless", "peer-fastmcp-get"),
        20,
        unit="x",
    ),
    Target(
        "MCP get session / FastMCP get",
        times("fastctx-mcp-get-session", "peer-fastmcp-get"),
        20,
        unit="x",
    ),
    Target("POST sealed / clear", times("fastctx-redis-post-sealed", "fastctx-redis-post"), 0.9),
    Target(
        "merge PATCH sealed / clear",
        times("fastctx-redis-patch-sealed", "fastctx-redis-patch"),
        0.9,
    ),
    Target("GET p99 at half the max rate", p99("fastctx-redis-get-half-rate"), 2, True, " ms"),
    Target("RSS growth / payload, 1 KiB contexts", ratio(MEMORY), 2, at_most=True),
    Target("error responses and failed rows", errors, 0, at_most=True),
]


@dataclasses.dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    connections: int
    memory_contexts: int
    pin: dict[str, str | None]
    quiet: Quiet

    def wrk(
        self,
        port: int,
        requests_file: Path,
        seconds: float,
        delay_ms: float | None = None,
        stop_after: int | None = None,
    ) -> Result:
        summary = wrk(
            port, requests_file, seconds, self.connections, self.pin["wrk"], delay_ms, stop_after
        )
        return Result.from_wrk(requests_file.stem, summary)


def create_contexts(port: int, count: int, headers: Mapping[str, str] | None = None) -> list[str]:
    """Create `count` 1 KiB contexts over one keep-alive connection and read each back once."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    tokens = []
    headers = dict(headers or {})
    try:
        for _ in range(count):
            connection.request("POST", "/v1/contexts", CONTEXT, {**JSON, **headers})
            response = connection.getresponse()
            body = response.read()
            if response.status != 201:
                raise RuntimeError(f"creating a context answered {response.status}: {body[:200]!r}")
            tokens.append(json.loads(body)["token"])
        # The GET rows measure warm reads: this puts every context in the serving node's cache.
        for token in tokens:
            connection.request("GET", f"/v1/contexts/{token}", headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"reading a fresh context answered {response.status}")
    finally:
        connection.close()
    return tokens


def cache_reads(port: int) -> dict[str, float]:
    """fastctx's reads by X-Cache value, from /metrics; empty for servers without it."""
    counts: dict[str, float] = {}
    try:
        status, body = http_request(port, "GET", "/metrics")
    except (OSError, http.client.HTTPException):
        return counts
    for line in body.decode(errors="replace").splitlines() if status == 200 else []:
        if line.startswith("fastctx_context_reads_total{") and 'cache="' in line:
            labels, _, value = line.rpartition(" ")
            counts[labels.split('cache="')[1].split('"')[0]] = float(value)
    return counts


def cache_note(before: Mapping[str, float], after: Mapping[str, float]) -> str:
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    total = sum(delta.values())
    shares = [f"{k} {v / total:.1%}" for k, v in sorted(delta.items()) if v] if total else []
    return f"X-Cache {', '.join(shares)}" if shares else ""


def measure(
    port: int, options: Options, requests_file: Path, delay_ms: float | None = None
) -> Result:
    """One measured wrk run in a quiet moment, rerun while the budget lasts if it was not quiet.

    The machine is shared (builds, test runs): a row measured while something else took a core
    would be reported as the server's speed, so the CPU used by other processes is measured
    around each run and kept with the result.
    """
    waited, attempts = 0.0, 0
    while True:
        waited += options.quiet.wait()
        attempts += 1
        other = OtherLoad()
        before = cache_reads(port)
        result = options.wrk(port, requests_file, options.duration, delay_ms)
        reads = cache_reads(port)
        load = other.cores()
        if not options.quiet.noisy(load) or not options.quiet.afford(options.duration):
            break
    result.details |= {"other_cpu_cores": round(load, 3), "attempts": attempts}
    result.details["waited_for_quiet_s"] = round(waited, 1)
    notes = [cache_note(before, reads)]
    if options.quiet.noisy(load):
        notes.append(f"NOISY: other processes used {load:.2f} cores")
    result.note = "; ".join(n for n in notes if n)
    return result


def seed_contexts(stack: Stack, count: int) -> list[str]:
    """Write `count` 1 KiB contexts straight to Redis as ctx:{token}, for the peers to read."""
    tokens = [secrets.token_urlsafe(16) for _ in range(count)]
    commands = "".join(f"SET ctx:{token} {json.dumps(CONTEXT.decode())}\n" for token in tokens)
    stack.redis_cli(stdin=commands)
    if int(stack.redis_cli("EXISTS", *(f"ctx:{token}" for token in tokens))) != count:
        raise RuntimeError("seeding the contexts in Redis failed")
    return tokens


def _connection(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=10)


def open_mcp_session(port: int, version: str) -> str:
    """initialize and notifications/initialized, as a client does once: the session's id."""
    connection = _connection(port)
    try:
        params = {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "fastctx-bench", "version": "1"},
        }
        connection.request("POST", "/mcp", rpc_body("initialize", params), MCP_JSON)
        response = connection.getresponse()
        body = response.read()
        session = response.getheader("mcp-session-id")
        if response.status != 200 or session is None:
            raise RuntimeError(f"initialize answered {response.status}: {body[:200]!r}")
        headers = {**MCP_JSON, "Mcp-Session-Id": session, "MCP-Protocol-Version": version}
        connection.request("POST", "/mcp", rpc_body("notifications/initialized", {}, None), headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 202:
            raise RuntimeError(f"notifications/initialized answered {response.status}: {body!r}")
    finally:
        connection.close()
    return session


def check_rpc(port: int, request: Request) -> str:
    """Send a row's first request once: it must be a 2xx with a JSON-RPC result, no error.

    wrk counts only HTTP errors, and a session-era tool failure is a 200: this catches a row
    that would otherwise time failures.
    """
    connection = _connection(port)
    try:
        connection.request(request.method, request.path, request.body, dict(request.headers))
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    text = body.decode(errors="replace")
    if text.startswith(("event:", "data:")):  # a one-event SSE stream
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    result = message.get("result") if isinstance(message, dict) else None
    if not 200 <= response.status < 300 or not isinstance(result, dict) or result.get("isError"):
        raise RuntimeError(f"{request.method} {request.path} answered {response.status}: {text}")
    return f"{response.status} {' '.join(text.split())}"


def run_row(row: Row, port: int, options: Options, stack: Stack, done: dict[str, Result]) -> Result:
    auth = {"Authorization": f"Bearer {stack.access_token()}"} if row.oauth else {}
    tokens: list[str] = []
    if row.needs_contexts and row.contexts == "redis":
        tokens = seed_contexts(stack, row.count)
    elif row.needs_contexts:
        tokens = create_contexts(port, row.count, auth)
    extra = dict(auth)  # the headers every request of the row adds
    if row.mcp_session is not None:
        extra["Mcp-Session-Id"] = open_mcp_session(port, row.mcp_session)
    requests = row.requests(tokens, extra)
    if row.json_rpc:
        answer = check_rpc(port, requests[0])
        shown = answer if len(answer) <= 110 else answer[:106] + " ..."
        print(f"\n    checked: {shown}\n   ", end=" ", flush=True)
    requests_file = stack.workdir / f"{row.name}.lua"
    write_requests(requests, requests_file)
    if row.paced_from is not None:
        return run_paced(port, options, requests_file, done[row.paced_from])
    options.wrk(port, requests_file, options.warmup)
    return measure(port, options, requests_file)


def run_paced(port: int, options: Options, requests_file: Path, maximum: Result) -> Result:
    """wrk at about half of `maximum`'s rate, by a pause on each connection before each request.

    The pacing is approximate: wrk's delay() counts whole milliseconds (dithered in
    requests.lua to a fractional mean) and the pause adds to the response time, so a few short
    trial runs steer the pause towards the wanted rate before the measured run.
    """
    target = maximum.rps / 2
    cycle_ms = options.connections * 1000 / target
    delay_ms = max(0.0, cycle_ms - maximum.p50_ms)
    for _ in range(4):
        trial = options.wrk(port, requests_file, max(options.warmup, 2), delay_ms=delay_ms)
        if not trial.rps or abs(trial.rps / target - 1) < 0.03:
            break
        delay_ms = max(0.0, delay_ms + cycle_ms - options.connections * 1000 / trial.rps)
    result = measure(port, options, requests_file, delay_ms=delay_ms)
    share = result.rps / maximum.rps
    result.note = "; ".join(n for n in (f"paced at {share:.0%} of the max", result.note) if n)
    result.details |= {"target_rps": round(target), "mean_pause_ms": round(delay_ms, 3)}
    return result


def run_memory(stack: Stack, options: Options) -> Result:
    """RSS growth of the serving worker while it creates (and so caches) N 1 KiB contexts."""
    requests_file = stack.workdir / f"{MEMORY}.lua"
    write_requests([Request("POST", "/v1/contexts", JSON, CONTEXT)], requests_file)
    with stack.server("fastctx-redis", options.pin["server"]) as (port, process):
        # A first batch settles the allocator and the parts of the app built on first use.
        warm = min(5000, options.memory_contexts)
        options.wrk(port, requests_file, 300, stop_after=warm)
        worker = serving_worker(process)
        time.sleep(0.5)
        keys_before, rss_before = int(stack.redis_cli("DBSIZE")), worker.memory_info().rss
        result = options.wrk(port, requests_file, 600, stop_after=options.memory_contexts)
        time.sleep(0.5)
        # Redis counts what was created, including the requests in flight when wrk stopped.
        keys_after, rss_after = int(stack.redis_cli("DBSIZE")), worker.memory_info().rss
        entries = metric(port, "fastctx_cache_entries")
    # One Redis key per context today; if that changes, fall back on wrk's count (which misses
    # only the requests in flight when it stopped).
    created = keys_after - keys_before
    if not result.requests <= created <= result.requests + options.connections:
        created = result.requests
    growth = rss_after - rss_before
    result.row = MEMORY
    result.ratio = growth / (created * CONTEXT_BYTES) if created else None
    result.note = f"+{growth / 2**20:.1f} MiB RSS for {created:,} contexts of {CONTEXT_BYTES} B"
    result.details = {
        "contexts_created": created,
        "payload_bytes": created * CONTEXT_BYTES,
        "worker_pid": worker.pid,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "cache_entries_after": entries,
        "warmup_contexts": warm,
    }
    return result


def metric(port: int, name: str) -> float | None:
    try:
        status, body = http_request(port, "GET", "/metrics")
    except (OSError, http.client.HTTPException):
        return None
    for line in body.decode(errors="replace").splitlines() if status == 200 else []:
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    # Whole seconds: wrk's -d takes no fractions.
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per row")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--only", help=f"rows, comma-separated ({BARE} always runs, for ratios)")
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--memory-contexts", type=int, default=100_000, metavar="N")
    parser.add_argument("--pin", choices=sorted(PINNINGS), default="split", help="core pinning")
    parser.add_argument(
        "--noise-budget",
        type=float,
        default=90,
        metavar="S",
        help="seconds this run may spend waiting for, and rerunning after, other processes' load",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON to write")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3, 1
        args.memory_contexts = min(args.memory_contexts, 20_000)
    return args


def selected(only: str | None) -> list[str]:
    """Names of the rows to run, in table order."""
    if not only:
        return ROW_NAMES
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    if unknown := wanted - set(ROW_NAMES):
        raise SystemExit(f"unknown rows {sorted(unknown)}; the rows are {', '.join(ROW_NAMES)}")
    wanted |= {BARE} | {row.paced_from for row in ROWS if row.name in wanted and row.paced_from}
    return [name for name in ROW_NAMES if name in wanted]


def run(names: Sequence[str], options: Options, workdir: Path) -> dict[str, Result]:
    results: dict[str, Result] = {}
    rows = [row for row in ROWS if row.name in names]
    stack = Stack(workdir, options.pin["redis"])
    try:
        for kind, layout in dict.fromkeys((row.server, row.pin) for row in rows):
            group = [row for row in rows if (row.server, row.pin) == (kind, layout)]
            setting = (
                options if layout is None else dataclasses.replace(options, pin=PINNINGS[layout])
            )
            try:
                with stack.server(kind, setting.pin["server"]) as (port, _):
                    for row in group:
                        print(f"  {row.name} ...", end=" ", flush=True)
                        results[row.name] = run_row(row, port, setting, stack, results)
                        print(f"{results[row.name].rps:,.0f} req/s", flush=True)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"FAILED\n{exc}", flush=True)
                for row in group:
                    results.setdefault(row.name, Result(row.name, failed=str(exc)))
        if MEMORY in names:
            print(f"  {MEMORY} ...", end=" ", flush=True)
            try:
                results[MEMORY] = run_memory(stack, options)
                print(results[MEMORY].note, flush=True)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"FAILED\n{exc}", flush=True)
                results[MEMORY] = Result(MEMORY, failed=str(exc))
    finally:
        stack.close()
    bare = results.get(BARE)
    for row in rows:
        result = results[row.name]
        if bare and bare.rps and not result.failed and row.paced_from is None:
            result.ratio = result.rps / bare.rps
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = selected(args.only)
    pin = PINNINGS[args.pin]
    quiet = Quiet(NOISY_CORES, args.noise_budget)
    options = Options(
        args.duration, args.warmup, args.connections, args.memory_contexts, pin, quiet
    )
    for tool in ("wrk", "redis-server", "redis-cli", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on the PATH (make bench installs wrk, redis-server)")
    layout = ", ".join(f"{part} on {cores or 'any core'}" for part, cores in pin.items())
    print(
        textwrap.fill(
            f"wrk -t1 -c{options.connections}, {options.duration:g} s per row after "
            f"{options.warmup:g} s of warm-up; {CONTEXT_BYTES} B contexts; one server worker. "
            f"Pinning {args.pin!r} ({layout}): {PINNING_WHY[args.pin]}.",
            100,
        ),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fastctx-bench-") as tmp:
        results = run(names, options, Path(tmp))
    ordered = [results[name] for name in ROW_NAMES if name in results]
    evaluated = report.evaluate(TARGETS, {r.row: r for r in ordered})
    print(f"\n{report.results_table(ordered)}\n\n{report.targets_table(evaluated)}")

    failures = [r for r in ordered if r.failed or r.errors]
    noisy = [r.row for r in ordered if quiet.noisy(r.details.get("other_cpu_cores", 0))]
    saved = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benches/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "options": {
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "connections": options.connections,
            "wrk_threads": 1,
            "server_workers": 1,
            "context_bytes": CONTEXT_BYTES,
            "contexts_per_row": TOKENS,
            "memory_contexts": options.memory_contexts,
        },
        "pinning": {"mode": args.pin, **pin, "why": PINNING_WHY[args.pin]},
        "machine": report.machine(),
        "rows": [dataclasses.asdict(r) | {"error_count": r.error_count} for r in ordered],
        "targets": evaluated,
        "noisy_rows": noisy,
        "ok": not failures,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    if noisy:
        print(f"other processes were busy during {', '.join(noisy)}: rerun those for figures")
    if failures:
        print("\nrows with errors (a run with errors measures nothing):", file=sys.stderr)
        for r in failures:
            problem = r.failed.splitlines()[0] if r.failed else json.dumps(r.errors)
            print(f"  {r.row}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
