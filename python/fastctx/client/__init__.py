"""The Python client of fastctx: Client (blocking) and AsyncClient, over httpx."""

from fastctx.client._common import Event
from fastctx.client.aio import AsyncClient, AsyncEventStream, AsyncWatch
from fastctx.client.sync import Client, EventStream, Watch

__all__ = [
    "AsyncClient",
    "AsyncEventStream",
    "AsyncWatch",
    "Client",
    "Event",
    "EventStream",
    "Watch",
]
