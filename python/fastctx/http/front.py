"""The ASGI entry: tenant and metrics for every request, and the hottest route before routing.

Starlette's routing and middleware stack cost more than a cached read itself, so reads of a
context are answered here, after the same tenant check every /v1 request gets; everything
else goes on to the Starlette app. It stays one ASGI app: `create_app` returns this object.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from fastctx.errors import FastctxError
from fastctx.http.auth import Tenants, is_protected
from fastctx.http.contexts import ReadContext
from fastctx.http.metrics import RequestStats
from fastctx.http.problems import send_problem
from fastctx.http.state import TENANT_SCOPE_KEY

CONTEXT_PREFIX = "/v1/contexts/"
READ_ROUTE = "/v1/contexts/{token}"


class Front:
    def __init__(
        self, app: Starlette, tenants: Tenants, stats: RequestStats, read: ReadContext
    ) -> None:
        self.app = app
        self.tenants = tenants
        self.stats = stats
        self.read = read

    @property
    def state(self) -> Any:
        """The Starlette app's state (registry, sessions, settings), for code that embeds us."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        if is_protected(path):
            try:
                tenant = scope[TENANT_SCOPE_KEY] = self.tenants.resolve(scope["headers"])
            except FastctxError as error:
                await send_problem(send, error)
                self.stats.observe("unmatched", method, error.status, time.perf_counter() - started)
                return
            if (
                (method == "GET" or method == "HEAD")
                and path.startswith(CONTEXT_PREFIX)
                and path.find("/", len(CONTEXT_PREFIX)) < 0
            ):
                status = await self.read.respond(scope, send, tenant, path[len(CONTEXT_PREFIX) :])
                self.stats.observe(READ_ROUTE, method, status, time.perf_counter() - started)
                return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            # Templates, not paths: one series per route however many tokens there are.
            label = route.path if isinstance(route, Route) else "unmatched"
            self.stats.observe(label, method, status, time.perf_counter() - started)
