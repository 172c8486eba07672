"""The Python client of fastctx: Client (blocking) and AsyncClient, over httpx."""

from fastctx.client._common import Event
from fastctx.client.aio import AsyncClient, AsyncEventStream
from fastctx.client.sync import Client, EventStream

__all__ = ["AsyncClient", "AsyncEventStream", "Client", "Event", "EventStream"]
