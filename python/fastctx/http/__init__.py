"""The fastctx ASGI app: `create_app(settings)`, or `fastctx.http:app` configured from the env."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastctx.backends import Backend, open_backend
from fastctx.config import Settings
from fastctx.errors import BackendError
from fastctx.http import sessions
from fastctx.http.auth import Tenants
from fastctx.http.contexts import ContextRoutes
from fastctx.http.events import EventRoutes
from fastctx.http.front import Front
from fastctx.http.guard import Guard, StreamLimit
from fastctx.http.metrics import Metrics
from fastctx.http.openapi import OPENAPI
from fastctx.http.problems import EXCEPTION_HANDLERS, problem
from fastctx.http.responses import json_response
from fastctx.registry import Registry
from fastctx.sessions import SessionManager
from fastctx.streams import ChangeStream

READY_TIMEOUT = 1.0
_OPENAPI_BODY = msgspec.json.encode(OPENAPI)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    try:
        await asyncio.wait_for(backend.ping(), READY_TIMEOUT)
    except (BackendError, TimeoutError):
        return problem(BackendError("the backend does not answer"))
    return json_response({"status": "ready"})


async def openapi(request: Request) -> Response:
    return Response(_OPENAPI_BODY, media_type="application/json")


def create_app(settings: Settings | None = None) -> Front:
    """A fresh app with its own backend, registry, cache and metrics."""
    # Imported here: fastctx.mcp builds on fastctx.http's modules, so a module-level import
    # would make importing fastctx.mcp first a cycle.
    from fastctx.mcp import McpEndpoint

    settings = settings or Settings.from_env()
    backend = open_backend(settings)
    registry = Registry(backend, settings)
    guard = Guard(settings.max_inflight)
    streams = StreamLimit(settings.max_streams)
    metrics = Metrics(registry, guard, streams)
    context_routes = ContextRoutes(registry, settings, metrics.stats)
    changes = ChangeStream(backend)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.start()
        try:
            yield
        finally:
            await changes.close()
            await backend.close()

    app = Starlette(
        routes=[
            *sessions.routes,
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics.endpoint, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.state.registry = registry
    app.state.sessions = session_manager = SessionManager(backend, registry)
    app.state.metrics = metrics
    mcp = McpEndpoint(registry, session_manager, settings, changes, streams)
    events = EventRoutes(registry, changes, streams)
    return Front(
        app, Tenants(settings.tenants()), metrics.stats, context_routes, mcp, events, guard
    )


def __getattr__(name: str) -> Any:
    # `fastctx.http:app` is built on first use, so importing the package reads no environment.
    if name == "app":
        globals()["app"] = created = create_app()
        return created
    raise AttributeError(name)
