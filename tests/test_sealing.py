"""FASTCTX_ENCRYPTION_KEYS: what Redis holds is sealed, what clients read is not; keys rotate."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fastctx.config import Settings
from support.processes import FASTCTX_BIN, clean_env
from support.redis import RedisCluster, RedisServer
from support.servers import GranianServer

CANARY = "canary-4111-1111-1111-1111"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MCP = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
}


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


K1, K2 = f"k1:{_key()}", f"k2:{_key()}"


@pytest.mark.parametrize(
    "text",
    ["k1", "k1:", "k1:c2hvcnQ=", "bad id:" + K1.split(":")[1], f"{K1},{K1}", "k1:!!notbase64!!"],
)
def test_malformed_keys_are_refused_at_start_without_showing_them(text: str) -> None:
    with pytest.raises(ValueError, match="ENCRYPTION_KEYS") as refused:
        Settings(encryption_keys=text)
    secret = text.partition(":")[2]
    assert not secret or secret not in str(refused.value)


def test_the_keys_never_show_in_the_settings() -> None:
    settings = Settings(encryption_keys=K1)
    assert K1.split(":")[1] not in repr(settings)
    assert settings.encryption_ring()[0][0] == "k1"


def _exercise(client: httpx.Client) -> tuple[str, str]:
    """Every kind of write, each carrying the canary; returns a context's token and the
    session's id."""
    session = client.post("/v1/sessions", json={"meta": {"who": CANARY}}).json()["session"]
    token = client.post(f"/v1/contexts?session={session}", json={"a": CANARY}).json()["token"]
    assert client.put(f"/v1/contexts/{token}", json={"b": CANARY}).status_code == 200
    merged = client.patch(f"/v1/contexts/{token}", json={"c": CANARY}, headers=MERGE)
    assert merged.status_code == 200
    patch = [{"op": "add", "path": "/d", "value": [CANARY]}]
    assert client.patch(f"/v1/contexts/{token}", json=patch, headers=JSON_PATCH).is_success
    appended = client.post(f"/v1/contexts/{token}/append?path=/d", json=[{"n": CANARY}])
    assert appended.is_success, appended.text
    return token, session


def _everything_redis_holds(redis: RedisServer, db: int) -> bytes:
    """Every key's value (strings, hashes, sets, sorted sets, streams), as redis-cli prints
    them, and every file of the server's directory (the AOF)."""
    held = [redis.cli("-n", str(db), "--scan").encode()]
    for key in redis.cli("-n", str(db), "--scan").split():
        kind = redis.cli("-n", str(db), "TYPE", key)
        command = {
            "string": ["GET"],
            "hash": ["HGETALL"],
            "set": ["SMEMBERS"],
            "zset": ["ZRANGE", "0", "-1", "WITHSCORES"],
            "stream": ["XRANGE", key, "-", "+"],
        }[kind]
        args = command if kind == "stream" else [*command, key]
        done = subprocess.run(
            ["redis-cli", "-p", str(redis.port), "-n", str(db), *args], capture_output=True
        )
        held.append(done.stdout)
    for path in Path(redis.workdir).rglob("*"):
        if path.is_file():
            held.append(path.read_bytes())
    return b"\n".join(held)


def test_redis_holds_no_plaintext_of_a_sealed_deployment(
    start_redis: Callable[..., RedisServer], tmp_path: Path
) -> None:
    redis = start_redis("--appendonly", "yes", "--appendfsync", "always")
    sealed = GranianServer.start(tmp_path, redis.url(1), encryption_keys=K1)
    try:
        with httpx.Client(base_url=sealed.base_url, timeout=10) as client:
            token, session = _exercise(client)
            # What clients read is the document, whole and in part, and its history.
            document = client.get(f"/v1/contexts/{token}").json()
            assert document == {"b": CANARY, "c": CANARY, "d": [CANARY, {"n": CANARY}]}
            fresh = client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
            assert fresh.json() == document
            assert client.get(f"/v1/contexts/{token}?path=/d/0").json() == CANARY
            assert client.get(f"/v1/contexts/{token}?version=3").json() == {
                "b": CANARY,
                "c": CANARY,
            }
            assert client.get(f"/v1/sessions/{session}").json()["meta"] == {"who": CANARY}
            mget = client.post("/v1/contexts/mget", json={"tokens": [token]}).json()
            assert mget["items"][0]["data"] == document
            # A subscriber's replayed events carry the patches, opened.
            with client.stream(
                "GET",
                f"/v1/contexts/{token}/events?include=patch",
                headers={"Last-Event-ID": "0-0"},
            ) as events:
                seen = b""
                for chunk in events.iter_bytes():
                    seen += chunk
                    if seen.count(b"event: updated") >= 4:
                        break
            assert CANARY.encode() in seen
            assert b'"op":"add"' in seen
    finally:
        sealed.stop()
    held = _everything_redis_holds(redis, 1)
    assert b"fc:c:" in held  # the scan saw the contexts
    assert CANARY.encode() not in held
    # The same writes without the keys leave the canary everywhere: the scan would see it.
    clear = GranianServer.start(tmp_path, redis.url(2))
    try:
        with httpx.Client(base_url=clear.base_url, timeout=10) as client:
            _exercise(client)
    finally:
        clear.stop()
    assert CANARY.encode() in _everything_redis_holds(redis, 2)


