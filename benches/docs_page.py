"""The docs' benchmarks page, written from the result files that the benchmark scripts save.

Run by the mkdocs hook when the site is built (`make docs`), or by hand:
`python benches/docs_page.py [results-dir]` prints the page.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BENCHES = Path(__file__).resolve().parent
RESULTS = BENCHES / "results"
# Result sets kept in git, one directory each, for a checkout that has not run the benchmarks.
REFERENCE = RESULTS / "reference"
# Past runs written up by hand, with their date, machine and commands: benches/history/*.md.
HISTORY = BENCHES / "history"

METHOD = """\
## Method

`make bench` runs, in this order, on the machine it is started on:

1. `benches/run.py`: starts its own `redis-server`, the floors (bare ASGI and Starlette apps
   that answer a constant; `floor-bare-post` reads a 1 KiB body first, the ceiling of any
   write, and `floor-redis-post` also stores it with one `SET` over fastctx's own Redis
   connection before answering, the ceiling of any write durable in Redis), fastctx, a
   "traditional" peer (FastAPI with uvicorn and redis-py, `benches/peers/`) and two MCP peers
   (FastMCP and the official SDK's `MCPServer`, on granian), each with one worker (the MCP
   row `-oauth` with OAuth on, every request carrying a JWT of a local oidc-provider), and drives
   each row with `wrk -t1 -c64` for 10 s after 2 s of warm-up, on 1 KiB contexts. Every ratio
   is to the bare floor measured in the same run, on the same core layout (by default the
   server under test alone on core 0, wrk and Redis on core 1). Each row's first request is
   checked before it is timed; a row with any error response measures nothing. Writes
   `benches/results/latest.json`.
2. `benches/coherence.py`: the invalidation window, from a write acknowledged by one node
   until another node on the same Redis serves it (`benches/results/coherence.json`).
3. `benches/fanout.py`: 10,000 idle event-stream subscribers on one worker, and one write
   reaching 1,000 subscribers on another node (`benches/results/fanout.json`).
4. `benches/conversation.py`: what one chat turn costs as a conversation grows, appended by
   JSON Patch against the whole-document round trip (`benches/results/conversation.json`;
   below).
5. `benches/quotas.py`: one tenant far over its `FASTCTX_TENANT_RATE` through two nodes at
   once, another under the same bound: what the deployment admits of the first against what
   its bucket may grant, the second's latency against the same drive with no bound, and the
   check's cost on a GET hit (`benches/results/quotas.json`).
6. The micro benchmarks (`benches/test_*_bench.py`, pytest-benchmark): each piece of the Rust
   core against the Python it replaces, after checking both give the same result.

`benches/inprocess.py` measures what fastctx's own code spends on one request, in process
(no sockets, granian or wrk): the microseconds of a GET hit, a GET without the cache, a POST
and a merge PATCH beside a bare ASGI app. It is the figure to compare two commits by on a
machine whose neighbours move wrk's figures: run it with each commit's venv, alternately.

`make bench-scaling` runs `benches/scaling.py --redis single` and `--redis cluster`: 1 to 4
nodes on one Redis and on a 3-master Redis Cluster, each paced under saturation, measuring
the CPU each request costs the nodes and Redis, Redis calls per request and the cache's hit
share (`benches/results/scaling-single.json`, `scaling-cluster.json`).

These are figures of one machine on one day: the scripts record which, and so does every
table below. Compare runs of the same machine only, back to back.

### Conversations

Two `fastctx serve` nodes, A and B (one granian worker each), on one `redis-server`. A
conversation is a context `{"messages": [...]}` of chat-like messages of 300 bytes each
(varied words, so that they compress as text does), filled to 1 KiB, 64 KiB, 1 MiB and 8 MiB.
One **turn** appends one 300-byte message through A and reads the last 20 messages through B,
in one of two ways:

- **delta**: `PATCH /v1/contexts/{token}` with `Content-Type: application/json-patch+json` and
  `[{"op": "add", "path": "/messages/-", "value": {...}}]` through A, then
  `GET /v1/contexts/{token}?path=/messages&slice=-20:` through B;
- **whole**: as the clients of a store without partial writes work: `GET` the whole document
  through A, append the message in the client, `PUT` it whole with `If-Match` (again from the
  `GET` on a 412), then `GET` the whole document through B and take its last 20 messages in
  the client.

