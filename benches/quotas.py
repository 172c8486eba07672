"""Tenant rates across two nodes: how exactly FASTCTX_TENANT_RATE holds, and what it costs.

Two `fastctx serve` nodes (A and B) on one private redis-server, with API keys for two
tenants. Every request is a GET of one of the tenant's warm contexts (a cache hit on the node
it reaches), so that what is measured is the rate check, not Redis.

  exactness  `acme`, bound to RATE requests a second, is driven by wrk through A and through B
             at once, paced at ACME_PER_NODE requests a second each (far over its rate, and
             well under what a node serves, so that both runs below offer the same load);
             `globex`, under the same bound, is driven through A at a quarter of it. acme's
             admitted rate is the deployment's: its requests through both nodes less the
             refused (429) ones. The bucket admits at most its burst (one second's worth) +
             RATE x seconds.
  isolation  globex's p50 and p99 in the run above, against the same drive with the rate off
             (acme served, not refused): a tenant at its bound must not slow the other.
             (Unpaced, acme would ask more of a node that refuses it, which answers faster.)
  cost       one node, one tenant under its bound (the bound far over what it asks), against
             the same node with no bound: the share of a GET hit's throughput the check keeps.

Run: .venv/bin/python benches/quotas.py [--rate 2000] [--duration 8]
Writes benches/results/quotas.json and prints the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import report
from load import Request, write_requests, wrk
from run import create_contexts
from servers import BENCHES, Process, Stack

RESULTS = BENCHES / "results" / "quotas.json"
KEYS = "acme:key-acme,globex:key-globex"
ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}
TOKENS = 100
CONNECTIONS = 8
PACED_SHARE = 0.25  # globex asks for about this share of its bound
ACME_PER_NODE = 8000  # requests a second acme asks of each node
UNBOUNDED = 10_000_000  # a bound no run reaches: the check runs, nothing is refused


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="acme's and globex's bound")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    return parser.parse_args(argv)


@contextlib.contextmanager
def nodes(stack: Stack, count: int, **settings: str) -> Iterator[list[int]]:
    started: list[Process] = []
    ports: list[int] = []
    try:
        for name in "ab"[:count]:
            port, process = stack.node(f"quotas-{name}", api_keys=KEYS, **settings)
            started.append(process)
            ports.append(port)
        yield ports
    finally:
        for process in started:
            process.stop()


def requests_file(workdir: Path, name: str, port: int, headers: Mapping[str, str]) -> Path:
    """GETs of TOKENS contexts of the tenant, made (and so cached) through `port`."""
    tokens = create_contexts(port, TOKENS, headers)
    path = workdir / f"{name}.lua"
    write_requests([Request("GET", f"/v1/contexts/{t}", headers, None) for t in tokens], path)
    return path


def drive(runs: Sequence[tuple[str, int, Path, float | None]], seconds: float) -> dict[str, Any]:
    """wrk runs at once, one thread each: name -> its summary."""
    summaries: dict[str, Any] = {}

    def one(name: str, port: int, path: Path, delay_ms: float | None) -> None:
        summaries[name] = wrk(port, path, seconds, CONNECTIONS, None, delay_ms)

    threads = [threading.Thread(target=one, args=run) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summaries


def pace_ms(rate: float) -> float:
    """The per-request delay of each of CONNECTIONS connections that together ask for `rate`
    requests a second (wrk's delay is per request of a connection)."""
    return CONNECTIONS * 1000 / rate


def shared_rate(
    stack: Stack, workdir: Path, rate: int, seconds: float, bound: bool
) -> dict[str, Any]:
    settings = {"tenant_rate": str(rate)} if bound else {}
    with nodes(stack, 2, **settings) as (a, b):
        # Contexts made before the run; the bucket refills meanwhile (one second of rate).
        files = {
            "acme-a": requests_file(workdir, "acme-a", a, ACME),
            "acme-b": requests_file(workdir, "acme-b", b, ACME),
            "globex": requests_file(workdir, "globex", a, GLOBEX),
        }
        summaries = drive(
            [
                ("acme-a", a, files["acme-a"], pace_ms(ACME_PER_NODE)),
                ("acme-b", b, files["acme-b"], pace_ms(ACME_PER_NODE)),
                ("globex", a, files["globex"], pace_ms(rate * PACED_SHARE)),
            ],
            seconds,
        )
    acme = [summaries["acme-a"], summaries["acme-b"]]
    elapsed = max(s["duration_us"] for s in acme) / 1e6
    asked = sum(s["requests"] for s in acme)
    admitted = asked - sum(s["status"] for s in acme)
    globex = summaries["globex"]
    return {
        "seconds": round(elapsed, 3),
        "acme_asked_per_s": round(asked / elapsed, 1),
        "acme_admitted_per_s": round(admitted / elapsed, 1),
        "acme_admitted_by_node": [s["requests"] - s["status"] for s in acme],
        # The most the bucket may grant over the run: its burst and its fill.
        "acme_admitted_ceiling_per_s": round((rate + rate * elapsed) / elapsed, 1),
        "globex_per_s": round(globex["requests"] / (globex["duration_us"] / 1e6), 1),
        "globex_refused": globex["status"],
        "globex_p50_ms": globex["p50_us"] / 1000,
        "globex_p99_ms": globex["p99_us"] / 1000,
    }


def check_cost(stack: Stack, workdir: Path, seconds: float, rounds: int = 2) -> dict[str, Any]:
    """Off and on in turn, `rounds` times each, so that the host's drift falls on both."""
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for label, settings in (("off", {}), ("on", {"tenant_rate": str(UNBOUNDED)})):
            with nodes(stack, 1, **settings) as (port,):
                path = requests_file(workdir, f"cost-{label}", port, ACME)
                summary = drive([("acme", port, path, None)], seconds)["acme"]
                if summary["status"]:
                    raise RuntimeError(f"{summary['status']} refused under an unbounded rate")
                rates[label].append(summary["requests"] / (summary["duration_us"] / 1e6))
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {
        "get_hit_off_per_s": round(off, 1),
        "get_hit_on_per_s": round(on, 1),
        "on_over_off": round(on / off, 3),
        "runs_per_s": {label: [round(r, 1) for r in runs] for label, runs in rates.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastctx-quotas-") as name:
        workdir = Path(name)
        stack = Stack(workdir, None)
        try:
            bounded = shared_rate(stack, workdir, args.rate, args.duration, bound=True)
            unbounded = shared_rate(stack, workdir, args.rate, args.duration, bound=False)
            cost = check_cost(stack, workdir, args.duration)
        finally:
            stack.close()
    admitted = bounded["acme_admitted_per_s"]
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benches/quotas.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": report.machine(),
        "rate": args.rate,
        "bounded": bounded,
        "unbounded": unbounded,
        "cost": cost,
        "admitted_over_rate": round(admitted / args.rate, 3),
        "admitted_over_ceiling": round(admitted / bounded["acme_admitted_ceiling_per_s"], 3),
        "globex_p99_over_unbounded": round(
            bounded["globex_p99_ms"] / max(unbounded["globex_p99_ms"], 1e-3), 3
        ),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"acme, bound to {args.rate}/s, through two nodes: asked "
        f"{bounded['acme_asked_per_s']:,.0f}/s, "
        f"admitted {admitted:,.0f}/s ({result['admitted_over_rate']:.3f} of its rate, "
        f"{result['admitted_over_ceiling']:.3f} of what the bucket may grant; by node "
        f"{bounded['acme_admitted_by_node']})\n"
        f"globex, under the same bound, through A: {bounded['globex_per_s']:,.0f}/s, "
        f"{bounded['globex_refused']} refused, p50 {bounded['globex_p50_ms']:.2f} ms, p99 "
        f"{bounded['globex_p99_ms']:.2f} ms; with no bound (acme served): p50 "
        f"{unbounded['globex_p50_ms']:.2f} ms, p99 {unbounded['globex_p99_ms']:.2f} ms "
        f"({result['globex_p99_over_unbounded']:.3f} of it)\n"
        f"the check on a GET hit, one node, under its bound: {cost['get_hit_on_per_s']:,.0f}/s "
        f"against {cost['get_hit_off_per_s']:,.0f}/s with no bound ({cost['on_over_off']:.3f})\n"
        f"written to {RESULTS.relative_to(BENCHES.parent)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
