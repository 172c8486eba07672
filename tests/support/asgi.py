"""The app in process behind an httpx transport that streams.

starlette's TestClient and httpx's ASGITransport both hold a response back until it is whole,
which an event stream never is; this transport hands the response over at its start and its
body as it is sent, and closing the response is the client going away (`http.disconnect`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

Message = dict[str, Any]


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[None]:
    """Run the app's lifespan: started on entry, shut down on exit."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


class _Body(httpx.AsyncByteStream):
    def __init__(
        self, chunks: asyncio.Queue[bytes | None], gone: asyncio.Event, task: asyncio.Task[None]
    ) -> None:
        self.chunks = chunks
        self.gone = gone
        self.task = task

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.chunks.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        self.gone.set()
        await asyncio.wait({self.task}, timeout=5)


class StreamingTransport(httpx.AsyncBaseTransport):
    """Each request runs the app in a task of its own, as a server would."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        loop = asyncio.get_running_loop()
        head: asyncio.Future[Message] = loop.create_future()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        gone = asyncio.Event()
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                head.set_result(message)
                return
            if gone.is_set():
                raise OSError("the client has gone")
            if message.get("body"):
                await chunks.put(message["body"])
            if not message.get("more_body", False):
                await chunks.put(None)

        async def serve() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                if not head.done():
                    head.set_exception(exc)
            finally:
                if not head.done():
                    head.set_exception(RuntimeError("the app sent no response"))
                await chunks.put(None)

        task = asyncio.create_task(serve())
        start = await head
        return httpx.Response(
            start["status"], headers=start.get("headers", []), stream=_Body(chunks, gone, task)
        )


@contextlib.asynccontextmanager
async def app_client(backend_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx.AsyncClient of an app of its own on `backend_url`, running in process."""
    from fastctx.config import Settings
    from fastctx.http import create_app

    app = create_app(Settings(backend=backend_url, **settings))
    async with (
        running(app),
        httpx.AsyncClient(
            transport=StreamingTransport(app), base_url="http://fastctx.test", timeout=10.0
        ) as client,
    ):
        yield client
