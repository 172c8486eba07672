"""The fastctx ASGI app: every route behind one entry, and `create_app` that assembles it.

`Front` answers every request itself, by path shape and method, with bare ASGI handlers
(`Exchange`): Starlette's route scan and middleware stack would cost about as much as the whole
floor of a request. Before anything else, `Guard` sheds what the worker cannot take on in time;
then every /v1 and /mcp request gets its tenant from its API key; then the route's handler runs,
and whatever it raises becomes a problem response in one place (`_failed`). The REST routes
(`fastctx.http`) and MCP (`fastctx.mcp`) know nothing of each other: this module, above both,
puts them together.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from fastctx import tracing
from fastctx.asgi.exchange import Exchange
from fastctx.asgi.guard import Guard, StreamLimit
from fastctx.asgi.problems import as_problem
from fastctx.backends import open_backend
from fastctx.config import DEFAULT_HEADER_BYTES, Settings
from fastctx.errors import (
    FastctxError,
    HeadersTooLarge,
    InsufficientScope,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
)
from fastctx.http.auth import ProtectedResource, Tenants, is_protected
from fastctx.http.contexts import ContextRoutes
from fastctx.http.events import EventRoutes
from fastctx.http.metrics import Metrics, RequestStats
from fastctx.http.openapi import document
from fastctx.http.ops import OpsRoutes
from fastctx.http.routes import Found
from fastctx.http.sessions import SessionRoutes
from fastctx.mcp import McpEndpoint
from fastctx.mcp.openapi import MCP_PATHS
from fastctx.oauth import GRANT_SCOPE_KEY, READ_SCOPE, WRITE_SCOPE, AccessTokens, require_scope
from fastctx.quotas import RateLimits
from fastctx.registry import Registry
from fastctx.sessions import SessionManager
from fastctx.streams import ChangeStream

TENANT_SCOPE_KEY = "fastctx.tenant"
MCP_PATH = "/mcp"
# The REST routes that read though they are POSTs: what an access token needs for them.
_READING_POSTS = ("/v1/contexts/mget",)
# Probes and scrapes come every few seconds from machines, not from anyone's requests.
_UNTRACED = frozenset(("/healthz", "/readyz", "/metrics"))
OPENAPI = document(MCP_PATHS)
"""The OpenAPI document /openapi.json serves: the REST operations and /mcp's."""
logger = logging.getLogger("fastctx")


