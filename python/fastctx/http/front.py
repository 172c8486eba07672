"""The ASGI entry: tenant and metrics for every request, and the context routes before routing.

Starlette's route scan and middleware stack cost about as much as the whole floor of a
request, so the context routes (`ContextRoutes`) are answered here, by path shape and method,
after the same tenant check every /v1 request gets; so is /mcp. Everything else (sessions,
probes, metrics, OpenAPI, 404s) goes on to the Starlette app. It stays one ASGI app: `create_app`
returns this object. Before any of that, `Guard` sheds what the worker cannot take on in time.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from fastctx.errors import FastctxError, MethodNotAllowed
from fastctx.http.auth import Tenants, is_protected
from fastctx.http.contexts import ContextRoutes
from fastctx.http.events import EventRoutes
from fastctx.http.exchange import Exchange
from fastctx.http.guard import Guard
from fastctx.http.metrics import RequestStats
from fastctx.http.problems import as_problem
from fastctx.http.state import TENANT_SCOPE_KEY

if TYPE_CHECKING:  # fastctx.mcp builds on fastctx.http: importing it here would be a cycle
    from fastctx.mcp import McpEndpoint

logger = logging.getLogger("fastctx")


class Front:
    def __init__(
        self,
        app: Starlette,
        tenants: Tenants,
        stats: RequestStats,
        contexts: ContextRoutes,
        mcp: McpEndpoint,
        events: EventRoutes,
        guard: Guard | None = None,
    ) -> None:
        self.app = app
        self.guard = guard or Guard(0)
        self.tenants = tenants
        self.stats = stats
        self.contexts = contexts
        self.mcp = mcp
        self.events = events

    @property
    def state(self) -> Any:
        """The Starlette app's state (registry, sessions, settings), for code that embeds us."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        path: str = scope["path"]
        method: str = scope["method"]
        guard = self.guard
        if not guard.counts(path, method):
            await self._serve(Exchange(scope, receive, send), path, method)
            return
        if guard.inflight >= guard.limit:
            await guard.refuse(send)  # before any work, even the tenant check
            return
        guard.inflight += 1
        ex = Exchange(scope, receive, send, guard)
        try:
            await self._serve(ex, path, method)
        finally:
            ex.release()  # unless it became an event stream, which gave the slot back then

    async def _serve(self, ex: Exchange, path: str, method: str) -> None:
        started = time.perf_counter()
        scope = ex.scope
        if is_protected(path):
            route = self.contexts.route(path) or self.events.route(path)
            label = route[0] if route is not None else "unmatched"
            try:
                tenant = scope[TENANT_SCOPE_KEY] = self.tenants.resolve(scope["headers"])
                if route is not None:
                    handler = route[1].get(method)
                    if handler is None:
                        allowed = ", ".join(route[1])
                        raise MethodNotAllowed(f"use {allowed}", {"Allow": allowed})
                    status = await handler(ex, tenant, route[2])
                    self.stats.observe(label, method, status, time.perf_counter() - started)
                    return
                if path == "/mcp":
                    label = path
                    status = await self.mcp(ex, tenant)
                    self.stats.observe(label, method, status, time.perf_counter() - started)
                    return
            except Exception as exc:
                status = await self._failed(ex, exc)
                self.stats.observe(label, method, status, time.perf_counter() - started)
                return
        status = 500
        send = ex.send

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, ex.receive, send_and_note)
        finally:
            found = scope.get("route")
            # Templates, not paths: one series per route however many tokens there are.
            label = found.path if isinstance(found, Route) else "unmatched"
            self.stats.observe(label, method, status, time.perf_counter() - started)

    async def _failed(self, ex: Exchange, exc: Exception) -> int:
        """Answer with the problem `exc` stands for; returns the status sent."""
        if ex.started:
            raise exc  # the response is under way: the server closes it and logs the error
        error = as_problem(exc)
        if error is None:
            # The route's template, not the path: paths carry tokens, which logs must not.
            path = ex.scope["path"]
            route = self.contexts.route(path) or self.events.route(path)
            where = path if route is None else route[0]
            logger.error("unexpected error on %s %s", ex.scope["method"], where, exc_info=exc)
            error = FastctxError("the server failed on this request; it has been logged")
        return await ex.fail(error)
