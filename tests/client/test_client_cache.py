"""The clients' optional document cache, against real granian servers (memory and Redis).

The server's own /metrics counters prove which reads were revalidated (304) and which sent
the document again (200).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fastctx import AsyncClient, Client, NotFound, PathNotFound, VersionConflict
from fastctx.client.cache import ClientCache, version_of
from support.pool import ServerPool

ITEM = "/v1/contexts/{token}"


def answers(base_url: str, status: int) -> int:
    """How many GETs of a context the server answered with `status` (its /metrics)."""
    total = 0
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if (
            line.startswith("fastctx_requests_total{")
            and f'route="{ITEM}"' in line
            and 'method="GET"' in line
            and f'status="{status}"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


class Reads:
    """The server's 200 and 304 answers to context GETs since the last `delta()`."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.seen = self._now()

    def _now(self) -> tuple[int, int]:
        return answers(self.base_url, 200), answers(self.base_url, 304)

    def delta(self) -> dict[str, int]:
        now = self._now()
        full, revalidated = now[0] - self.seen[0], now[1] - self.seen[1]
        self.seen = now
        return {"200": full, "304": revalidated}


@pytest.fixture(params=["memory", "redis"])
def base_url(server_pool: ServerPool, request: pytest.FixtureRequest) -> str:
    return server_pool.granian(request.param).base_url


@pytest.fixture
def other(base_url: str) -> Iterator[Client]:
    """Another client of the same server, without a cache: writes the cached one did not see."""
    with Client(base_url) as client:
        yield client


@pytest.fixture
def cached(base_url: str) -> Iterator[Client]:
    with Client(base_url, cache_size=8) as client:
        yield client


def test_second_get_revalidates_with_304(base_url: str, cached: Client, other: Client) -> None:
    token = other.create({"order": 42, "items": ["apple"]})
    reads = Reads(base_url)
    first = cached.get(token)
    assert reads.delta() == {"200": 1, "304": 0}
    second = cached.get(token)
    assert reads.delta() == {"200": 0, "304": 1}
    assert first == second == {"order": 42, "items": ["apple"]}
    # Each read hands out its own document: changing one does not change the next.
    second["items"].append("pear")
    assert cached.get(token) == {"order": 42, "items": ["apple"]}


def test_cache_is_off_by_default(base_url: str, other: Client) -> None:
    token = other.create({"a": 1})
    reads = Reads(base_url)
    assert other.cache is None
    assert other.get(token) == other.get(token) == {"a": 1}
    assert reads.delta() == {"200": 2, "304": 0}


def test_a_write_from_another_client_is_seen(base_url: str, cached: Client, other: Client) -> None:
    token = other.create({"step": 1})
    assert cached.get(token) == {"step": 1}
    other.patch(token, {"step": 2, "by": "other"})
    reads = Reads(base_url)
    assert cached.get(token) == {"step": 2, "by": "other"}
    assert cached.get(token) == {"step": 2, "by": "other"}
    assert reads.delta() == {"200": 1, "304": 1}
    other.put(token, [3])
    assert cached.get(token) == [3]


def test_own_writes_update_the_entry(base_url: str, cached: Client, other: Client) -> None:
    reads = Reads(base_url)
    token = cached.create({"order": 7, "total": 1.50})
    assert cached.get(token) == {"order": 7, "total": 1.50}
    assert cached.patch(token, {"paid": True, "total": None}) == 2
    assert cached.get(token) == {"order": 7, "paid": True}
    assert cached.put(token, {"order": 8}) == 3
    assert cached.get(token) == {"order": 8}
    # Nothing was sent back: each read found the version this client had just written.
    assert reads.delta() == {"200": 0, "304": 3}
    assert other.get(token) == {"order": 8}
    cached.delete(token)
    assert token not in cached.cache  # type: ignore[operator]
    with pytest.raises(NotFound):
        cached.get(token)


def test_a_patch_after_another_write_is_not_guessed(
    base_url: str, cached: Client, other: Client
) -> None:
    token = cached.create({"a": 1})
    other.patch(token, {"b": 2})  # version 2, unseen by `cached`
    assert cached.patch(token, {"c": 3}) == 3
    reads = Reads(base_url)
    assert cached.get(token) == {"a": 1, "b": 2, "c": 3}
    assert reads.delta() == {"200": 1, "304": 0}


def test_gone_and_conflicts_drop_the_entry(cached: Client, other: Client) -> None:
    token = other.create({"a": 1})
    cached.get(token)
    assert token in cached.cache  # type: ignore[operator]
    other.put(token, {"a": 2})
    with pytest.raises(VersionConflict):
        cached.put(token, {"a": 3}, if_version=1)
    assert token not in cached.cache  # type: ignore[operator]
    cached.get(token)
    other.delete(token)
    with pytest.raises(NotFound):
        cached.get(token)
    assert token not in cached.cache  # type: ignore[operator]


