"""Conversations: what one chat turn costs as a conversation grows, by delta and whole.

Two `fastctx serve` nodes (A and B) on one private redis-server. A conversation is a context
`{"messages": [...]}` of chat-like messages, 300 bytes each, filled to 1 KiB, 64 KiB, 1 MiB
or 8 MiB. One turn appends one 300-byte message through A and reads the last 20 messages
through B, done two ways:

  delta   PATCH /v1/contexts/{t} (application/json-patch+json) with one `add` to
          /messages/-, then GET /v1/contexts/{t}?path=/messages&slice=-20: through B
          (`--read whole`: the whole document through B, sliced here, for a server without
          the partial read)
  whole   what the clients of a store without partial writes do: GET the whole document
          through A, append here, PUT it whole with If-Match (again from the GET on 412),
          then GET the whole document through B and take the last 20 messages here

Several conversations go on at once, each with a client of its own (keep-alive connections
to A and to B), for a number of turns per client or a time, whichever ends first, after a few
unmeasured turns. A client takes a fresh conversation once its turns would grow the one it is
on by more than a share of its size (`--growth`), so that a small conversation stays about its
size; each conversation has at least one turn. Each is read once through B beforehand,
unmeasured: a turn is what a conversation costs once both nodes hold it.
Measured over the turns only (the counters are read with no request in flight, before and
after): turns per second, the bytes Redis received and sent per turn (INFO
total_net_input_bytes / total_net_output_bytes, less what reading them costs), the CPU of
both nodes' process trees per turn (user + system from /proc/<pid>/stat), Redis's CPU per
turn, and the turn latency. The client is a small HTTP/1.1 client on raw asyncio sockets,
in this process, the same for both ways; its CPU is reported apart and is not in the nodes'.

Run: .venv/bin/python benches/conversation.py [--sizes 1KiB,64KiB] [--read whole]
Writes benches/results/conversation.json and prints a table and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import math
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

import report
from fanout import percentile
from load import OtherLoad, Quiet
from report import Target
from scaling import Redis, cpu_seconds
from servers import BENCHES, Process, Stack

RESULTS = BENCHES / "results" / "conversation.json"
SIZES = "1KiB,64KiB,1MiB,8MiB"
WAYS = ("delta", "whole")
MESSAGE_BYTES = 300
RECENT = 20  # the messages a turn reads back
# Other processes using more CPU than this (in cores) during a measured phase flag its row.
NOISY_CORES = 0.25
VERDICTS = {True: "PASS", False: "FAIL", None: "not measured"}
_UNITS = {"": 1, "b": 1, "kib": 2**10, "kb": 2**10, "mib": 2**20, "mb": 2**20}
# The messages' words: text that compresses about as chat does, not as a run of one byte.
_VOCABULARY = (
    "the a an and or but if then so because while when where which that this these those "
    "we you they it I me my your our their its is are was were be been being have has had "
    "do does did can could will would should may might must not no yes please thanks sorry "
    "order invoice refund shipping delivery address payment card account password login "
    "error message retry timeout server request response status update version token "
    "context session cache memory latency window queue stream event change patch append "
    "today tomorrow yesterday morning evening week month minute second hour quickly slowly "
    "check confirm cancel change send receive open close start stop wait look find explain "
    "summary detail example question answer idea plan step list table chart number total "
    "price discount tax fee balance amount limit count size new old first last next other"
)
_WORDS = _VOCABULARY.split()


def parse_size(text: str) -> int:
    found = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not found or found.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1024, 64KiB, 8MiB)")
    return int(found.group(1)) * _UNITS[found.group(2).lower()]


def size_label(size: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


class Messages:
    """Chat-like messages of varied text, each exactly the bytes asked for as compact JSON."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def text(self, length: int) -> str:
        text = ""
        while len(text) < length:
            text += " ".join(self.random.choices(_WORDS, k=max(8, length // 5))) + " "
        return text[:1].upper() + text[1:length]

    def message(self, length: int = MESSAGE_BYTES) -> bytes:
        role = self.random.choice(("user", "assistant"))
        empty = len(orjson.dumps({"role": role, "content": ""}))
        if length < empty:
            raise ValueError(f"a message takes at least {empty} bytes")
        return orjson.dumps({"role": role, "content": self.text(length - empty)})

    def conversation(self, size: int) -> bytes:
        """`{"messages": [...]}` of exactly `size` bytes: 300-byte messages, the last one
        lengthened (or, for a size under one message, shortened) to make up the rest."""
        frame = len(b'{"messages":[]}')
        count = max(1, (size - frame + 1) // (MESSAGE_BYTES + 1))
        last = size - frame - count * (MESSAGE_BYTES + 1) + 1 + MESSAGE_BYTES
        messages = [self.message() for _ in range(count - 1)] + [self.message(last)]
        document = b'{"messages":[' + b",".join(messages) + b"]}"
        assert len(document) == size, (len(document), size)
        return document


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection with as little client work per request as HTTP
    allows: the request written in one go, the answer read by its Content-Length or chunks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port, limit=2**20))

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: str = ""
    ) -> Answer:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
        if body or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            data = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")  # no trailers are sent: the last CRLF
            data = b"".join(chunks)
        else:
            data = b""
        return Answer(int(lines[0].split(" ", 2)[1]), fields, data)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


JSON = "Content-Type: application/json\r\n"
JSON_PATCH = "Content-Type: application/json-patch+json\r\n"


def expect(answer: Answer, status: int, what: str) -> Answer:
    if answer.status != status:
        detail = answer.body[:300].decode(errors="replace")
        raise RuntimeError(f"{what} answered {answer.status}, not {status}: {detail}")
    return answer


@dataclasses.dataclass
class Client:
    """One client of the conversations: its keep-alive connections to A and to B, the
    conversations it takes one after another, and what its turns saw."""

    a: Connection
    b: Connection
    messages: Messages
    partial_read: bool
    latencies: list[float] = dataclasses.field(default_factory=list)
    conflicts: int = 0  # 412s of the whole way, each followed by another GET and PUT
    stale_reads: int = 0  # reads through B that did not yet show the message just appended
    b_cache: Counter[str] = dataclasses.field(default_factory=Counter)

    async def create(self, document: bytes, count: int) -> list[str]:
        tokens = []
        for _ in range(count):
            created = await self.a.request("POST", "/v1/contexts", document, JSON)
            tokens.append(orjson.loads(expect(created, 201, "POST").body)["token"])
        return tokens

    async def prime(self, tokens: Sequence[str]) -> None:
        """Read each conversation once through B, unmeasured: a turn is what a conversation
        costs once both nodes hold it; a node's first read of it is paid once in its life."""
        for token in tokens:
            expect(await self.b.request("GET", f"/v1/contexts/{token}"), 200, "GET through B")

    async def delete(self, tokens: Sequence[str]) -> None:
        for token in tokens:
            expect(await self.a.request("DELETE", f"/v1/contexts/{token}"), 204, "DELETE")

    async def turn(self, token: str, way: str) -> None:
        path = f"/v1/contexts/{token}"
        message = self.messages.message()
        started = time.perf_counter()
        if way == "delta":
            patch = b'[{"op":"add","path":"/messages/-","value":' + message + b"}]"
            expect(await self.a.request("PATCH", path, patch, JSON_PATCH), 200, "PATCH")
            recent = await self.recent(path, partial=self.partial_read)
        else:
            value = orjson.loads(message)
            while True:
                got = expect(await self.a.request("GET", path), 200, "GET through A")
                document = orjson.loads(got.body)
                document["messages"].append(value)
                match = f"If-Match: {got.headers['etag']}\r\n"
                put = await self.a.request("PUT", path, orjson.dumps(document), JSON + match)
                if put.status != 412:
                    expect(put, 200, "PUT")
                    break
                self.conflicts += 1
            recent = await self.recent(path, partial=False)
        self.latencies.append(time.perf_counter() - started)
        if len(recent) > RECENT:
            raise RuntimeError(f"the read through B gave {len(recent)} messages, not {RECENT}")
        # B may answer from its cache until A's invalidation reaches it (the window is short).
        if not recent or recent[-1] != orjson.loads(message):
            self.stale_reads += 1

    async def recent(self, path: str, partial: bool) -> list[Any]:
        if partial:
            target = f"{path}?path=/messages&slice=-{RECENT}:"
            read = await self.b.request("GET", target)
            # A server without the partial read refuses its parameters with a 400.
            hint = " (for a server without it: --read whole)" if read.status == 400 else ""
            expect(read, 200, f"GET ?path&slice through B{hint}")
            messages: list[Any] = orjson.loads(read.body)
        else:
            read = expect(await self.b.request("GET", path), 200, "GET through B")
            messages = orjson.loads(read.body)["messages"][-RECENT:]
        self.b_cache[read.headers.get("x-cache", "none")] += 1
        return messages

    async def talk(
        self, way: str, conversations: Sequence[str], each: int, count: int, deadline: float
    ) -> int:
        """`each` turns on each conversation in order, `count` turns in all or fewer if the
        deadline passes first (at least one); the most turns one conversation had."""
        done = 0
        for token in conversations:
            for _ in range(each):
                await self.turn(token, way)
                done += 1
                if done >= count or time.perf_counter() >= deadline:
                    return min(done, each)
        return min(done, each)

    def reset(self) -> None:
        self.latencies, self.conflicts, self.stale_reads = [], 0, 0
        self.b_cache = Counter()

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


class Nodes(NamedTuple):
    stack: Stack
    ports: tuple[int, int]  # A's, B's
    processes: list[Process]


class Snapshot(NamedTuple):
    redis: dict[str, float]
    node_cpu: float
    client_cpu: float


def snapshot(redis: Redis, nodes: Nodes) -> Snapshot:
    return Snapshot(redis.counters(), cpu_seconds(nodes.processes), time.process_time())


def reading_cost(redis: Redis) -> dict[str, float]:
    """The bytes Redis counts for one reading of its own counters (the INFO request and
    reply), subtracted from every measured phase."""
    first, second = redis.counters(), redis.counters()
    keys = ("total_net_input_bytes", "total_net_output_bytes")
    return {key: second[key] - first[key] for key in keys}


def turns_per_conversation(size: int, args: argparse.Namespace) -> int:
    """Turns on one conversation before the next is taken: as many as keep its growth within
    `--growth` of its size (at least one), so that a small conversation stays about its size."""
    return max(1, min(args.turns, int(args.growth * size / (MESSAGE_BYTES + 1))))


async def measure_row(
    nodes: Nodes, document: bytes, way: str, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    size = len(document)
    each = turns_per_conversation(size, args)
    partial = way == "delta" and args.read == "partial"
    # The other processes of this shared machine, waited out (within the budget) before the
    # connections open: granian closes a keep-alive connection idle for longer than it allows.
    args.quiet.wait()
    clients: list[Client] = []
    try:
        for index in range(args.conversations):
            a, b = await Connection.open(nodes.ports[0]), await Connection.open(nodes.ports[1])
            clients.append(Client(a, b, Messages(seed * 1000 + index), partial))
        # One conversation each for the unmeasured turns, then fresh ones for the measured.
        warm = await asyncio.gather(*(c.create(document, 1) for c in clients))
        measured = await asyncio.gather(
            *(c.create(document, -(-args.turns // each)) for c in clients)
        )
        await asyncio.gather(
            *(
                c.talk(way, t, args.warmup, args.warmup, math.inf)
                for c, t in zip(clients, warm, strict=True)
            )
        )
        await asyncio.gather(*(c.prime(t) for c, t in zip(clients, measured, strict=True)))
        for client in clients:
            client.reset()
        await asyncio.sleep(0.1)  # the invalidations of the last warm-up writes, delivered
        redis = Redis([nodes.stack.redis_port])
        cost = reading_cost(redis)
        other = OtherLoad()
        before = snapshot(redis, nodes)
        started = time.perf_counter()
        deadline = started + args.duration
        most = await asyncio.gather(
            *(
                c.talk(way, t, each, args.turns, deadline)
                for c, t in zip(clients, measured, strict=True)
            )
        )
        seconds = time.perf_counter() - started
        after = snapshot(redis, nodes)
        other_cores = other.cores()
        await asyncio.gather(
            *(c.delete([*w, *t]) for c, w, t in zip(clients, warm, measured, strict=True))
        )
    finally:
        for client in clients:
            await client.close()
    latencies = sorted(seconds * 1000 for c in clients for seconds in c.latencies)
    count = len(latencies)

    def delta(key: str) -> float:
        return after.redis[key] - before.redis[key] - cost.get(key, 0.0)

    received, sent = delta("total_net_input_bytes"), delta("total_net_output_bytes")
    redis_cpu = delta("used_cpu_user") + delta("used_cpu_sys")
    return {
        "size": size_label(size),
        "size_bytes": size,
        "way": way,
        "read": "partial" if partial else "whole",
        "clients": len(clients),
        "conversations": sum(len(t) for t in measured),
        "turns_per_conversation": each,
        "turns": count,
        "seconds": round(seconds, 3),
        "turns_per_s": round(count / seconds, 1),
        "redis_received_bytes_per_turn": round(received / count, 1),
        "redis_sent_bytes_per_turn": round(sent / count, 1),
        "redis_bytes_per_turn": round((received + sent) / count, 1),
        "redis_cpu_ms_per_turn": round(redis_cpu / count * 1000, 3),
        "node_cpu_ms_per_turn": round((after.node_cpu - before.node_cpu) / count * 1000, 3),
        "client_cpu_ms_per_turn": round((after.client_cpu - before.client_cpu) / count * 1000, 3),
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3),
        "document_bytes_end_max": size + max(most) * (MESSAGE_BYTES + 1),
        "conflicts": sum(c.conflicts for c in clients),
        "stale_reads": sum(c.stale_reads for c in clients),
        "b_reads_by_x_cache": dict(sum((c.b_cache for c in clients), Counter())),
        "other_cpu_cores": round(other_cores, 3),
        "noisy": other_cores > NOISY_CORES,
    }


def row_key(way: str, size: int) -> str:
    return f"{way}@{size}"


def targets(sizes: Sequence[int]) -> list[Target]:
    small, large = min(sizes), max(sizes)
    budget = 4 * MESSAGE_BYTES

    def rate(rows: Mapping[str, Any]) -> float | None:
        low, high = rows.get(row_key("delta", small)), rows.get(row_key("delta", large))
        if small == large or not low or not high:
            return None
        return float(high["turns_per_s"] / low["turns_per_s"])

    def most_bytes(rows: Mapping[str, Any]) -> float | None:
        found = [rows[row_key("delta", s)] for s in sizes if row_key("delta", s) in rows]
        return max(r["redis_bytes_per_turn"] for r in found) if found else None

    def whole_over_delta(rows: Mapping[str, Any]) -> float | None:
        delta, whole = rows.get(row_key("delta", large)), rows.get(row_key("whole", large))
        if not delta or not whole:
            return None
        return whole["redis_bytes_per_turn"] / max(1.0, delta["redis_bytes_per_turn"])

    return [
        Target(
            f"turns/s at {size_label(large)} / at {size_label(small)}, delta way",
            rate,
            0.8,
            unit="x",
        ),
        Target(
            f"Redis bytes per turn, delta way, largest over all sizes (4 x {MESSAGE_BYTES} B)",
            most_bytes,
            budget,
            at_most=True,
            unit=" B",
        ),
        Target(
            f"Redis bytes per turn at {size_label(large)}, whole way / delta way",
            whole_over_delta,
            100,
            unit="x",
        ),
    ]


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for r in rows:
        notes = [f"read {r['read']}"] if r["way"] == "delta" else []
        if r["conflicts"]:
            notes.append(f"{r['conflicts']} conflicts")
        if r["stale_reads"]:
            notes.append(f"{r['stale_reads']} stale reads")
        if r["noisy"]:
            notes.append(f"NOISY: others used {r['other_cpu_cores']:.2f} cores")
        lines.append(
            [
                r["size"],
                r["way"],
                f"{r['turns_per_s']:,.1f}",
                f"{r['redis_bytes_per_turn']:,.0f}",
                f"{r['node_cpu_ms_per_turn']:.2f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                "; ".join(notes),
            ]
        )
    headers = ["size", "way", "turns/s", "Redis B/turn", "node CPU ms/turn", "p50 ms", "p99 ms"]
    return report.table([*headers, "note"], lines)


async def run(stack: Stack, sizes: Sequence[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    # Room for the largest conversation and all it grows by during its turns: the whole way
    # sends it in one body, and the document bound may not be below the body bound.
    limit = str(max(64 * 2**20, 2 * max(sizes)))
    ports, processes = [], []
    try:
        for name in ("node-a", "node-b"):
            port, process = stack.node(name, max_context_bytes=limit, max_document_bytes=limit)
            ports.append(port)
            processes.append(process)
        nodes = Nodes(stack, (ports[0], ports[1]), processes)
        rows = []
        for index, size in enumerate(sizes):
            document = Messages(index).conversation(size)
            for way in args.ways:
                print(f"  {size_label(size)} {way} ...", end=" ", flush=True)
                row = await measure_row(nodes, document, way, args, index)
                print(f"{row['turns_per_s']:,.1f} turns/s", flush=True)
                rows.append(row)
        return rows
    except (OSError, RuntimeError, asyncio.IncompleteReadError):
        for process in processes:
            if tail := process.log_tail():
                print(f"\n{process.name}'s log ends with:\n{tail}", file=sys.stderr)
        raise
    finally:
        for process in processes:
            process.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=SIZES, help="conversation sizes, comma-separated")
    parser.add_argument("--ways", default=",".join(WAYS), help="delta, whole or both")
    parser.add_argument(
        "--conversations",
        type=int,
        default=8,
        help="conversations going on at once, one client each",
    )
    parser.add_argument("--turns", type=int, default=400, help="measured turns per client")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="at most this many seconds per size and way"
    )
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured turns per client")
    parser.add_argument(
        "--growth",
        type=float,
        default=0.25,
        help="how much a conversation may grow by its turns, as a share of its size, before "
        "its client takes the next (a conversation has at least one turn)",
    )
    parser.add_argument(
        "--noise-budget",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds this run may spend waiting for other processes' load to pass",
    )
    parser.add_argument(
        "--read",
        choices=("partial", "whole"),
        default="partial",
        help="the delta way's read through B: ?path=/messages&slice=-20: or the whole document",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON to write")
    args = parser.parse_args(argv)
    args.sizes = [parse_size(part) for part in args.sizes.split(",") if part.strip()]
    args.quiet = Quiet(NOISY_CORES, args.noise_budget)
    args.ways = [way.strip() for way in args.ways.split(",") if way.strip()]
    if unknown := set(args.ways) - set(WAYS):
        parser.error(f"unknown ways {sorted(unknown)}: the ways are {', '.join(WAYS)}")
    if args.conversations < 1 or args.turns < 1 or args.warmup < 0 or not args.sizes:
        parser.error("--conversations and --turns need at least 1, --sizes at least one size")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = args.sizes
    started = time.monotonic()
    print(
        f"{args.conversations} conversations at once, one client each; {args.turns} turns per "
        f"client or {args.duration:g} s per size and way, after {args.warmup} unmeasured turns; "
        f"{MESSAGE_BYTES} B messages, the last {RECENT} read back ({args.read} read)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fastctx-conversation-") as workdir:
        stack = Stack(Path(workdir), None)
        try:
            rows = asyncio.run(run(stack, sizes, args))
        finally:
            stack.close()
    evaluated = report.evaluate(
        targets(sizes), {row_key(r["way"], r["size_bytes"]): r for r in rows}
    )
    for target in evaluated:
        target["verdict"] = VERDICTS[target["met"]]
    elapsed = time.monotonic() - started
    print(f"\n{results_table(rows)}\n\n{report.targets_table(evaluated, VERDICTS)}")
    saved = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benches/conversation.py", *(sys.argv[1:] if argv is None else argv)]),
        "options": {
            "sizes_bytes": sizes,
            "ways": args.ways,
            "read": args.read,
            "conversations": args.conversations,
            "turns_per_client": args.turns,
            "growth_share": args.growth,
            "max_seconds": args.duration,
            "warmup_turns": args.warmup,
            "message_bytes": MESSAGE_BYTES,
            "recent_messages": RECENT,
            "server_workers": 1,
            "nodes": 2,
        },
        "machine": report.machine(),
        "rows": rows,
        "targets": evaluated,
        "noisy_rows": [f"{r['size']} {r['way']}" for r in rows if r["noisy"]],
        "elapsed_s": round(elapsed, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"\nwrote {args.output} ({elapsed:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