Eight conversations go on at once, each with a client of its own (keep-alive connections to A
and to B, a small HTTP/1.1 client on raw asyncio sockets, the same for both ways), for 400
turns per client or 10 s per size and way, whichever ends first, after 3 unmeasured turns. A
client turns to a fresh conversation once its turns would have grown the one it is on by more
than a quarter of its size, so that a 1 KiB conversation stays about 1 KiB (each conversation
has at least one turn). Each conversation is read once through B before the measured turns,
so that a turn costs what it costs once both nodes hold the conversation (a node's first read
of a conversation is paid once in its life, not per turn). Over the measured turns only, with
no request in flight when the counters are read before and after:

- **turns/s**: the turns completed over the seconds they took;
- **Redis bytes/turn**: what Redis received and sent (`INFO` `total_net_input_bytes` and
  `total_net_output_bytes`), less what reading those counters costs, per turn;
- **node CPU ms/turn**: user + system CPU of both nodes' process trees (from
  `/proc/<pid>/stat`) per turn; the client's own CPU is reported apart and is not in it;
- **p50, p99**: the latency of a whole turn, write and read.

A read through B may still show the conversation without the message just appended while A's
invalidation is on its way (the invalidation window above): such reads are counted as stale.
The targets: at 8 MiB the delta way keeps at least 0.8 of its turns/s at 1 KiB; the delta way
moves at most 4 x 300 bytes through Redis per turn, at every size; at 8 MiB the whole way
moves at least 100 times the bytes the delta way does. `--read whole` makes the delta way read
the whole document through B (and slice it in the client), for a server without the partial
read; the results say which read was used.
"""

HOW_TO = """\
To record results, run the benchmarks and build the site again:

```sh
make bench            # benches/results/latest.json, coherence.json, fanout.json,
                      # conversation.json, quotas.json, micro.json
make bench-scaling    # benches/results/scaling-single.json, scaling-cluster.json
make docs
```

A result set kept for readers of the site goes in a directory of its own under
`benches/results/reference/` (the scripts' files, unchanged), which is read when
`benches/results/` holds no result of its own.
"""


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def result_set(results: Path = RESULTS) -> tuple[Path | None, dict[str, Any]]:
    """The newest results: this checkout's own, else the newest reference set, else none."""
    candidates = [results]
    reference = results / "reference"
    if reference.is_dir():
        candidates += sorted((p for p in reference.iterdir() if p.is_dir()), reverse=True)
    for directory in candidates:
        found = {p.stem: data for p in sorted(directory.glob("*.json")) if (data := _read(p))}
        if found:
            return directory, found
    return None, {}


def _cell(value: Any) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: int = 1, note: bool = False
) -> str:
    """A Markdown table; the columns from `right` on are numbers, aligned right, but for the
    last one if it is a `note`."""
    align = ["---" if i < right else "---:" for i in range(len(headers))]
    if note:
        align[-1] = "---"
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def machine_lines(run: Mapping[str, Any]) -> list[str]:
    m = run.get("machine", {})
    packages = m.get("packages", {})
    versions = ", ".join(f"{name} {v}" for name, v in packages.items() if v)
    lines = [
        f"Run at: {run.get('date', 'unknown')}  ",
        f"Machine: {m.get('cpu', 'unknown')} (CPUs: {m.get('nproc', '?')}), "
        f"Linux {m.get('kernel', '?')}  ",
        f"Python: {m.get('python', '?')}; {m.get('redis_server', '')}; {m.get('wrk', '')}  ",
        f"Packages: {versions or 'unknown'}  ",
        f"Command: `{run.get('command', 'benches/run.py')}`",
    ]
    pinning = run.get("pinning")
    if pinning:
        lines += ["", f"Core layout `{pinning.get('mode')}`: {pinning.get('why', '')}."]
    options = run.get("options")
    if options:
        described = ", ".join(f"{k} {v}" for k, v in options.items())
        lines += ["", f"Options: {described}."]
    return lines


def http_section(run: Mapping[str, Any]) -> list[str]:
    rows = []
    for r in run.get("rows", []):
        if r.get("failed"):
            rows.append([r["row"], "-", "-", "-", "-", "-", f"failed: {r['failed']}"])
            continue
        timed = bool(r.get("rps")) and "contexts_created" not in r.get("details", {})
        rows.append(
            [
                r["row"],
                _number(r["rps"], ",.0f") if timed else "-",
                _number(r["p50_ms"], ".2f") if timed else "-",
                _number(r["p99_ms"], ".2f") if timed else "-",
                _number(r.get("ratio"), ".2f"),
                r.get("error_count", 0),
                r.get("note", ""),
            ]
        )
    lines = ["## HTTP benchmark (`make bench`)", "", *machine_lines(run), ""]
    lines.append(
        table(["row", "req/s", "p50 ms", "p99 ms", "/ bare floor", "errors", "note"], rows)
    )
    lines += targets_lines(run.get("targets", []))
    noisy = run.get("noisy_rows")
    if noisy:
        lines += ["", f"Other processes were busy during: {', '.join(noisy)}."]
    return [*lines, ""]


