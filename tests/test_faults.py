"""Faults with real processes: Redis killed, paused or short of its replica; a flooded worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fastctx.backends.pipeline import Address, Breaker, Pipeline
from fastctx.config import Settings
from fastctx.errors import BackendError
from support.redis import RedisServer
from support.servers import GranianServer, metric

TIMEOUT = 0.5  # FASTCTX_BACKEND_TIMEOUT of the servers started here
CLIENT_TIMEOUT = 10.0  # a request that takes this long has hung


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def assert_unavailable(r: httpx.Response, slug: str | None = None) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"].isdigit()
    assert int(r.headers["retry-after"]) >= 1
    if slug is not None:
        assert r.json()["type"] == f"urn:fastctx:problem:{slug}", r.text


def until(condition: object, within: float, step: float = 0.02) -> float:
    """Poll `condition` until it is true; returns how long it took."""
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, "condition not met in time"
        time.sleep(step)
    return time.monotonic() - started


@pytest.fixture
def durable_redis(start_redis: Callable[..., RedisServer]) -> RedisServer:
    """A Redis that fsyncs every write to its append-only file before it answers."""
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    return start_redis(*aof, stop_signal=signal.SIGKILL)


@contextlib.contextmanager
def serve(tmp_path: Path, backend: str, **settings: object) -> Iterator[httpx.Client]:
    settings.setdefault("backend_timeout", TIMEOUT)
    server = GranianServer.start(tmp_path, backend, **settings)
    try:
        with httpx.Client(base_url=server.base_url, timeout=CLIENT_TIMEOUT) as client:
            yield client
    finally:
        server.stop()


# --- the breaker itself, on one connection ---------------------------------------------------


@pytest.mark.anyio
async def test_breaker_fails_fast_while_open_and_one_probe_closes_it(
    own_redis: RedisServer,
) -> None:
    breaker = Breaker(failures=3, reset_after=0.3, probe_timeout=1.0)
    connection = Pipeline(Address.from_url(own_redis.url()), timeout=1.0, breaker=breaker)
    try:
        await connection.execute("SET", "k", "before")
        own_redis.stop()
        for _ in range(3):
            with pytest.raises(BackendError, match=r"Redis connection lost|cannot connect"):
                await connection.execute("GET", "k")
        assert not breaker.closed
        assert breaker.opened == 1

        own_redis.start()
        # Open: Redis is back, but nobody asks it before the reset time.
        with pytest.raises(BackendError, match="fail at once") as refused:
            await connection.execute("GET", "k")
        assert refused.value.headers["Retry-After"] == "1"
        assert refused.value.status == 503

        await asyncio.sleep(0.35)
        # Half open: the first call goes as the probe; the others still fail fast meanwhile.
        probe = asyncio.ensure_future(connection.execute("SET", "k", "after"))
        with pytest.raises(BackendError, match="fail at once"):
            await connection.execute("GET", "k")
        await probe
        assert breaker.closed
        assert breaker.failures == 0
        assert await connection.execute("GET", "k") == b"after"
    finally:
        await connection.close()


@pytest.mark.anyio
async def test_a_failed_probe_keeps_the_breaker_open(own_redis: RedisServer) -> None:
    breaker = Breaker(failures=1, reset_after=0.2, probe_timeout=1.0)
    connection = Pipeline(Address.from_url(own_redis.url()), timeout=1.0, breaker=breaker)
    try:
        await connection.execute("PING")
        own_redis.stop()
        with pytest.raises(BackendError, match="Redis connection lost"):
            await connection.execute("PING")
        assert not breaker.closed
        await asyncio.sleep(0.25)
        with pytest.raises(BackendError, match="cannot connect"):  # the probe tried, and failed
            await connection.execute("PING")
        with pytest.raises(BackendError, match="fail at once"):  # open again, for a new period
            await connection.execute("PING")
        assert breaker.opened == 1  # it never closed in between
    finally:
        await connection.close()


# --- Redis killed under load -----------------------------------------------------------------


@dataclass
class Outcomes:
    """What a load thread saw: every response, and the writes Redis acknowledged."""

    responses: list[tuple[str, int, dict[str, str], float, float]] = field(default_factory=list)
    created: dict[str, int] = field(default_factory=dict)  # token -> the value it holds
    patched: dict[str, tuple[int, int]] = field(default_factory=dict)  # token -> (version, n)
    errors: list[Exception] = field(default_factory=list)

    def note(self, kind: str, r: httpx.Response, started: float) -> None:
        headers = {k: r.headers[k] for k in ("retry-after", "x-cache") if k in r.headers}
        self.responses.append((kind, r.status_code, headers, started, r.elapsed.total_seconds()))


def _read_load(base_url: str, tokens: list[str], stop: threading.Event, out: Outcomes) -> None:
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        while not stop.is_set():
            for token in tokens:
                try:
                    started = time.monotonic()
                    out.note("read", client.get(f"/v1/contexts/{token}"), started)
                except httpx.HTTPError as exc:
                    out.errors.append(exc)
            time.sleep(0.005)


def _write_load(base_url: str, tokens: list[str], stop: threading.Event, out: Outcomes) -> None:
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        n = 0
        while not stop.is_set():
            n += 1
            token = tokens[n % len(tokens)]
            try:
                started = time.monotonic()
                r = client.patch(
                    f"/v1/contexts/{token}",
                    json={"n": n},
                    headers={"content-type": "application/merge-patch+json"},
                )
                out.note("patch", r, started)
                if r.status_code == 200:
                    out.patched[token] = (r.json()["version"], n)
                started = time.monotonic()
                r = client.post("/v1/contexts", json={"created": n})
                out.note("create", r, started)
                if r.status_code == 201:
                    out.created[r.json()["token"]] = n
            except httpx.HTTPError as exc:
                out.errors.append(exc)
            time.sleep(0.005)


def test_redis_killed_under_load(durable_redis: RedisServer, tmp_path: Path) -> None:
    with serve(tmp_path, durable_redis.url(), breaker_failures=3) as client:
        cached = [client.post("/v1/contexts", json={"cached": i}).json()["token"] for i in range(4)]
        written = [client.post("/v1/contexts", json={"n": 0}).json()["token"] for _ in range(4)]
        for token in cached:
            assert client.get(f"/v1/contexts/{token}").status_code == 200
        assert client.get("/readyz").status_code == 200

        out = Outcomes()
        stop = threading.Event()
        base = str(client.base_url)
        threads = [
            threading.Thread(target=_read_load, args=(base, cached, stop, out)),
            threading.Thread(target=_write_load, args=(base, written, stop, out)),
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            durable_redis.stop()  # SIGKILL
            killed = time.monotonic()
            until(lambda: client.get("/readyz").status_code == 503, within=2.0)
            time.sleep(1.5)  # the load goes on against a dead Redis

            r = client.get(f"/v1/contexts/{cached[0]}")
            assert r.status_code == 200
            assert r.headers["x-cache"] == "stale"
            assert r.json() == {"cached": 0}
            assert_unavailable(client.put(f"/v1/contexts/{cached[0]}", json={"lost": True}))
            assert_unavailable(client.post("/v1/contexts", json={"new": True}))
            assert metric(client, "fastctx_backend_circuit_open") == 1
            assert client.get("/healthz").status_code == 200

            durable_redis.start()  # same port; it reloads its append-only file
            took = until(lambda: client.get("/readyz").status_code == 200, within=2.0)
            restarted = time.monotonic()
            assert took < 2.0
            assert metric(client, "fastctx_backend_circuit_open") == 0
            until(lambda: any(o[0] == "create" and o[3] > restarted for o in out.responses), 5.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()

        assert not out.errors, out.errors[:3]  # no request hung or lost its connection
        during = [o for o in out.responses if killed < o[3] < restarted]
        assert during, "the load did not run during the outage"
        for kind, status, headers, _, elapsed in out.responses:
            if kind == "read":
                assert status == 200, (kind, status)  # every read was cached
            else:
                assert status in (200, 201, 503), (kind, status)
                if status == 503:
                    assert headers["retry-after"].isdigit()
                    assert elapsed < 1.0  # refused at once, never a hang on a dead Redis
        assert any(o[0] == "read" and o[2].get("x-cache") == "stale" for o in during)
        assert any(o[0] != "read" and o[1] == 503 for o in during)

        # No acknowledged write was lost across the kill (appendfsync always).
        fresh = {"cache-control": "no-cache"}
        assert out.created
        for token, n in out.created.items():
            r = client.get(f"/v1/contexts/{token}", headers=fresh)
            assert r.status_code == 200, token
            assert r.json() == {"created": n}
        assert out.patched
        for token, (version, n) in out.patched.items():
            r = client.get(f"/v1/contexts/{token}", headers=fresh)
            stored = int(r.headers["etag"].strip('"'))
            # A write whose answer the kill cut off may have been applied after it.
            assert stored >= version
            if stored == version:
                assert r.json() == {"n": n}


def test_a_node_answers_what_it_has_read_while_redis_is_gone(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Writes through node B until the moment Redis dies: node A, which had read every one of
    the contexts, still answers each, as stale; the invalidations that told it of B's newer
    versions kept its copies (no longer fresh) rather than dropping them."""
    with (
        serve(tmp_path, own_redis.url(), breaker_failures=3) as a,
        serve(tmp_path, own_redis.url(), breaker_failures=3) as b,
    ):
        tokens = [a.post("/v1/contexts", json={"n": 0}).json()["token"] for _ in range(40)]
        stop = threading.Event()
        out = Outcomes()

        def read_all() -> None:
            while not stop.is_set():
                for token in tokens:
                    a.get(f"/v1/contexts/{token}")

        reader = threading.Thread(target=read_all)
        writer = threading.Thread(target=_write_load, args=(str(b.base_url), tokens, stop, out))
        reader.start()
        writer.start()
        try:
            until(lambda: len(out.patched) == len(tokens), within=20.0)  # B wrote every one
            own_redis.stop()  # SIGKILL, with B still writing
        finally:
            stop.set()
            reader.join()
            writer.join()
        until(lambda: a.get("/readyz").status_code == 503, within=2.0)
        answers = [a.get(f"/v1/contexts/{token}") for token in tokens]
        served = [r for r in answers if r.status_code == 200]
        assert len(served) >= 0.95 * len(tokens), [r.status_code for r in answers]
        assert {r.headers["x-cache"] for r in served} == {"stale"}
        for r in answers:
            if r.status_code != 200:
                assert_unavailable(r)


