"""The Redis backend: one server (or primary) over redis-py asyncio with the hiredis parser."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fastctx import _core
from fastctx.backends import Backend, Outcome, SessionRecord
from fastctx.errors import BackendError

P = ParamSpec("P")
R = TypeVar("R")

# Errors that mean "Redis cannot take this now", as opposed to a bug in a command.
_UNAVAILABLE_REPLIES = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")

# Lua sees the frame as a string; the version is the 8 bytes after VERSION_OFFSET.
_V_FIRST = _core.VERSION_OFFSET + 1
_V_LAST = _core.VERSION_OFFSET + 8

# KEYS: context[, session, members]  ARGV: frame, expires_at_ms, token
INSERT = """
if #KEYS > 1 then
  local pttl = redis.call('PTTL', KEYS[2])
  if pttl < 0 then return 0 end
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], pttl)
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"""

# KEYS: context  ARGV: expected version bytes, frame, expires_at_ms
SWAP = f"""
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if string.sub(current, {_V_FIRST}, {_V_LAST}) ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
"""

# KEYS: context[, members]  ARGV: expected version bytes, token
REMOVE = f"""
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if string.sub(current, {_V_FIRST}, {_V_LAST}) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
if #KEYS > 1 then redis.call('SREM', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS: session, members
SESSION_TOUCH = """
local ttl = redis.call('HGET', KEYS[1], 'ttl')
if not ttl then return false end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {ttl, redis.call('HGET', KEYS[1], 'created_at'), redis.call('HGET', KEYS[1], 'meta')}
"""

# KEYS: members  ARGV: context key prefix of the tenant
# Context keys are built here rather than declared, so this runs on one Redis, not a cluster.
SESSION_MEMBERS = """
local live = {}
for _, token in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. token .. '}') == 1 then
    live[#live + 1] = token
  else
    redis.call('SREM', KEYS[1], token)
  end
end
return live
"""

# KEYS: session, members  ARGV: context key prefix of the tenant
SESSION_DELETE = """
local existed = redis.call('DEL', KEYS[1])
local tokens = redis.call('SMEMBERS', KEYS[2])
for _, token in ipairs(tokens) do
  redis.call('DEL', ARGV[1] .. token .. '}')
end
redis.call('DEL', KEYS[2])
table.insert(tokens, 1, existed)
return tokens
"""


def _context_prefix(tenant: str) -> str:
    return f"fc:c:{{{tenant}/"


def context_key(tenant: str, token: str) -> str:
    # The hash tag keeps every key of one context on one cluster slot.
    return f"fc:c:{{{tenant}/{token}}}"


def session_key(tenant: str, session: str) -> str:
    return f"fc:s:{{{tenant}/{session}}}"


def members_key(tenant: str, session: str) -> str:
    return f"fc:m:{{{tenant}/{session}}}"


def _translated(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn Redis being unreachable, slow or refusing writes into `BackendError` (503)."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise BackendError(f"Redis did not answer: {type(exc).__name__}") from exc
        except ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise BackendError(f"Redis refused the command: {exc}") from exc
            raise

    return call


class RedisBackend(Backend):
    def __init__(self, url: str, timeout: float = 2.0) -> None:
        # One retry covers a pooled connection that Redis closed while idle; more would make a
        # dead Redis cost several timeouts per request.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            decode_responses=False,
        )
        self._insert = self._client.register_script(INSERT)
        self._swap = self._client.register_script(SWAP)
        self._remove = self._client.register_script(REMOVE)
        self._session_touch = self._client.register_script(SESSION_TOUCH)
        self._session_members = self._client.register_script(SESSION_MEMBERS)
        self._session_delete = self._client.register_script(SESSION_DELETE)

    async def close(self) -> None:
        await self._client.aclose()

    @_translated
    async def ping(self) -> None:
        await self._client.ping()

    @_translated
    async def get(self, tenant: str, token: str) -> bytes | None:
        # decode_responses=False: replies are bytes, whatever redis-py's annotations allow.
        return cast(bytes | None, await self._client.get(context_key(tenant, token)))

    @_translated
    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[bytes | None]:
        if not tokens:
            return []
        frames = await self._client.mget([context_key(tenant, token) for token in tokens])
        return cast(list[bytes | None], frames)

    @_translated
    async def insert(
        self, tenant: str, token: str, frame: bytes, expires_at: int, session: str | None
    ) -> bool:
        keys = [context_key(tenant, token)]
        if session is not None:
            keys += [session_key(tenant, session), members_key(tenant, session)]
        done = await self._insert(keys=keys, args=[frame, expires_at, token])
        return bool(done)

    @_translated
    async def swap(
        self, tenant: str, token: str, expected: bytes, frame: bytes, expires_at: int
    ) -> Outcome:
        result = await self._swap(
            keys=[context_key(tenant, token)], args=[expected, frame, expires_at]
        )
        return Outcome(int(result))

    @_translated
    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        keys = [context_key(tenant, token)]
        if session is not None:
            keys.append(members_key(tenant, session))
        result = await self._remove(keys=keys, args=[expected, token])
        return Outcome(int(result))

    @_translated
    async def session_create(
        self, tenant: str, session: str, created_at: int, ttl: int, meta: bytes
    ) -> None:
        key = session_key(tenant, session)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"created_at": created_at, "ttl": ttl, "meta": meta})
            pipe.pexpire(key, ttl)
            await pipe.execute()

    @_translated
    async def session_touch(self, tenant: str, session: str, now: int) -> SessionRecord | None:
        reply = await self._session_touch(
            keys=[session_key(tenant, session), members_key(tenant, session)]
        )
        if not reply:
            return None
        ttl, created_at, meta = int(reply[0]), int(reply[1]), bytes(reply[2])
        return SessionRecord(created_at=created_at, ttl=ttl, expires_at=now + ttl, meta=meta)

    @_translated
    async def session_members(self, tenant: str, session: str) -> list[str]:
        reply = await self._session_members(
            keys=[members_key(tenant, session)], args=[_context_prefix(tenant)]
        )
        return sorted(token.decode() for token in reply)

    @_translated
    async def session_delete(self, tenant: str, session: str) -> list[str] | None:
        existed, *tokens = await self._session_delete(
            keys=[session_key(tenant, session), members_key(tenant, session)],
            args=[_context_prefix(tenant)],
        )
        return sorted(token.decode() for token in tokens) if existed else None