def test_bounded_size_evicts_the_least_recently_used(base_url: str, other: Client) -> None:
    first, second, third = (other.create({"n": n}) for n in (1, 2, 3))
    with Client(base_url, cache_size=2) as small:
        reads = Reads(base_url)
        small.get(first)
        small.get(second)
        small.get(first)  # now `second` is the least recently used
        small.get(third)  # ...and makes way for `third`
        assert small.cache is not None
        assert len(small.cache) == 2
        assert first in small.cache
        assert third in small.cache
        assert second not in small.cache
        assert reads.delta() == {"200": 3, "304": 1}
        assert small.get(second) == {"n": 2}  # sent again in full
        assert small.get(third) == {"n": 3}  # still held
        assert reads.delta() == {"200": 1, "304": 1}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_client_revalidates_and_evicts(base_url: str, other: Client) -> None:
    first, second = other.create({"n": 1}), other.create({"n": 2})
    async with AsyncClient(base_url, cache_size=1) as fc:
        reads = Reads(base_url)
        assert await fc.get(first) == {"n": 1}
        assert await fc.get(first) == {"n": 1}
        assert reads.delta() == {"200": 1, "304": 1}
        other.patch(first, {"n": 10})
        assert await fc.get(first) == {"n": 10}
        assert reads.delta() == {"200": 1, "304": 0}
        assert await fc.get(second) == {"n": 2}  # evicts `first`
        assert await fc.get(first) == {"n": 10}
        assert reads.delta() == {"200": 2, "304": 0}
        assert await fc.patch(first, {"m": 1}) == 3
        assert await fc.get(first) == {"n": 10, "m": 1}
        assert reads.delta() == {"200": 0, "304": 1}
        await fc.delete(first)
        with pytest.raises(NotFound):
            await fc.get(first)
        assert fc.cache is not None
        assert first not in fc.cache


def test_entries_never_go_back_a_version() -> None:
    cache = ClientCache(4)
    cache.store("t", 5, b'{"v":5}')
    cache.store("t", 4, b'{"v":4}')  # an answer overtaken by a later write
    held = cache.lookup("t")
    assert held is not None
    assert (held.version, held.document()) == (5, {"v": 5})
    cache.patched("t", 7, b'{"x":1}')  # version 6 was never seen: not guessed
    assert cache.lookup("t") is None


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Client("http://127.0.0.1:9", cache_size=-1)
    with Client("http://127.0.0.1:9", cache_size=0) as uncached:
        assert uncached.cache is None


@pytest.mark.parametrize(
    ("etag", "version"),
    [('"3"', 3), ('W/"3"', None), ('"x"', None), ('""', None), ('"', None), ("3", None)],
)
def test_version_of_reads_only_strong_numeric_etags(etag: str, version: int | None) -> None:
    assert version_of(httpx.Response(200, headers={"ETag": etag})) == version


def test_a_partial_read_is_revalidated_against_the_held_document(
    base_url: str, cached: Client, other: Client
) -> None:
    token = other.create({"log": [1, 2, 3], "user": "ada"})
    reads = Reads(base_url)
    assert cached.get(token) == {"log": [1, 2, 3], "user": "ada"}
    assert reads.delta() == {"200": 1, "304": 0}
    # The held version is current: the server says so, and the part is cut from it here.
    assert cached.get(token, "/log", "-2:") == [2, 3]
    assert cached.get(token, "/user") == "ada"
    assert reads.delta() == {"200": 0, "304": 2}
    with pytest.raises(PathNotFound):
        cached.get(token, "/nothing")  # a 304 too: the held version has nothing there
    assert token in cached.cache  # type: ignore[operator]
    other.append(token, "/log", 4)
    # Behind now: the server sends the part; only whole documents are held.
    assert cached.get(token, "/log", slice(-2, None)) == [3, 4]
    assert reads.delta() == {"200": 1, "304": 1}
    assert cached.get(token) == {"log": [1, 2, 3, 4], "user": "ada"}
    assert reads.delta() == {"200": 1, "304": 0}
    other.append(token, "/log", 5)
    with pytest.raises(PathNotFound):
        cached.get(token, "/nothing")  # a 404 for the path leaves the context held
    assert token in cached.cache  # type: ignore[operator]


def test_an_append_drops_the_held_document(base_url: str, cached: Client) -> None:
    token = cached.create({"log": []})
    assert token in cached.cache  # type: ignore[operator]
    assert cached.append(token, "/log", 1) == 2
    assert token not in cached.cache  # type: ignore[operator]
    assert cached.get(token) == {"log": [1]}
