"""The SSE handler at the ASGI level: pings, and what a client that goes leaves behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastctx.backends.memory import MemoryBackend
from fastctx.config import Settings
from fastctx.http import events
from fastctx.http.events import EventRoutes
from fastctx.http.exchange import Exchange
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
