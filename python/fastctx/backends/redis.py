"""The Redis backend: one server (or primary), over one auto-pipelined RESP3 connection."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Sequence
from typing import Any

import hiredis

from fastctx import _core
from fastctx.backends import Backend, ChangeCallback, Outcome, SessionRecord
from fastctx.backends.pipeline import Address, Pipeline
from fastctx.errors import BackendError

# Lua sees the frame as a string; the version is the 8 bytes after VERSION_OFFSET.
_V_FIRST = _core.VERSION_OFFSET + 1
_V_LAST = _core.VERSION_OFFSET + 8
CONTEXT_PREFIX = "fc:c:"

# KEYS: context, session, members  ARGV: frame, expires_at_ms, token
INSERT = """
local pttl = redis.call('PTTL', KEYS[2])
if pttl < 0 then return 0 end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[3], pttl)
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

# KEYS: session  ARGV: created_at_ms, ttl_ms, meta
SESSION_CREATE = """
redis.call('HSET', KEYS[1], 'created_at', ARGV[1], 'ttl', ARGV[2], 'meta', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
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
    return f"{CONTEXT_PREFIX}{{{tenant}/"


def context_key(tenant: str, token: str) -> str:
    # The hash tag keeps every key of one context on one cluster slot; its content is the
    # context's id, which is also what the invalidation of this key names.
    return f"{CONTEXT_PREFIX}{{{tenant}/{token}}}"


def session_key(tenant: str, session: str) -> str:
    return f"fc:s:{{{tenant}/{session}}}"


def mcp_session_key(tenant: str, session: str) -> str:
    return f"fc:mcp:{{{tenant}/{session}}}"


def members_key(tenant: str, session: str) -> str:
    return f"fc:m:{{{tenant}/{session}}}"


class Script:
    """A Lua script run by its SHA1, loaded on the first NOSCRIPT (e.g. after a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest()

    async def __call__(
        self, pipeline: Pipeline, keys: Sequence[str], args: Sequence[bytes | str | int] = ()
    ) -> Any:
        try:
            return await pipeline.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except hiredis.ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await pipeline.execute(b"SCRIPT", b"LOAD", self.source)
        return await pipeline.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)


class RedisBackend(Backend):
    """Every command goes through one auto-pipelined connection per process (see pipeline.py)."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self._pipeline = Pipeline(
            Address.from_url(url), timeout=timeout, tracking_prefixes=[CONTEXT_PREFIX]
        )
        self._on_change: ChangeCallback | None = None

    @property
    def coherent(self) -> bool:
        return self._pipeline.tracking

    def watch(self, on_change: ChangeCallback) -> None:
        self._on_change = on_change
        self._pipeline.on_invalidate = self._invalidated

    def _invalidated(self, keys: list[bytes] | None) -> None:
        assert self._on_change is not None
        if keys is None:
            self._on_change(None)
            return
        start = len(CONTEXT_PREFIX) + 1  # fc:c:{tenant/token} -> tenant/token
        self._on_change([key[start:-1].decode() for key in keys])

    async def start(self) -> None:
        # Not fatal: the server starts, /readyz says 503, and it connects when Redis is there.
        with contextlib.suppress(BackendError):
            await self._pipeline.execute(b"PING")

    async def close(self) -> None:
        await self._pipeline.close()

    def _run(self, *args: bytes | str | int) -> Awaitable[Any]:
        return self._pipeline.execute(*args)

    async def _script(
        self, script: Script, keys: Sequence[str], args: Sequence[bytes | str | int] = ()
    ) -> Any:
        return await script(self._pipeline, keys, args)

    async def ping(self) -> None:
        await self._run(b"PING")

    async def get(self, tenant: str, token: str) -> bytes | None:
        frame: bytes | None = await self._run(b"GET", context_key(tenant, token))
        return frame

    async def mget(self, tenant: str, tokens: Sequence[str]) -> list[bytes | None]:
        if not tokens:
            return []
        frames: list[bytes | None] = await self._run(
            b"MGET", *[context_key(tenant, token) for token in tokens]
        )
        return frames

    async def insert(
        self, tenant: str, token: str, frame: bytes, expires_at: int, session: str | None
    ) -> bool:
        key = context_key(tenant, token)
        if session is None:
            # A plain SET costs Redis a fraction of a script; NX refuses to overwrite, though
            # with 128 random bits a taken token means a broken random source.
            if await self._run(b"SET", key, frame, b"PXAT", expires_at, b"NX") is None:
                raise RuntimeError(f"token {token} is already taken: is the OS CSPRNG sound?")
            return True
        keys = [key, session_key(tenant, session), members_key(tenant, session)]
        return bool(await self._script(_INSERT, keys, [frame, expires_at, token]))

    async def swap(
        self, tenant: str, token: str, expected: bytes, frame: bytes, expires_at: int
    ) -> Outcome:
        keys = [context_key(tenant, token)]
        return Outcome(await self._script(_SWAP, keys, [expected, frame, expires_at]))

    async def remove(
        self, tenant: str, token: str, expected: bytes, session: str | None
    ) -> Outcome:
        keys = [context_key(tenant, token)]
        if session is not None:
            keys.append(members_key(tenant, session))
        return Outcome(await self._script(_REMOVE, keys, [expected, token]))

    async def session_create(
        self, tenant: str, session: str, created_at: int, ttl: int, meta: bytes
    ) -> None:
        await self._script(_SESSION_CREATE, [session_key(tenant, session)], [created_at, ttl, meta])

    async def session_touch(self, tenant: str, session: str, now: int) -> SessionRecord | None:
        reply = await self._script(
            _SESSION_TOUCH, [session_key(tenant, session), members_key(tenant, session)]
        )
        if not reply:
            return None
        ttl, created_at, meta = int(reply[0]), int(reply[1]), bytes(reply[2])
        return SessionRecord(created_at=created_at, ttl=ttl, expires_at=now + ttl, meta=meta)

    async def session_members(self, tenant: str, session: str) -> list[str]:
        reply = await self._script(
            _SESSION_MEMBERS, [members_key(tenant, session)], [_context_prefix(tenant)]
        )
        return sorted(token.decode() for token in reply)

    async def session_delete(self, tenant: str, session: str) -> list[str] | None:
        existed, *tokens = await self._script(
            _SESSION_DELETE,
            [session_key(tenant, session), members_key(tenant, session)],
            [_context_prefix(tenant)],
        )
        return sorted(token.decode() for token in tokens) if existed else None

    async def mcp_session_put(self, tenant: str, session: str, record: bytes, idle: int) -> None:
        await self._run(b"SET", mcp_session_key(tenant, session), record, b"PX", idle)

    async def mcp_session_touch(self, tenant: str, session: str, idle: int) -> bytes | None:
        # GETEX reads and slides the expiry in one command (Redis 6.2+).
        record: bytes | None = await self._run(
            b"GETEX", mcp_session_key(tenant, session), b"PX", idle
        )
        return record

    async def mcp_session_delete(self, tenant: str, session: str) -> bool:
        return bool(await self._run(b"DEL", mcp_session_key(tenant, session)))


_INSERT = Script(INSERT)
_SWAP = Script(SWAP)
_REMOVE = Script(REMOVE)
_SESSION_CREATE = Script(SESSION_CREATE)
_SESSION_TOUCH = Script(SESSION_TOUCH)
_SESSION_MEMBERS = Script(SESSION_MEMBERS)
_SESSION_DELETE = Script(SESSION_DELETE)