VERDICTS = {True: "met", False: "not met", None: "not measured"}


def targets_lines(
    targets: Sequence[Mapping[str, Any]], verdicts: Mapping[bool | None, str] = VERDICTS
) -> list[str]:
    if not targets:
        return []
    rows = [
        [
            t["target"],
            t["goal"],
            "-" if t["measured"] is None else f"{t['measured']:g}{t['unit']}",
            verdicts[t["met"]],
        ]
        for t in targets
    ]
    return ["", "Targets:", "", table(["target", "goal", "measured", ""], rows, right=4)]


def conversation_section(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for r in data.get("rows", []):
        notes = []
        if r["conflicts"]:
            notes.append(f"{r['conflicts']} conflicts (412)")
        if r["stale_reads"]:
            notes.append(f"{r['stale_reads']} stale reads")
        if r["noisy"]:
            notes.append(f"other processes used {r['other_cpu_cores']:.2f} cores")
        rows.append(
            [
                r["size"],
                r["way"],
                r["read"],
                _number(r["turns_per_s"], ",.1f"),
                _number(r["redis_received_bytes_per_turn"], ",.0f"),
                _number(r["redis_sent_bytes_per_turn"], ",.0f"),
                _number(r["node_cpu_ms_per_turn"], ".2f"),
                _number(r["client_cpu_ms_per_turn"], ".2f"),
                _number(r["p50_ms"], ".2f"),
                _number(r["p99_ms"], ".2f"),
                f"{r['turns']:,} turns; " + "; ".join(notes) if notes else f"{r['turns']:,} turns",
            ]
        )
    headers = ["size", "way", "read", "turns/s", "Redis in B/turn", "Redis out B/turn"]
    headers += ["node CPU ms/turn", "client CPU ms/turn", "p50 ms", "p99 ms", "note"]
    return [
        "## Conversations (`benches/conversation.py`)",
        "",
        *machine_lines(data),
        "",
        table(headers, rows, right=3, note=True),
        *targets_lines(data.get("targets", []), {True: "PASS", False: "FAIL", None: "-"}),
        "",
    ]


def coherence_section(data: Mapping[str, Any]) -> list[str]:
    return [
        "## Invalidation window (`benches/coherence.py`)",
        "",
        f"A write through one node until another node serves it, {data['trials']} writes: "
        f"p50 {data['p50_ms']:.2f} ms, p99 {data['p99_ms']:.2f} ms, max {data['max_ms']:.2f} ms "
        f"(target under {data['target_ms']:g} ms: {'met' if data['met'] else 'not met'}).",
        "",
    ]


def fanout_section(data: Mapping[str, Any]) -> list[str]:
    idle, fan = data.get("idle_subscribers", {}), data.get("fanout", {})
    lines = [
        "## Change stream fan-out (`benches/fanout.py`)",
        "",
        f"Run at: {data.get('date', 'unknown')}, CPUs: {data.get('cpus', '?')}.",
        "",
    ]
    if idle:
        lines.append(
            f"- {idle['subscribers']['opened']:,} idle subscribers on one worker: RSS grew by "
            f"{idle['rss_growth_mib']:.1f} MiB ({idle['rss_per_subscriber_kib']:.1f} KiB each); "
            f"the GET hot path ran at {idle['get_rps_with']:,.0f} req/s with them and "
            f"{idle['get_rps_without']:,.0f} / {idle['get_rps_without_after']:,.0f} without "
            f"(before / after), {idle['get_rate_change']:+.1%}."
        )
    if fan:
        lines.append(
            f"- One write through node B reaching {fan['subscribers']['opened']:,} subscribers "
            f"on node A, {fan['writes']} writes: p50 {fan['p50_ms']:.1f} ms, p99 "
            f"{fan['p99_ms']:.1f} ms, max {fan['max_ms']:.1f} ms, {fan['missed']} missed."
        )
    for mode, held in data.get("floor", {}).items():
        lines.append(
            f"- granian holding as many streams for an app that does nothing else, "
            f"{mode.replace('_', ' ')}: +{held['rss_growth_mib']:.1f} MiB "
            f"({held['rss_per_stream_kib']:.1f} KiB each)."
        )
    return [*lines, ""]


def quotas_section(data: Mapping[str, Any]) -> list[str]:
    bounded, unbounded, cost = data["bounded"], data["unbounded"], data["cost"]
    return [
        "## Tenant rates across two nodes (`benches/quotas.py`)",
        "",
        f"Run at: {data.get('date', 'unknown')}. One tenant bound to {data['rate']:,} requests a"
        f" second asked {bounded['acme_asked_per_s']:,.0f} a second of two nodes at once and was"
        f" admitted {bounded['acme_admitted_per_s']:,.0f} a second over"
        f" {bounded['seconds']:g} s: {data['admitted_over_ceiling']:.3f} of what its bucket may"
        f" grant (its one-second burst and its rate). The other tenant, under the same bound,"
        f" had {bounded['globex_refused']} requests refused; its p99 was"
        f" {bounded['globex_p99_ms']:.2f} ms, against {unbounded['globex_p99_ms']:.2f} ms with"
        f" no bound ({data['globex_p99_over_unbounded']:.3f} of it). A GET hit with the check"
        f" on and under its bound: {cost['on_over_off']:.3f} of the rate with no bound.",
        "",
    ]


def scaling_section(name: str, data: Mapping[str, Any]) -> list[str]:
    rows = data.get("rows", [])
    if not rows:
        return []
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict | list)]
    return [
        f"## Scaling, {name.removeprefix('scaling-')} (`benches/scaling.py`)",
        "",
        f"Run at: {data.get('date', 'unknown')}; command `{data.get('command', '')}`; "
        f"{data.get('connections_per_node', '?')} connections per node, "
        f"{data.get('context_bytes', '?')} B contexts.",
        "",
        table(keys, [[row.get(k, "") for k in keys] for row in rows]),
        "",
    ]


