"""The connections of writes that wait for replicas (FASTCTX_WRITE_REPLICAS): one write and its
WAIT at a time on each.

Redis answers a connection's commands in order, and a WAIT holds its connection until enough
replicas have acknowledged or its timeout has passed. On a shared connection every write
queued behind a WAIT that cannot be met would wait for it, writes to other contexts and (on
a cluster) other masters included, and past their own deadline be taken for a lost
connection. So each write and its WAIT take a connection to their master of their own until
the WAIT is answered: a WAIT that cannot be met costs its own write its timeout (answered
`write-not-durable` then), and nothing else. Connections are kept for the next writes, up to
IDLE_KEPT a master, and opened as needed up to OPEN_MAX a master; past that, a write waits for
one to come free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastctx.backends.pipeline import Address, Breaker, Pipeline

Command = tuple[bytes | str | int | float, ...]
Route = Callable[[Command], Awaitable[tuple[Address, Breaker]]]
"""The master a command goes to (by its key), and the breaker of that master's calls."""

#: Connections a master may have open for waiting writes at once (a worker serves at most
#: FASTCTX_MAX_INFLIGHT requests at once, 128 by default).
OPEN_MAX = 128
#: Free connections kept per master for the next writes; more are closed once free.
IDLE_KEPT = 8


class _Master:
    __slots__ = ("free", "idle", "open")

    def __init__(self) -> None:
        self.idle: list[Pipeline] = []
        self.open = asyncio.Semaphore(OPEN_MAX)
        self.free = 0


class Writers:
    """A `Connection` (see commands.py) for `Commands.writer`: `execute_together` runs the
    commands on a connection of their own; `execute` (a script's load) goes to `shared`."""

    def __init__(self, route: Route, shared: Any, timeout: float) -> None:
        self._route = route
        self._shared = shared
        self.timeout = timeout
        self._masters: dict[Address, _Master] = {}
        self._busy: set[Pipeline] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def execute(self, *args: bytes | str | int | float) -> Awaitable[Any]:
        return self._shared.execute(*args)  # type: ignore[no-any-return]

    async def execute_together(
        self, *commands: Command, block: float = 0.0
    ) -> list[asyncio.Future[Any]]:
        address, breaker = await self._route(commands[0])
        master = self._masters.get(address)
        if master is None:
            master = self._masters[address] = _Master()
        await master.open.acquire()
        connection = (
            master.idle.pop()
            if master.idle
            else Pipeline(address, timeout=self.timeout, breaker=breaker)
        )
        self._busy.add(connection)
        try:
            futures = await connection.execute_together(*commands, block=block)
        except BaseException:
            self._release(master, connection)
            raise
        futures[-1].add_done_callback(lambda _: self._release(master, connection))
        return futures

    def _release(self, master: _Master, connection: Pipeline) -> None:
        self._busy.discard(connection)
        master.open.release()
        if len(master.idle) < IDLE_KEPT and connection.connected:
            master.idle.append(connection)
            return
        closing = asyncio.ensure_future(connection.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        connections = [*self._busy, *(c for m in self._masters.values() for c in m.idle)]
        self._masters.clear()
        self._busy.clear()
        for connection in connections:
            await connection.close()
