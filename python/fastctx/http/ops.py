"""The operator's routes: /healthz, /readyz, /metrics and /openapi.json (no API key needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from prometheus_client import generate_latest

from fastctx.asgi.exchange import Exchange
from fastctx.backends import Backend
from fastctx.errors import BackendError
from fastctx.http.metrics import CONTENT_TYPE, Metrics
from fastctx.http.routes import NO_PARAMETERS, Found, Handler

READY_TIMEOUT = 1.0


class OpsRoutes:
    def __init__(self, backend: Backend, metrics: Metrics, document: dict[str, Any]) -> None:
        self.backend = backend
        self.metrics = metrics
        self.document = msgspec.json.encode(document)  # the OpenAPI document served
        self._routes: dict[str, dict[str, Handler]] = {
            path: {"GET": handler, "HEAD": handler}
            for path, handler in (
                ("/healthz", self.healthz),
                ("/readyz", self.readyz),
                ("/metrics", self.scrape),
                ("/openapi.json", self.openapi),
            )
        }

    def route(self, path: str) -> Found | None:
        handlers = self._routes.get(path)
        return None if handlers is None else (path, handlers, "", NO_PARAMETERS)

    async def healthz(self, ex: Exchange, _: str, __: str) -> int:
        return await ex.respond(200, b'{"status":"ok"}')

    async def readyz(self, ex: Exchange, _: str, __: str) -> int:
        try:
            await asyncio.wait_for(self.backend.ping(), READY_TIMEOUT)
        except (BackendError, TimeoutError):
            return await ex.fail(BackendError("the backend does not answer"))
        return await ex.respond(200, b'{"status":"ready"}')

    async def scrape(self, ex: Exchange, _: str, __: str) -> int:
        body = generate_latest(self.metrics.collectors)
        return await ex.respond(200, body, content_type=CONTENT_TYPE.encode())

    async def openapi(self, ex: Exchange, _: str, __: str) -> int:
        return await ex.respond(200, self.document)