def micro_section(data: Mapping[str, Any]) -> list[str]:
    """pytest-benchmark's JSON (`--benchmark-json`): one row per benchmark, by group."""
    benchmarks = sorted(
        data.get("benchmarks", []), key=lambda b: (b.get("group") or "", b.get("name", ""))
    )
    if not benchmarks:
        return []
    rows = []
    for b in benchmarks:
        stats = b.get("stats", {})
        extra = ", ".join(
            f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in b.get("extra_info", {}).items()
        )
        rows.append(
            [
                b.get("group") or "-",
                b.get("name", "?"),
                extra or "-",
                _number(stats.get("median", 0) * 1e6, ",.2f"),
                _number(stats.get("min", 0) * 1e6, ",.2f"),
                _number(stats.get("ops"), ",.0f"),
            ]
        )
    machine = data.get("machine_info", {})
    return [
        "## Micro benchmarks (pytest-benchmark)",
        "",
        f"Run at: {data.get('datetime', 'unknown')}; Python {machine.get('python_version', '?')} "
        f"on {machine.get('cpu', {}).get('brand_raw', 'unknown')}; command "
        "`pytest benches --benchmark-only --benchmark-json=benches/results/micro.json`.",
        "",
        table(["group", "benchmark", "extra", "median µs", "min µs", "ops/s"], rows, right=3),
        "",
    ]


def render(results: Path = RESULTS, history: Path = HISTORY) -> str:
    directory, found = result_set(results)
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written at build time by benches/docs_page.py from the benchmark result files. -->",
        "",
        METHOD,
    ]
    if directory is None:
        lines += [
            "## Recorded results",
            "",
            "No benchmark results are recorded in this checkout yet: `benches/results/` holds "
            "no result file, and there is no reference set. The figures below, if any, are "
            "from past runs written up by hand.",
            "",
            HOW_TO,
        ]
    else:
        root = BENCHES.parent
        where = directory.relative_to(root) if directory.is_relative_to(root) else directory
        lines += [
            "## Recorded results",
            "",
            f"From the result files in `{where}/`.",
            "",
        ]
        if "latest" in found:
            lines += http_section(found["latest"])
        if "coherence" in found:
            lines += coherence_section(found["coherence"])
        if "fanout" in found:
            lines += fanout_section(found["fanout"])
        if "conversation" in found:
            lines += conversation_section(found["conversation"])
        if "quotas" in found:
            lines += quotas_section(found["quotas"])
        if "micro" in found:
            lines += micro_section(found["micro"])
        for name in sorted(found):
            if name.startswith("scaling-"):
                lines += scaling_section(name, found[name])
        lines += [HOW_TO]
    past = sorted(history.glob("*.md"), reverse=True) if history.is_dir() else []
    for page in past:
        # Each written-up run starts with a level-2 heading: a section of this page.
        lines += [page.read_text().strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str]) -> int:
    results = Path(argv[0]) if argv else RESULTS
    sys.stdout.write(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