# --- a slow Redis ----------------------------------------------------------------------------


def test_paused_redis_times_out_opens_the_breaker_and_bounds_in_flight(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    # A longer timeout than the other tests': the four held requests must be seen in flight
    # before it passes, however busy the host.
    timeout = 1.5
    settings = {
        "max_inflight": 4,
        "breaker_failures": 5,
        "breaker_reset": 2,
        "backend_timeout": timeout,
    }
    with serve(tmp_path, own_redis.url(), **settings) as client:
        token = client.post("/v1/contexts", json={"kept": True}).json()["token"]
        assert client.get(f"/v1/contexts/{token}").status_code == 200
        base = str(client.base_url)

        def create(i: int) -> httpx.Response:
            return httpx.post(f"{base}/v1/contexts", json={"i": i}, timeout=CLIENT_TIMEOUT)

        own_redis.cli("CLIENT", "PAUSE", "8000", "ALL")
        paused = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            held = [pool.submit(create, i) for i in range(4)]
            until(lambda: metric(client, "fastctx_inflight_requests") == 4, within=timeout / 2)
            # The worker holds all it may: the next request is shed at once, before any work;
            # probes still answer.
            shed = client.post("/v1/contexts", json={"one": "too many"})
            assert_unavailable(shed, "unavailable")
            assert "in flight" in shed.json()["detail"]
            assert client.get("/healthz").status_code == 200
            assert metric(client, "fastctx_shed_requests_total") == 1
            answers = [future.result() for future in held]
        for r in answers:
            # Timed out after FASTCTX_BACKEND_TIMEOUT, not queued behind the pause.
            assert_unavailable(r, "backend-unavailable")
            assert r.elapsed.total_seconds() < 2 * timeout

        # Those four failed together; one more failure (a reconnection that times out) opens
        # the breaker.
        while metric(client, "fastctx_backend_circuit_open") == 0:
            assert time.monotonic() - paused < 6.5, "the breaker did not open"
            assert_unavailable(client.post("/v1/contexts", json={"more": True}))
        r = client.post("/v1/contexts", json={"while": "open"})
        assert_unavailable(r, "backend-unavailable")
        assert "fail at once" in r.json()["detail"]
        r = client.get(f"/v1/contexts/{token}")
        assert r.status_code == 200
        assert r.headers["x-cache"] == "stale"
        assert client.get("/readyz").status_code == 503
        assert metric(client, "fastctx_backend_circuit_opened_total") == 1

        # The pause ends by itself: the server recovers without a restart.
        until(lambda: client.get("/readyz").status_code == 200, within=10.0, step=0.1)
        assert client.post("/v1/contexts", json={"after": "pause"}).status_code == 201
        assert metric(client, "fastctx_backend_circuit_open") == 0


# --- writes that wait for a replica ----------------------------------------------------------


def _replicated(primary: RedisServer, replica: RedisServer) -> bool:
    """The replica is in sync and acknowledges writes: a write and a WAIT on one connection."""
    if "master_link_status:up" not in replica.cli("INFO", "replication"):
        return False
    done = primary.cli_many([["SET", "warm-up", "1"], ["WAIT", "1", "1000"]])
    return done.split() == ["OK", "1"]


@pytest.mark.parametrize("kind", ["redis", "valkey"])
def test_write_replicas_wait_for_a_real_replica(
    kind: str, start_redis: Callable[..., RedisServer], tmp_path: Path
) -> None:
    own_redis = start_redis(stop_signal=signal.SIGKILL, kind=kind)
    workdir = tmp_path / "replica"
    workdir.mkdir()
    primary = ["--replicaof", "127.0.0.1", str(own_redis.port)]
    replica = RedisServer(workdir, options=primary, stop_signal=signal.SIGKILL, kind=kind)
    replica.start()
    try:
        until(lambda: _replicated(own_redis, replica), within=15.0, step=0.05)
        with serve(tmp_path, own_redis.url(), write_replicas=1, backend_timeout=1.0) as client:
            r = client.post("/v1/contexts", json={"copies": 2})
            assert r.status_code == 201, r.text
            token = r.json()["token"]
            assert replica.cli("EXISTS", f"fc:c:{{default/{token}}}") == "1"  # WAIT saw it there
            r = client.patch(
                f"/v1/contexts/{token}",
                json={"more": 1},
                headers={"content-type": "application/merge-patch+json"},
            )
            assert r.status_code == 200, r.text
            assert client.post("/v1/sessions").status_code == 201

            replica.stop()
            until(lambda: "connected_slaves:0" in own_redis.cli("INFO", "replication"), 5.0)
            r = client.patch(
                f"/v1/contexts/{token}",
                json={"unsure": True},
                headers={"content-type": "application/merge-patch+json"},
            )
            assert_unavailable(r, "write-not-durable")
            assert "may be lost" in r.json()["detail"]
            assert_unavailable(client.post("/v1/contexts", json={"x": 1}), "write-not-durable")
            # Many at once: each is answered at its own WAIT's deadline, none is held behind
            # another's WAIT until its connection is taken for lost.
            many = asyncio.run(_many_creates(str(client.base_url), 12))
            for answer in many:
                assert_unavailable(answer, "write-not-durable")
            # The write stands on the primary: what the problem says it may not survive.
            r = client.get(f"/v1/contexts/{token}", headers={"cache-control": "no-cache"})
            assert r.json() == {"copies": 2, "more": 1, "unsure": True}
            assert client.get("/readyz").status_code == 200  # Redis itself answers

            replica.start()
            until(lambda: _replicated(own_redis, replica), within=15.0, step=0.05)
            r = client.put(f"/v1/contexts/{token}", json={"copies": "again"})
            assert r.status_code == 200, r.text
    finally:
        replica.stop()


async def _many_creates(base_url: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
        return list(
            await asyncio.gather(
                *(client.post("/v1/contexts", json={"i": i}) for i in range(count))
            )
        )


# --- overload --------------------------------------------------------------------------------


async def _flood(base_url: str, connections: int, each: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:

        async def one_connection(i: int) -> list[httpx.Response]:
            return [await client.post("/v1/contexts", json={"i": i, "j": j}) for j in range(each)]

        batches = await asyncio.gather(*(one_connection(i) for i in range(connections)))
    return [r for batch in batches for r in batch]


def test_overload_is_shed_with_503_and_nothing_else(own_redis: RedisServer, tmp_path: Path) -> None:
    with serve(tmp_path, own_redis.url(), max_inflight=4, workers=1) as client:
        responses = asyncio.run(_flood(str(client.base_url), connections=64, each=15))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {201, 503}, sorted(set(statuses))
        shed = [r for r in responses if r.status_code == 503]
        assert shed, "64 connections against 4 slots shed nothing"
        assert statuses.count(201) > 0
        for r in shed:
            assert_unavailable(r, "unavailable")
        assert metric(client, "fastctx_shed_requests_total") == len(shed)
        assert metric(client, "fastctx_inflight_requests") == 0  # every slot given back
        assert client.post("/v1/contexts", json={"after": "flood"}).status_code == 201


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"FASTCTX_MAX_INFLIGHT": "-1"},
        {"FASTCTX_BREAKER_FAILURES": "-3"},
        {"FASTCTX_BREAKER_RESET": "0"},
        {"FASTCTX_BACKEND_TIMEOUT": "nan"},
        {"FASTCTX_WRITE_REPLICAS": "1"},  # memory:// has no replicas to wait for
        {"FASTCTX_WRITE_REPLICAS": "x", "FASTCTX_BACKEND": "redis://127.0.0.1:1/0"},
    ],
)
def test_degradation_settings_are_checked_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="FASTCTX_"):
        Settings.from_env(env)


