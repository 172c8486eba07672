"""The SSE handler at the ASGI level: pings, and what a client that goes leaves behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastctx.asgi.exchange import Exchange
from fastctx.backends.memory import MemoryBackend
from fastctx.config import Settings
from fastctx.http import events
from fastctx.http.events import EventRoutes
from fastctx.registry import Registry
from fastctx.streams import ChangeStream

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def request(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [],
    }


async def test_pings_while_idle_and_lets_go_when_the_client_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "PING_INTERVAL", 0.02)
    backend = MemoryBackend()
    registry = Registry(backend, Settings())
    changes = ChangeStream(backend)
    routes = EventRoutes(registry, changes)
    created = await registry.create("t", b"{}")
    sent: list[dict[str, Any]] = []
    leave = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = f"/v1/contexts/{created.token}/events"
    ex = Exchange(request(path), receive, send)
    serving = asyncio.create_task(routes.context_events(ex, "t", created.token))
    await asyncio.sleep(0.1)
    assert sent[0]["status"] == 200
    bodies = [m.get("body", b"") for m in sent[1:]]
    assert bodies.count(b": ping\n\n") >= 2
    assert changes.watched == 1  # while the client listens
    leave.set()
    assert await asyncio.wait_for(serving, 1) == 200
    assert changes.watched == 0
    await changes.close()


async def test_one_timer_pings_every_idle_stream_and_ends_with_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "PING_INTERVAL", 0.03)
    backend = MemoryBackend()
    registry = Registry(backend, Settings())
    changes = ChangeStream(backend)
    routes = EventRoutes(registry, changes)
    tokens = [(await registry.create("t", b"{}")).token for _ in range(5)]
    leave = asyncio.Event()
    sent: list[list[bytes]] = [[] for _ in tokens]

    async def receive() -> dict[str, Any]:
        await leave.wait()
        return {"type": "http.disconnect"}

    def sender(n: int) -> Any:
        async def send(message: dict[str, Any]) -> None:
            sent[n].append(message.get("body", b""))

        return send

    serving = [
        asyncio.create_task(
            routes.context_events(
                Exchange(request(f"/v1/contexts/{token}/events"), receive, sender(n)), "t", token
            )
        )
        for n, token in enumerate(tokens)
    ]
    await asyncio.sleep(0.2)
    assert all(bodies.count(b": ping\n\n") >= 3 for bodies in sent)
    timers = [t for t in asyncio.all_tasks() if t.get_name() == "fastctx-sse-pings"]
    assert len(timers) == 1
    leave.set()
    assert await asyncio.wait_for(asyncio.gather(*serving), 1) == [200] * len(tokens)
    await asyncio.sleep(0.01)
    assert timers[0].done()
    await changes.close()
