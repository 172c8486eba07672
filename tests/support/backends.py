"""fastctx backends a test opens itself, with no server in front."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from support.redis import RedisServer


def backend_url(request: pytest.FixtureRequest, redis_server: RedisServer, db: int) -> str:
    """The URL of the backend a test is parametrized with: "memory", "redis" (on database
    `db` of the session's redis-server), "cluster" (the session's Redis Cluster), or "valkey"
    and "valkey-cluster", their Valkey twins."""
    kind = request.param
    if kind == "memory":
        return "memory://"
    if kind == "redis":
        return redis_server.url(db)
    pool = request.getfixturevalue("server_pool")
    if kind == "valkey":
        return str(pool.valkey.url(db))
    return str(pool.backend_url(kind, "default"))


@contextlib.asynccontextmanager
async def started_backend(url: str) -> AsyncIterator[Any]:
    """A started fastctx backend for `url`, closed afterwards."""
    from fastctx.backends import open_backend
    from fastctx.config import Settings

    opened = open_backend(Settings(backend=url))
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


async def deleted_behind(own_redis: RedisServer, pause: str, key: str) -> None:
    """Let what was started go to Redis while it is paused, then stand this loop still while
    Redis runs it and then deletes the context `key` (a context id) for another client: the
    delete's invalidation comes in behind the replies, before any task resumes. (What is sent
    later than the delete fails instead: the context is gone.)"""
    own_redis.cli("CLIENT", "PAUSE", "100", pause)
    for _ in range(5):
        await asyncio.sleep(0)  # sent, and held
    time.sleep(0.2)  # noqa: ASYNC251 - the loop must not read the reply yet
    assert own_redis.cli("DEL", f"fc:c:{{{key}}}", f"fc:l:{{{key}}}").strip() == "2"


async def created_once_tracked(registry: Any, backend: Any, document: bytes) -> str:
    """The token of a context `registry` creates once its backend's connection is open and
    tracked: what a node caches in the millisecond its connection opens is not fresh (it may
    predate the tracking), so that millisecond is let pass first."""
    await backend.ping()
    await asyncio.sleep(0.002)
    return str((await registry.create("t", document)).token)
