"""The app's own cost per request, in process: no sockets, no granian, no wrk.

On a shared machine wrk's figures move with the neighbours' load (the hypervisor's steal time
lands on whichever row is running); this measures only what fastctx's Python and Rust spend on
one request, so two commits can be compared back to back on the same machine:

    .venv/bin/python benches/inprocess.py [--backend memory://|redis://...] [--requests 20000]

Each row drives the ASGI app (`fastctx.http.create_app`) with a prepared request and a
`receive`/`send` that do nothing else, and reports the median of several rounds in
microseconds per request, with the bare-ASGI floor of the same process beside it. The rows
send one request at a time, except `merge-patch-together`: the same patch from 64 tasks at
once to one context, whose writers queue and, on Redis, go in one append a batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]

DOCUMENT = json.dumps({"order": 42, "items": [{"sku": f"SKU-{i}", "qty": i} for i in range(24)]})
BODY = DOCUMENT.encode().ljust(1024)  # a 1 KiB body, JSON with trailing whitespace
TOGETHER = 64  # the tasks of the row that sends at once, as wrk's connections do


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }


async def _drive(app: App, scope: Scope, body: bytes, count: int) -> tuple[float, int]:
    """Seconds for `count` requests, and the status of the last one."""
    message = {"type": "http.request", "body": body, "more_body": False}
    status = 0

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        nonlocal status
        if event["type"] == "http.response.start":
            status = event["status"]

    started = time.perf_counter()
    for _ in range(count):
        await app(dict(scope), receive, send)
    return time.perf_counter() - started, status


async def _drive_together(
    app: App, scope: Scope, body: bytes, count: int, tasks: int
) -> tuple[float, int]:
    """`_drive`, from `tasks` tasks at once (`count` requests in all)."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_drive(app, scope, body, count // tasks) for _ in range(tasks))
    )
    return time.perf_counter() - started, results[-1][1]


async def _bare(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _lifespan(app: App) -> Callable[[], Awaitable[None]]:
    """Run the app's lifespan startup; returns what shuts it down."""
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    done: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})

    async def receive() -> dict[str, str]:
        return await queue.get()

    async def send(message: dict[str, str]) -> None:
        await done.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    started = await done.get()
    assert started["type"] == "lifespan.startup.complete", started

    async def stop() -> None:
        await queue.put({"type": "lifespan.shutdown"})
        await done.get()
        await task

    return stop


async def measure(backend: str, requests: int, rounds: int) -> dict[str, float]:
    from fastctx.config import Settings
    from fastctx.http import create_app

    app = create_app(Settings(backend=backend))
    stop = await _lifespan(app)
    try:
        json_type = [(b"content-type", b"application/json")]
        merge = [(b"content-type", b"application/merge-patch+json")]
        tokens: list[str] = []  # the token of the context the reads and patches use

        async def capture(scope: Scope, receive: Any, send: Any) -> None:
            async def keep(event: dict[str, Any]) -> None:
                if event["type"] == "http.response.body" and event["body"]:
                    tokens.append(json.loads(event["body"])["token"])

            await app(scope, receive, keep)

        await _drive(capture, _scope("POST", "/v1/contexts", json_type), BODY, 1)
        path = f"/v1/contexts/{tokens[0]}"
        patch = b'{"status": "paid"}'
        # name: (app, request, body, expected status, tasks sending at once)
        rows: dict[str, tuple[App, Scope, bytes, int, int]] = {
            "floor-bare": (_bare, _scope("GET", "/", []), b"", 200, 1),
            "get-hit": (app, _scope("GET", path, []), b"", 200, 1),
            "get-nocache": (
                app,
                _scope("GET", path, [(b"cache-control", b"no-cache")]),
                b"",
                200,
                1,
            ),
            "post": (app, _scope("POST", "/v1/contexts", json_type), BODY, 201, 1),
            "merge-patch": (app, _scope("PATCH", path, merge), patch, 200, 1),
            "merge-patch-together": (app, _scope("PATCH", path, merge), patch, 200, TOGETHER),
        }
        medians: dict[str, float] = {}
        for name, (target, scope, body, expected, tasks) in rows.items():
            per_request = []
            for _ in range(rounds):
                if tasks == 1:
                    seconds, status = await _drive(target, scope, body, requests)
                else:
                    seconds, status = await _drive_together(target, scope, body, requests, tasks)
                assert status == expected, (name, status)
                per_request.append(seconds / requests * 1e6)
            medians[name] = statistics.median(per_request)
        return medians
    finally:
        await stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="memory://")
    parser.add_argument("--requests", type=int, default=20_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON")
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    medians = runner(measure(args.backend, args.requests, args.rounds))
    if args.json:
        print(json.dumps(medians))
        return 0
    floor = medians["floor-bare"]
    print(f"{'row':<22} {'µs/request':>11} {'- floor µs':>11}   ({args.backend})")
    for name, value in medians.items():
        print(f"{name:<22} {value:>11.2f} {value - floor:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