class Front:
    def __init__(
        self,
        app: Starlette,
        tenants: Tenants,
        stats: RequestStats,
        routes: Sequence[Callable[[str], Found | None]],
        mcp: McpEndpoint,
        guard: Guard | None = None,
        max_header_bytes: int = DEFAULT_HEADER_BYTES,
        rates: RateLimits | None = None,
    ) -> None:
        self.app = app  # for its lifespan and its state
        self.max_header_bytes = max_header_bytes
        self.rates = rates  # None: no tenant has a bound
        self.guard = guard or Guard(0)
        self.tenants = tenants
        self.stats = stats
        self.tracer = tracing.TRACER
        if self.tracer is not None:  # decided once: untraced, requests go straight to _serve
            self.stats = tracing.NamingStats(stats)  # type: ignore[assignment]
            self._serve = self._serve_traced  # type: ignore[method-assign]
        self.routes = routes
        self._first, *self._rest = routes
        self.mcp = mcp

    @property
    def state(self) -> Any:
        """The app's state (registry, sessions, settings), for code that embeds us."""
        return self.app.state

    def route(self, path: str) -> Found | None:
        """What the route tables make of `path`; the first (the context routes, the hot
        ones) is asked outside the loop."""
        return self._first(path) or self._other(path)

    def _other(self, path: str) -> Found | None:
        for table in self._rest:
            found = table(path)
            if found is not None:
                return found
        return None

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
        # Templates, not paths: one series per route however many tokens there are.
        label = "unmatched"
        try:
            _check_headers(scope["headers"], self.max_header_bytes)
            tenant = ""
            grant = None
            if is_protected(path):
                resolved = self.tenants.resolve(scope["headers"])
                if resolved is None:  # an OAuth access token, not an API key
                    grant = scope[GRANT_SCOPE_KEY] = await self.tenants.verify(scope["headers"])
                    resolved = grant.tenant
                tenant = scope[TENANT_SCOPE_KEY] = resolved
                if self.rates is not None:
                    await self.rates.admit(tenant)
                if path == MCP_PATH:
                    label = MCP_PATH
                    status = await self.mcp(ex, tenant)
                    self.stats.observe(label, method, status, time.perf_counter() - started)
                    return
            found = self._first(path) or self._other(path)
            if found is None:
                raise NotFound("no such route")
            label, handlers, ident, parameters = found
            handler = handlers.get(method)
            if handler is None:
                allowed = ", ".join(handlers)
                raise MethodNotAllowed(f"use {allowed}", {"Allow": allowed})
            if grant is not None:
                reads = method in ("GET", "HEAD") or label in _READING_POSTS
                require_scope(grant, READ_SCOPE if reads else WRITE_SCOPE)
            if scope["query_string"]:
                ex.check_query(parameters)
            status = await handler(ex, tenant, ident)
        except Exception as exc:
            status = await self._failed(ex, exc, label)
        self.stats.observe(label, method, status, time.perf_counter() - started)

    async def _serve_traced(self, ex: Exchange, path: str, method: str) -> None:
        """`_serve` in a server span (see fastctx.tracing): the span is the current one while
        the request is served, and `stats` names it once the route is known."""
        from opentelemetry.trace import use_span

        assert self.tracer is not None
        span = None
        if path not in _UNTRACED:
            span = tracing.start_request(self.tracer, method, ex.scope["headers"])
        if span is None:  # a probe, or not sampled
            await Front._serve(self, ex, path, method)
            return
        with use_span(span, end_on_exit=True):
            await Front._serve(self, ex, path, method)

    async def _failed(self, ex: Exchange, exc: Exception, label: str) -> int:
        """Answer with the problem `exc` stands for; returns the status sent."""
        if ex.started:
            raise exc  # the response is under way: the server closes it and logs the error
        error = as_problem(exc)
        if isinstance(error, Unauthorized | InsufficientScope):
            self.tenants.challenge(error, ex.scope["path"])
        if error is None:
            # The route's template, not the path: paths carry tokens, which logs must not.
            logger.error("unexpected error on %s %s", ex.scope["method"], label, exc_info=exc)
            error = FastctxError("the server failed on this request; it has been logged")
        return await ex.fail(error)


def _check_headers(headers: list[tuple[bytes, bytes]], bound: int) -> None:
    size = sum(len(name) + len(value) for name, value in headers)
    if size > bound:
        raise HeadersTooLarge(
            f"the request's headers are {size} bytes, over FASTCTX_MAX_HEADER_BYTES ({bound})"
        )


def create_app(settings: Settings | None = None) -> Front:
    """A fresh app with its own backend, registry, cache and metrics."""
    settings = settings or Settings.from_env()
    tracing.configure()  # before the backend: its commands are traced from the start
    backend = open_backend(settings)
    registry = Registry(backend, settings)
    sessions = SessionManager(backend, registry)
    guard = Guard(settings.max_inflight)
    streams = StreamLimit(settings.max_streams)
    metrics = Metrics(registry, guard, streams)
    changes = ChangeStream(backend)
    issuers = settings.oauth_issuers()
    access_tokens = None
    if issuers:
        access_tokens = AccessTokens(
            issuers, settings.oauth_audiences(), tenant_claim=settings.oauth_tenant_claim
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.start()
        try:
            yield
        finally:
            await changes.close()
            await backend.close()
            if access_tokens is not None:
                await access_tokens.close()

    app = Starlette(lifespan=lifespan)
    app.state.settings = settings
    app.state.backend = backend
    app.state.registry = registry
    app.state.sessions = sessions
    app.state.metrics = metrics
    routes = [
        ContextRoutes(registry, settings, metrics.stats).route,
        EventRoutes(registry, changes, streams).route,
        SessionRoutes(sessions, settings).route,
        OpsRoutes(backend, metrics, OPENAPI).route,
        ProtectedResource(settings.resource, issuers).route,
    ]
    mcp = McpEndpoint(registry, sessions, settings, changes, streams)
    tenants = Tenants(settings.tenants(), access_tokens, settings.resource)
    default_rate, rate_overrides = settings.tenant_rates()
    rates = None
    if default_rate or any(rate_overrides.values()):
        rates = RateLimits(backend.quotas, default_rate, rate_overrides)
    return Front(app, tenants, metrics.stats, routes, mcp, guard, settings.max_header_bytes, rates)
