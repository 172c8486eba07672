"""Two real nodes on one Redis: a write through one is never served stale by the other."""

from __future__ import annotations

import subprocess
import time

import httpx

from support.pool import NODES_DB
from support.redis import RedisServer
from support.servers import GranianServer

JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
# Far below the cache's own bound on an entry's life (60 s): a node that sees the new version
# within this time was told by Redis, not saved by expiry.
WITHIN = 2.0


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
    redis_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a_server, b_server = redis_nodes
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
    redis_nodes: tuple[GranianServer, GranianServer],
) -> None:
    a_server, b_server = redis_nodes
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
    redis_nodes: tuple[GranianServer, GranianServer], redis_server: RedisServer
) -> None:
    """FLUSHDB from outside: every node's cache stops answering for what is gone."""
    a_server, _ = redis_nodes
    with httpx.Client(base_url=a_server.base_url) as a:
        token = a.post("/v1/contexts", content=b"{}", headers=JSON).json()["token"]
        assert a.get(f"/v1/contexts/{token}").status_code == 200
        subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "-n", str(NODES_DB), "FLUSHDB"],
            check=True,
            capture_output=True,
        )
        started = time.monotonic()
        while a.get(f"/v1/contexts/{token}").status_code != 404:
            assert time.monotonic() - started < WITHIN
            time.sleep(0.001)