def test_degradation_settings_defaults() -> None:
    settings = Settings.from_env({"FASTCTX_BACKEND": "redis://127.0.0.1:1/0"})
    assert (settings.max_inflight, settings.write_replicas) == (128, 0)
    assert (settings.breaker_failures, settings.breaker_reset) == (5, 0.5)
    replicated = Settings.from_env(
        {"FASTCTX_BACKEND": "redis://127.0.0.1:1/0", "FASTCTX_WRITE_REPLICAS": "2"}
    )
    assert replicated.write_replicas == 2


def test_open_event_streams_and_probes_take_no_slot(own_redis: RedisServer, tmp_path: Path) -> None:
    with serve(tmp_path, own_redis.url(), max_inflight=1) as client:
        token = client.post("/v1/contexts", json={"watched": True}).json()["token"]
        with contextlib.ExitStack() as stack:
            for _ in range(3):
                watcher = stack.enter_context(
                    httpx.Client(base_url=client.base_url, timeout=CLIENT_TIMEOUT)
                )
                stream = stack.enter_context(watcher.stream("GET", f"/v1/contexts/{token}/events"))
                assert stream.status_code == 200
            # Three streams open on a worker that holds one request at a time: none counts.
            assert metric(client, "fastctx_inflight_requests") == 0
            r = client.put(f"/v1/contexts/{token}", json={"watched": "still"})
            assert r.status_code == 200, r.text
            assert client.get("/readyz").status_code == 200
        assert metric(client, "fastctx_shed_requests_total") == 0


