"""What the Redis backends' parts send: commands and Lua scripts over one connection, and
writes that wait for replicas over another.

A connection is a `Pipeline` (one Redis) or a `ClusterPipeline` (a connection per master, each
command sent to its slot's); the parts are written against `Connection` and run on either.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import hiredis

from fastctx import tracing
from fastctx.backends import Event
from fastctx.backends.scripts import (
    APPEND,
    CATCH_UP,
    CONTEXT_EVENTS,
    CREATE,
    EXPIRED,
    INSERT,
    KEEP,
    MCP_NOTIFY,
    MCP_SUBSCRIBE,
    MCP_UNSUBSCRIBE,
    RATE_TAKE,
    REMOVE,
    REPLACE_META,
    RESEAL,
    SESSION_CREATE,
    SESSION_DELETE,
    SESSION_EXPIRED,
    SESSION_MEMBERS,
    SESSION_TOUCH,
    SWAP,
)
from fastctx.errors import NotDurable

Arg = bytes | str | int | float
Retry = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""Runs an attempt (a write and its WAIT, sent together) again while that is safe."""


class Connection(Protocol):
    """What the parts need of a connection: `Pipeline` and `ClusterPipeline` both are one."""

    def execute(self, *args: Arg) -> Awaitable[Any]: ...

    async def execute_together(
        self, *commands: tuple[Arg, ...], block: float = 0.0
    ) -> list[asyncio.Future[Any]]: ...

    async def close(self) -> None: ...


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def event(entry: list[Any]) -> Event:
    """An XRANGE/XREAD entry: [id, [field, value, ...]] (a map in some RESP3 replies)."""
    raw = entry[1]
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    return text(entry[0]), {text(k): text(v) for k, v in pairs}


class Script:
    """A Lua script run by its SHA1, loaded on the first NOSCRIPT (e.g. after a restart)."""

    def __init__(self, source: str, name: str, *, writes: bool = False) -> None:
        self.source = source.encode()
        #: What it does, for traces (a span is named by it, never by its keys).
        self.name = name
        self.sha = hashlib.sha1(self.source).hexdigest()
        #: It changes what a client is told is stored: with FASTCTX_WRITE_REPLICAS, it waits
        #: for the replicas.
        self.writes = writes

    async def __call__(
        self, connection: Connection, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        try:
            return await connection.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except hiredis.ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await connection.execute(b"SCRIPT", b"LOAD", self.source)
        return await connection.execute(b"EVALSHA", self.sha, len(keys), *keys, *args)


class Commands:
    """Commands and scripts, shared by the parts of one backend.

    `run` is the connection's own `execute` (a bound method, not a wrapper): on the hot path a
    command costs what the pipeline costs. Scripts that write wait for `write_replicas` with
    WAIT right behind them, on `writer` (a connection of its own: a WAIT would hold up every
    reply queued behind it); `retry`, when given, runs such a write again when that is safe
    (a cluster's redirections).
    """

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float,
        write_replicas: int = 0,
        writer: Connection | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.connection = connection
        self.run = connection.execute
        if tracing.TRACER is not None:  # decided once: untraced, `run` stays the bound method
            self.run = tracing.traced_command(connection.execute, "redis")
            self.script = tracing.traced_script(self.script, "redis")  # type: ignore[method-assign]
            self.write = tracing.traced_command(self.write, "redis")  # type: ignore[method-assign]
        self.timeout = timeout
        self.write_replicas = write_replicas
        self.writer = writer or connection
        self._retry = retry

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg] = ()) -> Any:
        if self.write_replicas and script.writes:
            command = (b"EVALSHA", script.sha, len(keys), *keys, *args)
            return await self._durable(command, script)
        return await script(self.connection, keys, args)

    async def write(self, *command: Arg) -> Any:
        """A write that is one plain command (a create outside a session): with
        `write_replicas`, it waits for them as a write script does."""
        if self.write_replicas:
            return await self._durable(command, None)
        return await self.connection.execute(*command)

    async def _durable(self, command: tuple[Arg, ...], script: Script | None) -> Any:
        if self._retry is not None:
            return await self._retry(lambda: self._replicated(command, script))
        return await self._replicated(command, script)

    async def _replicated(self, command: tuple[Arg, ...], script: Script | None) -> Any:
        """Run a write (`command`, the EVALSHA of `script` when it is one) with `WAIT replicas
        timeout` right behind it, in one write.

        WAIT answers how many replicas have acknowledged every write sent before it on this
        connection, ours included; fewer than asked is `NotDurable` (the write stands on the
        primary).
        """
        wait = (b"WAIT", self.write_replicas, max(1, int(self.timeout * 1000)))
        for attempt in (1, 2):
            ran, waited = await self.writer.execute_together(command, wait, block=self.timeout)
            try:
                result = await ran
            except BaseException as exc:
                waited.add_done_callback(ignore_result)
                if script is None or attempt == 2 or not str(exc).startswith("NOSCRIPT"):
                    raise
                await self.writer.execute(b"SCRIPT", b"LOAD", script.source)
                continue
            acked = int(await waited)
            if acked < self.write_replicas:
                raise NotDurable(
                    f"the write was applied on the Redis primary, but {acked} of the "
                    f"{self.write_replicas} replicas asked for acknowledged it in time: it may "
                    "be lost if the primary fails now; read it back before writing it again"
                )
            return result
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.writer is not self.connection:
            await self.writer.close()
        await self.connection.close()


def ignore_result(future: asyncio.Future[Any]) -> None:
    # An UNBLOCK that finds nothing blocked, or a lost connection, changes nothing.
    if not future.cancelled():
        future.exception()


CREATE_SCRIPT = Script(CREATE, "create", writes=True)
INSERT_SCRIPT = Script(INSERT, "insert", writes=True)
SWAP_SCRIPT = Script(SWAP, "swap", writes=True)
APPEND_SCRIPT = Script(APPEND, "append", writes=True)
CATCH_UP_SCRIPT = Script(CATCH_UP, "catch_up")
CONTEXT_EVENTS_SCRIPT = Script(CONTEXT_EVENTS, "context_events")
REMOVE_SCRIPT = Script(REMOVE, "remove", writes=True)
SESSION_CREATE_SCRIPT = Script(SESSION_CREATE, "session_create", writes=True)
SESSION_TOUCH_SCRIPT = Script(SESSION_TOUCH, "session_touch")
SESSION_MEMBERS_SCRIPT = Script(SESSION_MEMBERS, "session_members")
SESSION_DELETE_SCRIPT = Script(SESSION_DELETE, "session_delete", writes=True)
MCP_SUBSCRIBE_SCRIPT = Script(MCP_SUBSCRIBE, "mcp_subscribe")
MCP_UNSUBSCRIBE_SCRIPT = Script(MCP_UNSUBSCRIBE, "mcp_unsubscribe")
MCP_NOTIFY_SCRIPT = Script(MCP_NOTIFY, "mcp_notify")
EXPIRED_SCRIPT = Script(EXPIRED, "expired")
RATE_TAKE_SCRIPT = Script(RATE_TAKE, "rate_take")
KEEP_SCRIPT = Script(KEEP, "keep")
RESEAL_SCRIPT = Script(RESEAL, "reseal", writes=True)
REPLACE_META_SCRIPT = Script(REPLACE_META, "replace_meta", writes=True)
SESSION_EXPIRED_SCRIPT = Script(SESSION_EXPIRED, "session_expired")
