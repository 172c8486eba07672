"""fastctx backends a test opens itself, with no server in front."""

from __future__ import annotations

import contextlib
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