def _rekey(url: str, keys: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(backend=url, encryption_keys=keys)
    return subprocess.run(
        [str(FASTCTX_BIN), "rekey"], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., httpx.Client]]:
    """serve(url, keys): a granian node with those keys; each stopped before the next."""
    running: list[tuple[GranianServer, httpx.Client]] = []

    def serve(url: str, keys: str) -> httpx.Client:
        for server, client in running:
            client.close()
            server.stop()
        running.clear()
        server = GranianServer.start(tmp_path, url, encryption_keys=keys)
        running.append((server, httpx.Client(base_url=server.base_url, timeout=10)))
        return running[0][1]

    yield serve
    for server, client in running:
        client.close()
        server.stop()


@pytest.fixture(params=["redis", "cluster"])
def own_backend(
    request: pytest.FixtureRequest, start_redis: Callable[..., RedisServer], tmp_path: Path
) -> Iterator[str]:
    """A Redis or a Redis Cluster of the test's own: a rekey seals all a backend holds."""
    if request.param == "redis":
        yield start_redis().url(0)
        return
    (tmp_path / "cluster").mkdir()
    cluster = RedisCluster(tmp_path / "cluster").start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


def test_keys_rotate_and_rekey_seals_everything_under_the_new_one(
    own_backend: str, served: Callable[..., httpx.Client]
) -> None:
    url = own_backend
    # Written in the clear, then under k1: a log of patches and a session meta of each.
    client = served(url, "")
    plain, plain_session = _exercise(client)
    client = served(url, K1)
    under_k1, k1_session = _exercise(client)
    # k2 in front: everything still reads, new writes are sealed under k2.
    client = served(url, f"{K2},{K1}")
    assert client.get(f"/v1/contexts/{plain}").json()["c"] == CANARY
    assert client.get(f"/v1/contexts/{under_k1}").json()["c"] == CANARY
    before = client.get(f"/v1/contexts/{under_k1}").headers["etag"]
    done = _rekey(url, f"{K2},{K1}")
    assert done.returncode == 0, done.stderr
    assert "2 of 2 contexts and 2 of 2 session metas written again under key k2" in done.stdout
    again = _rekey(url, f"{K2},{K1}")
    assert again.returncode == 0, again.stderr
    assert "0 of 2 contexts and 0 of 2 session metas" in again.stdout  # nothing left to do
    # k1 gone: what it sealed was written again under k2, at the same version.
    client = served(url, K2)
    for token in (plain, under_k1):
        read = client.get(f"/v1/contexts/{token}", headers={"Cache-Control": "no-cache"})
        assert read.status_code == 200, read.text
        assert read.json() == {"b": CANARY, "c": CANARY, "d": [CANARY, {"n": CANARY}]}
    assert client.get(f"/v1/contexts/{under_k1}").headers["etag"] == before
    for session in (plain_session, k1_session):
        assert client.get(f"/v1/sessions/{session}").json()["meta"] == {"who": CANARY}


def test_a_sealed_value_copied_under_another_name_does_not_open(
    start_redis: Callable[..., RedisServer], tmp_path: Path
) -> None:
    redis = start_redis()
    writer = GranianServer.start(tmp_path, redis.url(0), encryption_keys=K1)
    try:
        with httpx.Client(base_url=writer.base_url, timeout=10) as client:
            secret = client.post("/v1/contexts", json={"a": CANARY}).json()["token"]
            decoy = client.post("/v1/contexts", json={"a": "nothing"}).json()["token"]
    finally:
        writer.stop()
    redis.cli("COPY", f"fc:c:{{default/{secret}}}", f"fc:c:{{default/{decoy}}}", "REPLACE")
    reader = GranianServer.start(tmp_path, redis.url(0), encryption_keys=K1)  # nothing cached
    try:
        with httpx.Client(base_url=reader.base_url, timeout=10) as client:
            read = client.get(f"/v1/contexts/{decoy}")
            assert read.status_code == 500
            assert CANARY not in read.text
            assert client.get(f"/v1/contexts/{secret}").json() == {"a": CANARY}
    finally:
        reader.stop()
    assert "does not open" in reader.log.read_text()  # logged as the server's failure
