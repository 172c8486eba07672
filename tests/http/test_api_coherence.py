"""Two real nodes on one Redis (or one Valkey): a write through one is never served stale by
the other."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from support.pool import NODES_DB, ServerPool
from support.redis import RedisServer
from support.servers import GranianServer

JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
# Far below the cache's own bound on an entry's life (60 s): a node that sees the new version
# within this time was told by Redis, not saved by expiry.
WITHIN = 2.0


@pytest.fixture(params=["redis", "valkey"])
def kind(request: pytest.FixtureRequest) -> str:
    """Client tracking, the nodes' invalidation, on either server."""
    return str(request.param)


@pytest.fixture
def pair(kind: str, request: pytest.FixtureRequest) -> tuple[GranianServer, GranianServer]:
    nodes: tuple[GranianServer, GranianServer] = request.getfixturevalue(f"{kind}_nodes")
    return nodes


@pytest.fixture
def server(kind: str, request: pytest.FixtureRequest) -> RedisServer:
    if kind == "redis":
        return request.getfixturevalue("redis_server")  # type: ignore[no-any-return]
    pool: ServerPool = request.getfixturevalue("server_pool")
    return pool.valkey


def _version_seen(node: httpx.Client, token: str) -> int:
    r = node.get(f"/v1/contexts/{token}")
    assert r.status_code == 200, r.text
    return int(r.headers["etag"].strip('"'))


def _wait_for_version(node: httpx.Client, token: str, version: int) -> float:
    started = time.monotonic()
    while (seen := _version_seen(node, token)) != version:
        assert seen < version, f"saw version {seen}, newer than the {version} written"
        assert time.monotonic() - started < WITHIN, f"still version {seen} after {WITHIN}s"
        time.sleep(0.001)
    return time.monotonic() - started


def test_writes_through_one_node_reach_the_other_nodes_cache(
    pair: tuple[GranianServer, GranianServer],
) -> None:
    a_server, b_server = pair
    with (
        httpx.Client(base_url=a_server.base_url) as a,
        httpx.Client(base_url=b_server.base_url) as b,
    ):
        token = a.post("/v1/contexts", content=b'{"n": 0}', headers=JSON).json()["token"]
        for version in range(2, 22):
            assert a.get(f"/v1/contexts/{token}").headers["x-cache"] == "hit"
            r = b.patch(f"/v1/contexts/{token}", content=b'{"n": %d}' % version, headers=MERGE)
            assert r.json()["version"] == version
            _wait_for_version(a, token, version)
            assert a.get(f"/v1/contexts/{token}").json() == {"n": version}


def test_a_delete_on_one_node_is_a_404_on_the_other(
    pair: tuple[GranianServer, GranianServer],
) -> None:
    a_server, b_server = pair
    with (
        httpx.Client(base_url=a_server.base_url) as a,
        httpx.Client(base_url=b_server.base_url) as b,
    ):
        token = a.post("/v1/contexts", content=b"{}", headers=JSON).json()["token"]
        assert a.get(f"/v1/contexts/{token}").headers["x-cache"] == "hit"
        assert b.delete(f"/v1/contexts/{token}").status_code == 204
        started = time.monotonic()
        while a.get(f"/v1/contexts/{token}").status_code != 404:
            assert time.monotonic() - started < WITHIN
            time.sleep(0.001)


def test_a_change_behind_fastctxs_back_is_seen_too(
    pair: tuple[GranianServer, GranianServer], server: RedisServer
) -> None:
    """FLUSHDB from outside: every node's cache stops answering for what is gone."""
    a_server, _ = pair
    with httpx.Client(base_url=a_server.base_url) as a:
        token = a.post("/v1/contexts", content=b"{}", headers=JSON).json()["token"]
        assert a.get(f"/v1/contexts/{token}").status_code == 200
        subprocess.run(
            ["redis-cli", "-p", str(server.port), "-n", str(NODES_DB), "FLUSHDB"],
            check=True,
            capture_output=True,
        )
        started = time.monotonic()
        while a.get(f"/v1/contexts/{token}").status_code != 404:
            assert time.monotonic() - started < WITHIN
            time.sleep(0.001)


@pytest.mark.parametrize("nodes", ["redis_nodes", "cluster_nodes", "valkey_nodes"])
def test_a_conversation_grown_through_both_nodes_reads_the_same_on_both(
    nodes: str, request: pytest.FixtureRequest
) -> None:
    """Appends through either node to a conversation past 64 KiB (kept apart from its bytes
    on each node), each read through the other: its last messages, an element, the whole."""
    a_server, b_server = request.getfixturevalue(nodes)
    messages = [{"role": "user", "n": n, "text": "x" * 300} for n in range(300)]
    with (
        httpx.Client(base_url=a_server.base_url) as a,
        httpx.Client(base_url=b_server.base_url) as b,
    ):
        created = a.post("/v1/contexts", json={"messages": messages}, headers=JSON)
        token = created.json()["token"]
        path = f"/v1/contexts/{token}"
        b.get(path)  # both nodes hold it
        for turn in range(12):
            writer, reader = (a, b) if turn % 2 else (b, a)
            message = {"role": "assistant", "n": 300 + turn, "text": f"turn {turn}"}
            patch = [{"op": "add", "path": "/messages/-", "value": message}]
            r = writer.patch(path, json=patch, headers=JSON_PATCH)
            assert r.json()["version"] == turn + 2
            _wait_for_version(reader, token, turn + 2)
            messages.append(message)
            last = reader.get(path, params={"path": "/messages", "slice": "-3:"})
            assert last.json() == messages[-3:]
            assert reader.get(path, params={"path": f"/messages/{len(messages) - 1}/n"}).json() == (
                300 + turn
            )
        whole_a, whole_b = a.get(path), b.get(path)
        assert whole_a.json() == {"messages": messages}
        assert whole_a.content == whole_b.content  # the same bytes on both nodes
        fresh = a.get(path, headers={"Cache-Control": "no-cache"})
        assert fresh.content == whole_a.content  # and a read past the cache agrees
