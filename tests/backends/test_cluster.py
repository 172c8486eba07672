"""The Redis Cluster backend on a real cluster: routing, redirections, nodes, failover.

The whole HTTP contract suite runs on the shared 3-master cluster too (backend "cluster");
these are what only a cluster has.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from fastctx import _core
from fastctx.backends.cluster import ClusterBackend
from fastctx.backends.cluster_pipeline import ClusterPipeline, cluster_addresses, key_slot
from fastctx.backends.keys import context_key
from fastctx.config import Settings
from fastctx.errors import BackendError, NotDurable, NotFound
from fastctx.registry import Registry
from support.pool import ServerPool
from support.redis import RedisCluster, RedisServer
from support.servers import GranianServer, two_nodes

JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
T = TypeVar("T")


@pytest.fixture(scope="module", params=["redis", "valkey"])
def cluster(server_pool: ServerPool, request: pytest.FixtureRequest) -> RedisCluster:
    """The session's Redis Cluster, then its Valkey cluster."""
    return server_pool.cluster if request.param == "redis" else server_pool.valkey_cluster


def test_key_slot_is_the_slot_redis_computes(cluster: RedisCluster) -> None:
    node = cluster.nodes[0]
    keys = [
        "fc:c:{default/0BZi8mkgv0GbGirtZ7HtCE}",
        "fc:x:{acme/41HYjK1K4i9GWlmwUz32K5}",
        "plain-key",
        "{}empty-tag",  # an empty tag does not count: the whole key is hashed
        "a{b}c{d}",  # the first tag counts
        "no{closing",
        "ünïcode{tag}",
    ]
    for key in keys:
        assert key_slot(key) == int(node.cli("CLUSTER", "KEYSLOT", key)), key


def test_cluster_urls() -> None:
    seeds = cluster_addresses("redis+cluster://user:secret@10.0.0.1:7000,10.0.0.2:7001")
    assert [(s.host, s.port) for s in seeds] == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert all(s.username == "user" and s.password == "secret" for s in seeds)
    assert cluster_addresses("rediss+cluster://h:1")[0].tls is not None
    for bad in ("redis+cluster://h:1/2", "redis+cluster://h:1?db=3", "redis+cluster://h"):
        with pytest.raises(ValueError, match=r"database 0|host:port"):
            cluster_addresses(bad)


def test_contexts_spread_over_every_master(cluster: RedisCluster) -> None:
    async def scenario() -> dict[int, int]:
        backend = ClusterBackend(cluster.url)
        await backend.start()
        try:
            tokens = [_core.new_token() for _ in range(60)]
            for token in tokens:
                assert await backend.contexts.insert("spread", token, _frame(b"{}"), _later(), None)
            frames = await backend.contexts.mget("spread", tokens)
            assert all(frame is not None for frame in frames)
        finally:
            await backend.close()
        counts = {}
        for node in cluster.nodes:
            found = node.cli("--scan", "--pattern", "fc:c:{spread/*")
            counts[node.port] = len(found.split()) if found else 0
        return counts

    counts = asyncio.run(scenario())
    assert sum(counts.values()) == 60
    assert all(count > 0 for count in counts.values()), counts


def test_a_stale_slot_map_follows_moved(cluster: RedisCluster) -> None:
    async def scenario() -> None:
        pipeline = ClusterPipeline(cluster_addresses(cluster.url))
        try:
            await pipeline.ready()
            keys = [f"fc:test:{{moved-{i}}}" for i in range(40)]
            # Every slot pointed at one master, as after a resharding nobody was told of:
            # Redis answers MOVED for the slots that master does not serve.
            wrong = pipeline._slots[0]  # type: ignore[index]
            pipeline._slots = [wrong] * len(pipeline._slots)  # type: ignore[arg-type]
            await asyncio.gather(*(pipeline.execute(b"SET", key, key) for key in keys))
            values = await asyncio.gather(*(pipeline.execute(b"GET", key) for key in keys))
            assert values == [key.encode() for key in keys]
            await asyncio.sleep(0.2)  # the refresh a MOVED starts
            assert len(set(pipeline._slots)) == cluster.masters  # type: ignore[arg-type]
        finally:
            await pipeline.close()

    asyncio.run(scenario())