def test_an_mcp_listen_stream_gives_its_slot_back(own_redis: RedisServer, tmp_path: Path) -> None:
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "subscriptions/listen",
    }
    with serve(tmp_path, own_redis.url(), max_inflight=1) as client:
        token = client.post("/v1/contexts", json={"listened": True}).json()["token"]
        listen = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "subscriptions/listen",
            "params": {
                "_meta": envelope,
                "notifications": {"resourceSubscriptions": [f"ctx://{token}"]},
            },
        }
        with contextlib.ExitStack() as stack:
            for _ in range(2):
                listener = stack.enter_context(
                    httpx.Client(base_url=client.base_url, timeout=CLIENT_TIMEOUT)
                )
                stream = stack.enter_context(
                    listener.stream("POST", "/mcp", json=listen, headers=headers)
                )
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
            assert metric(client, "fastctx_inflight_requests") == 0
            assert client.put(f"/v1/contexts/{token}", json={"still": 1}).status_code == 200
            # A reply sent as a one-event stream is a whole response, not a stream that lasts:
            # it holds its slot until it is done, and gives it back once.
            one_event = {**headers, "Accept": "text/event-stream", "Mcp-Method": "tools/call"}
            one_event["Mcp-Name"] = "context_get"
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"_meta": envelope, "name": "context_get", "arguments": {"token": token}},
            }
            for _ in range(3):
                r = client.post("/mcp", json=call, headers=one_event)
                assert r.status_code == 200, r.text
                assert r.headers["content-type"].startswith("text/event-stream")
                assert '"still":1' in r.text
            assert metric(client, "fastctx_inflight_requests") == 0
        # The listeners have left: their slots, given back when their streams started, are
        # not given back a second time when they end.
        until(lambda: metric(client, "fastctx_open_streams") == 0, within=5)
        assert metric(client, "fastctx_inflight_requests") == 0
        assert client.put(f"/v1/contexts/{token}", json={"after": 1}).status_code == 200
        assert metric(client, "fastctx_shed_requests_total") == 0
