"""fastctx.integrations.fastmcp.FastctxStore: py-key-value's AsyncKeyValue against real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest
from key_value.aio.errors import StoreSetupError

from fastctx import AsyncClient
from fastctx.integrations.fastmcp import FastctxStore, member_of, pointer, split_member
from support.pool import ServerPool

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
async def fc(server_pool: ServerPool, request: pytest.FixtureRequest) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server_pool.granian(request.param).base_url) as client:
        yield client


async def test_entries_round_trip_exactly(fc: AsyncClient) -> None:
    store = FastctxStore(fc, await FastctxStore.create(fc, buckets=4))
    value = {"notes": ["a", None], "deep": {"none": None, "n": 1.5}, "é": True}
    for key in ["plain", "with/slash", "with~tilde", "ünï", ""]:
        await store.put(key, value, collection="c1")
        assert await store.get(key, collection="c1") == value
    assert await store.get("plain", collection="c2") is None  # collections are apart
    assert await store.get("missing", collection="c1") is None
    await store.put("plain", {"v": 2}, collection="c1")
    assert await store.get("plain", collection="c1") == {"v": 2}  # a put replaces


async def test_ttl_and_expiry(fc: AsyncClient) -> None:
    store = FastctxStore(fc, await FastctxStore.create(fc, buckets=2))
    await store.put("short", {"v": 1}, ttl=1)
    await store.put("forever", {"v": 2})
    value, ttl = await store.ttl("short")
    assert value == {"v": 1}
    assert ttl is not None
    assert 0 < ttl <= 1
    assert await store.ttl("forever") == ({"v": 2}, None)
    await anyio.sleep(1.1)
    assert await store.get("short") is None
    assert await store.ttl("short") == (None, None)
    assert await store.get("forever") == {"v": 2}


async def test_many_and_delete(fc: AsyncClient) -> None:
    store = FastctxStore(fc, await FastctxStore.create(fc, buckets=3))
    keys = [f"k{n}" for n in range(20)]
    await store.put_many(keys, [{"n": n} for n in range(20)], collection="m", ttl=60)
    assert await store.get_many([*keys, "nope"], collection="m") == [
        *({"n": n} for n in range(20)),
        None,
    ]
    assert await store.delete("k0", collection="m") is True
    assert await store.delete("k0", collection="m") is False  # nothing left to delete
    assert await store.delete_many(["k1", "k2", "nope"], collection="m") == 2
    assert await store.get_many(["k0", "k1", "k3"], collection="m") == [None, None, {"n": 3}]
    assert sorted(await store.keys("m")) == sorted(keys[3:])
    await store.put("x", {}, collection="other")
    assert await store.collections() == ["m", "other"]


async def test_two_processes_share_a_store_and_lose_no_concurrent_write(
    server_pool: ServerPool,
) -> None:
    """Two clients of two nodes on one Redis: writes of each are read by the other, and many
    concurrent puts into one bucket all survive."""
    url = server_pool.granian("redis").base_url
    async with AsyncClient(url) as first, AsyncClient(url) as second:
        token = await FastctxStore.create(first, buckets=1)
        one, other = FastctxStore(first, token), FastctxStore(second, token)

        async def put(store: FastctxStore, n: int) -> None:
            await store.put(f"key-{n}", {"n": n})

        await asyncio.gather(*(put(one if n % 2 else other, n) for n in range(60)))
        assert await other.get_many([f"key-{n}" for n in range(60)]) == [
            {"n": n} for n in range(60)
        ]


async def test_expired_entries_are_swept_out_and_a_rewritten_one_is_kept(
    fc: AsyncClient,
) -> None:
    token = await FastctxStore.create(fc, buckets=1)
    store = FastctxStore(fc, token, sweep_every=10)
    for n in range(5):
        await store.put(f"old-{n}", {"n": n}, ttl=1)
    await anyio.sleep(1.1)
    await store.put("old-0", {"n": "again"}, ttl=60)  # written again: no longer expired
    root = await fc.get(token)
    (bucket,) = root["buckets"]
    while (await fc.get(bucket) or {}).get(member_of("default_collection", "old-1")):
        await store.put("busy", {"n": 0})  # writes until the tenth version sweeps
    members = set(await fc.get(bucket))
    assert members == {member_of("default_collection", k) for k in ("old-0", "busy")}
    assert await store.get("old-0") == {"n": "again"}


async def test_cull_and_destroy(fc: AsyncClient) -> None:
    token = await FastctxStore.create(fc, buckets=2)
    store = FastctxStore(fc, token)
    await store.put("a", {"v": 1}, ttl=1)
    await store.put("b", {"v": 2})
    await anyio.sleep(1.1)
    await store.cull()
    assert await store.keys() == ["b"]
    assert await store.destroy() is True
    assert await fc.mget([token]) == [None]


async def test_a_token_that_is_no_store_is_refused(fc: AsyncClient) -> None:
    not_a_store = await fc.create({"buckets": ["x"]})
    with pytest.raises(StoreSetupError, match="is not a fastctx store"):
        await FastctxStore(fc, not_a_store).get("k")
    with pytest.raises(ValueError, match="buckets"):
        await FastctxStore.create(fc, buckets=0)


def test_members_and_pointers() -> None:
    assert member_of("a:b", "c") == "3:a:b:c"
    assert split_member("3:a:b:c") == ("a:b", "c")
    assert split_member("x:y") is None
    assert split_member("9:short") is None
    assert pointer("a/b~c") == "/a~1b~0c"