def test_an_unreachable_cluster_is_a_backend_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        pipeline = ClusterPipeline(cluster_addresses("redis+cluster://127.0.0.1:1"), timeout=0.3)
        with pytest.raises(BackendError):
            await pipeline.execute(b"GET", b"key")
        await pipeline.close()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def cluster_nodes(
    cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GranianServer, GranianServer]]:
    with two_nodes(tmp_path_factory.mktemp("cluster-nodes"), cluster.url) as nodes:
        yield nodes


def test_a_write_through_one_node_reaches_the_others_cache(
    cluster_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a_server, b_server = cluster_nodes
    with (
        httpx.Client(base_url=a_server.base_url) as a,
        httpx.Client(base_url=b_server.base_url) as b,
    ):
        tokens = [a.post("/v1/contexts", content=b'{"n":1}', headers=JSON).json()["token"]]
        tokens += [a.post("/v1/contexts", content=b'{"n":1}', headers=JSON).json()["token"]]
        for token in tokens:  # two tokens: most likely on two masters
            assert a.get(f"/v1/contexts/{token}").headers["x-cache"] == "hit"
            r = b.patch(f"/v1/contexts/{token}", content=b'{"n":2}', headers=MERGE)
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 2
            while a.get(f"/v1/contexts/{token}").json() != {"n": 2}:
                assert time.monotonic() < deadline, "node A kept serving the old version"
                time.sleep(0.005)


def test_an_event_through_one_node_reaches_a_subscriber_on_the_other(
    cluster_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a_server, b_server = cluster_nodes
    with (
        httpx.Client(base_url=a_server.base_url, timeout=10) as a,
        httpx.Client(base_url=b_server.base_url) as b,
    ):
        session = a.post("/v1/sessions").json()["session"]
        token = a.post(
            "/v1/contexts", content=b"{}", headers=JSON, params={"session": session}
        ).json()["token"]
        with a.stream("GET", f"/v1/sessions/{session}/events") as stream:
            assert stream.status_code == 200
            # A second member, most likely on another master than the session's stream.
            other = b.post(
                "/v1/contexts", content=b"{}", headers=JSON, params={"session": session}
            ).json()["token"]
            b.patch(f"/v1/contexts/{token}", content=b'{"a":1}', headers=MERGE)
            b.delete(f"/v1/sessions/{session}")
            seen: list[tuple[str, str, int]] = []
            kind = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    seen.append((kind, data["token"], data["version"]))
                if sum(1 for k, _, _ in seen if k == "deleted") == 2:
                    break
        # Written through B, on several masters; heard on A, in the order they were made.
        assert seen[:2] == [("created", other, 1), ("updated", token, 2)]
        # A session's members are deleted together: their events come in either order.
        assert sorted(seen[2:]) == sorted([("deleted", token, 2), ("deleted", other, 1)])


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path, masters=3, replicas=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_writes_resume_after_a_master_fails_over(replicated_cluster: RedisCluster) -> None:
    cluster = replicated_cluster

    async def scenario() -> None:
        # Writes acknowledged with FASTCTX_WRITE_REPLICAS=1 (WAIT 1) must outlive their master.
        durable = ClusterBackend(cluster.url, timeout=1.0, write_replicas=1)
        backend = ClusterBackend(cluster.url, timeout=1.0)
        await durable.start()
        await backend.start()
        try:
            tokens = [_core.new_token() for _ in range(30)]
            for token in tokens:  # on every master
                written = _frame(b'{"v":1}')
                assert await durable.contexts.insert("fo", token, written, _later(), None)
            slot = key_slot(context_key("fo", tokens[0]))
            master = _master_of(cluster, slot)
            os.kill(master.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
            master.proc.wait()  # type: ignore[union-attr]
            master.proc = None
            # Until a replica takes over, the slot's calls fail with BackendError (503);
            # after it, they go to the new master without a restart.
            deadline = time.monotonic() + 20
            while True:
                try:
                    frames = await backend.contexts.mget("fo", tokens)
                    break
                except BackendError as exc:
                    if time.monotonic() > deadline:
                        nodes = [n.cli("CLUSTER", "NODES") for n in cluster.nodes if n.proc]
                        raise AssertionError("no replica took over:\n" + nodes[0]) from exc
                    await asyncio.sleep(0.1)
            assert all(frame is not None for frame in frames), "an acknowledged write was lost"
            second = _core.new_token()
            assert await backend.contexts.insert("fo", second, _frame(b"{}"), _later(), None)
            assert await backend.contexts.get("fo", second) is not None
            # The promoted replica has no replica of its own: a write there that asks for one
            # is applied but not durable, and says so.
            promoted = _master_of(cluster, slot)
            served = _slots_of(promoted)
            orphan = next(
                token
                for token in (_core.new_token() for _ in range(1000))
                if any(key_slot(context_key("fo", token)) in r for r in served)
            )
            with pytest.raises(NotDurable):
                await durable.contexts.insert("fo", orphan, _frame(b"{}"), _later(), None)
            assert await backend.contexts.get("fo", orphan) is not None
        finally:
            await durable.close()
            await backend.close()

    asyncio.run(scenario())


def _kill(node: RedisServer) -> None:
    os.kill(node.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    node.proc.wait()  # type: ignore[union-attr]
    node.proc = None


def _the_replica_of(cluster: RedisCluster, master: RedisServer) -> RedisServer:
    for node in cluster.nodes:
        if node.proc is not None and _replica_of(node) == master.port:
            return node
    raise AssertionError(f"no replica of {master.port}")


def test_a_wait_that_cannot_be_met_holds_up_no_other_write(
    replicated_cluster: RedisCluster,
) -> None:
    """One master loses its replica: each write there is answered write-not-durable at its
    own WAIT's deadline, all at once (not one after another, then as a lost connection), and
    writes to the other masters are acknowledged meanwhile."""
    cluster = replicated_cluster
    tenant = "hol"

    async def scenario() -> None:
        durable = ClusterBackend(cluster.url, timeout=1.0, write_replicas=1)
        await durable.start()
        try:
            probe = _core.new_token()
            assert await durable.contexts.insert(tenant, probe, _frame(b"{}"), _later(), None)
            orphaned = _master_of(cluster, key_slot(context_key(tenant, probe)))
            _kill(_the_replica_of(cluster, orphaned))
            served = _slots_of(orphaned)
            there, elsewhere = [], []
            while len(there) < 12 or len(elsewhere) < 12:
                token = _core.new_token()
                if any(key_slot(context_key(tenant, token)) in r for r in served):
                    there.append(token)
                else:
                    elsewhere.append(token)
            finished: list[tuple[str, str]] = []

            async def write(token: str, where: str) -> None:
                try:
                    await durable.contexts.insert(tenant, token, _frame(b"{}"), _later(), None)
                    finished.append((where, "acknowledged"))
                except NotDurable:
                    finished.append((where, "not durable"))
                except BackendError as exc:
                    finished.append((where, f"backend error: {exc.detail}"))

            await asyncio.gather(
                *(write(t, "there") for t in there[:12]),
                *(write(t, "elsewhere") for t in elsewhere[:12]),
            )
        finally:
            await durable.close()
        assert sorted(finished) == sorted(
            [("elsewhere", "acknowledged")] * 12 + [("there", "not durable")] * 12
        )
        # The other masters' writes were not held behind the WAITs that could not be met.
        assert finished[:12] == [("elsewhere", "acknowledged")] * 12

    asyncio.run(scenario())


def _slot_master_port(node: RedisServer, slot: int) -> int | None:
    """The master port CLUSTER SLOTS on `node` names for `slot` (None: it cannot be asked)."""
    try:
        reply = node.cli("--json", "CLUSTER", "SLOTS")
        for start, end, master, *_ in json.loads(reply):
            if start <= slot <= end:
                return int(master[1])
    except (ValueError, TypeError, OSError):
        return None
    return None


def test_a_master_fails_over_under_concurrent_writers(
    replicated_cluster: RedisCluster, tmp_path: Path
) -> None:
    """FASTCTX_WRITE_REPLICAS=1, two nodes, writers on every master, one master killed: no
    acknowledged write is lost; the dead master's contexts are answered again within a second
    of its replica's promotion showing in CLUSTER SLOTS (write-not-durable, as the promoted
    master has no replica), and only with 503s that say what happened meanwhile; the other
    masters' writes go on being acknowledged."""
    cluster = replicated_cluster
    # By default every master refuses every command (CLUSTERDOWN) from the moment one is marked
    # failed until its replica takes over, which can outlast the 1 s a refused write is retried
    # for: a cluster whose other masters are to go on serving is set up so.
    for node in cluster.nodes:
        node.cli("CONFIG", "SET", "cluster-require-full-coverage", "no")
    settings = {"write_replicas": 1, "backend_timeout": 1.0}
    with two_nodes(tmp_path, cluster.url, **settings) as (a, b):
        with httpx.Client(base_url=a.base_url, timeout=10) as client:
            tokens = [client.post("/v1/contexts", json={}).json()["token"] for _ in range(24)]
        slot = key_slot(context_key("default", tokens[0]))
        victim = _master_of(cluster, slot)
        served = _slots_of(victim)
        doomed = {
            t for t in tokens if any(key_slot(context_key("default", t)) in r for r in served)
        }
        survivor = next(n for n in cluster.nodes if n is not victim and _replica_of(n) is None)
        answers: list[tuple[float, str, int, int, str]] = []  # when, token, worker, n, outcome
        moments: dict[str, float] = {}

        async def writer(worker: int, base_url: str, stop: asyncio.Event) -> None:
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                n = 0
                while not stop.is_set():
                    token = tokens[(worker * 7 + n) % len(tokens)]
                    n += 1
                    response = await http.patch(
                        f"/v1/contexts/{token}", json={f"w{worker}": n}, headers=MERGE
                    )
                    if response.status_code == 200:
                        outcome = "acknowledged"
                    else:
                        problem = response.json()
                        outcome = f"{response.status_code} {problem['type'].rsplit(':', 1)[1]}"
                        if "connection" in problem.get("detail", ""):
                            outcome += " (connection)"
                    answers.append((time.monotonic(), token, worker, n, outcome))

        async def scenario() -> None:
            stop = asyncio.Event()
            writers = [
                asyncio.ensure_future(writer(w, (a, b)[w % 2].base_url, stop)) for w in range(8)
            ]
            await asyncio.sleep(1.0)
            moments["killed"] = time.monotonic()
            _kill(victim)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                port = await asyncio.to_thread(_slot_master_port, survivor, slot)
                if port is not None and port != victim.port:
                    moments["promoted"] = time.monotonic()
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(3.0)
            stop.set()
            await asyncio.gather(*writers)

        asyncio.run(scenario())
        assert "promoted" in moments, "no replica took over"
        with httpx.Client(base_url=b.base_url, timeout=10) as client:
            stored = {t: client.get(f"/v1/contexts/{t}").json() for t in tokens}
    killed, promoted = moments["killed"], moments["promoted"]
    # No acknowledged write lost: each worker's last acknowledged value is there, or a later.
    for _, token, worker, n, outcome in answers:
        if outcome == "acknowledged":
            assert stored[token].get(f"w{worker}", 0) >= n, (token, worker, n)
    after = [answer for answer in answers if answer[0] > killed]
    doomed_after = [answer for answer in after if answer[1] in doomed]
    others_after = [answer for answer in after if answer[1] not in doomed]
    # The other masters' contexts were written throughout.
    assert {outcome for *_, outcome in others_after} == {"acknowledged"}
    # The dead master's: only 503s that say what happened, until writes were answered again.
    assert {outcome for *_, outcome in doomed_after} <= {
        "503 backend-unavailable",
        "503 backend-unavailable (connection)",
        "503 write-not-durable",
        "acknowledged",
    }
    # A write-not-durable answer comes when its WAIT gives up (the backend timeout) after
    # the write was applied: the first one was applied this long after the promotion showed.
    resumed = [when for when, *_, outcome in doomed_after if outcome == "503 write-not-durable"]
    assert resumed, "no write to the promoted master was answered"
    applied = resumed[0] - settings["backend_timeout"]
    assert applied - promoted <= 1.0, f"{applied - promoted:.2f} s after the promotion"
    # Once it was, none took its connection for lost.
    late = [o for when, *_, o in doomed_after if when > promoted + 1.0]
    assert late
    assert set(late) == {"503 write-not-durable"}


def test_cache_misses_read_from_replicas_and_stay_coherent(
    replicated_cluster: RedisCluster,
) -> None:
    cluster = replicated_cluster

    async def scenario() -> None:
        # Node A reads its cache misses from replicas; node B writes.
        a_backend = ClusterBackend(cluster.url + "?read_from=replicas", timeout=1.0)
        b_backend = ClusterBackend(cluster.url, timeout=1.0)
        await a_backend.start()
        await b_backend.start()
        a, b = Registry(a_backend, Settings()), Registry(b_backend, Settings())
        try:
            token = (await b.create("rr", b'{"v":1}')).token
            replicas_before = _gets(cluster, "slave")
            masters_before = _gets(cluster, "master")
            # Replication is asynchronous: a context just created elsewhere may be missing on
            # the replica for its lag, no longer.
            first = await _eventually(lambda: a.read("rr", token))
            assert (first.payload, first.version, first.cache) == (b'{"v":1}', 1, "miss")
            assert _gets(cluster, "slave") > replicas_before  # a replica answered
            assert _gets(cluster, "master") == masters_before  # no master did
            # The create's invalidation, from the master or the replica, may come in while the
            # read that found it is out: that copy is then cached as behind, since a change
            # reported then may be newer than what the replica answered, and one read catches
            # it up. After that, reads are hits.
            again = await a.read("rr", token)
            assert (again.version, again.cache) in ((1, "hit"), (1, "miss"))
            if again.cache == "miss":
                assert (await a.read("rr", token)).cache == "hit"
            # A write through B reaches A's cache through the replica's invalidation.
            await b.patch("rr", token, b'{"v":2}', "merge")

            async def current() -> object:
                read = await a.read("rr", token)
                assert read.version == 2, "still the old version"
                return read

            assert (await _eventually(current)).payload == b'{"v":2}'  # type: ignore[attr-defined]
            # A read that must be current goes to the master, never a replica.
            masters_before = _gets(cluster, "master")
            replicas_before = _gets(cluster, "slave")
            assert (await a.read("rr", token, fresh=True)).version == 2
            assert _gets(cluster, "master") > masters_before
            assert _gets(cluster, "slave") == replicas_before
            # Without its replica, the read falls back to the master.
            slot = key_slot(context_key("rr", token))
            master = _master_of(cluster, slot)
            for node in cluster.nodes:
                if node.proc is not None and _replica_of(node) == master.port:
                    node.stop()
            a.forget("rr", token)
            assert (await a.read("rr", token)).version == 2
        finally:
            await a_backend.close()
            await b_backend.close()

    asyncio.run(scenario())


def _gets(cluster: RedisCluster, role: str) -> int:
    """Reads (GET, MGET, and GETRANGE: a version check, or a log's tail) served so far by
    the live nodes of `role` (master or slave)."""
    total = 0
    for node in cluster.nodes:
        if node.proc is None or f"role:{role}" not in node.cli("INFO", "replication"):
            continue
        for line in node.cli("INFO", "commandstats").splitlines():
            if line.startswith(("cmdstat_get:", "cmdstat_mget:", "cmdstat_getrange:")):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


def _replica_of(node: RedisServer) -> int | None:
    """The port of the master `node` replicates, if it is a replica."""
    for line in node.cli("INFO", "replication").splitlines():
        if line.startswith("master_port:"):
            return int(line.split(":")[1])
    return None


async def _eventually(attempt: Callable[[], Awaitable[T]], within: float = 2.0) -> T:
    deadline = time.monotonic() + within
    while True:
        try:
            return await attempt()
        except (NotFound, AssertionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


def _slots_of(node: RedisServer) -> list[range]:
    """The slot ranges a master serves, from its own line of CLUSTER NODES."""
    for line in node.cli("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "myself" in fields[2]:
            ranges = []
            for part in fields[8:]:
                start, _, end = part.partition("-")
                if start.isdigit():
                    ranges.append(range(int(start), int(end or start) + 1))
            return ranges
    raise AssertionError("CLUSTER NODES has no line for the node itself")


def _master_of(cluster: RedisCluster, slot: int) -> RedisServer:
    for node in cluster.nodes:
        if node.proc is None:  # killed by the test
            continue
        role = node.cli("ROLE").split()[0]
        if role == "master" and any(slot in served for served in _slots_of(node)):
            return node
    raise AssertionError(f"no master serves slot {slot}")


def _frame(payload: bytes) -> bytes:
    now = int(time.time() * 1000)
    return _core.encode_frame(payload, 1, now, now, now + 60_000, None)


def _later() -> int:
    return int(time.time() * 1000) + 60_000
