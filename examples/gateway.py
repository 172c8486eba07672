"""The gateway: stores an incoming order as a context and hands its token on to pricing."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fastctx import AsyncClient
from fastctx.middleware import ContextMiddleware

FASTCTX_URL = os.environ.get("FASTCTX_URL", "http://127.0.0.1:8000")
PRICING_URL = os.environ.get("PRICING_URL", "http://127.0.0.1:8001")


async def place_order(request: Request) -> JSONResponse:
    order = await request.json()
    fastctx: AsyncClient = request.app.state.fastctx
    token = await fastctx.create(
        {"order": order, "trail": ["gateway"]},
        ttl=3600,
        session=request.query_params.get("session"),
    )
    # The token travels as a W3C baggage member; the next service's ContextMiddleware reads it
    # there as well as from a Context-Token header.
    http: httpx.AsyncClient = request.app.state.http
    priced = await http.post(f"{PRICING_URL}/price", headers={"baggage": f"fastctx={token}"})
    status = 201 if priced.is_success else priced.status_code
    return JSONResponse({"token": token, **priced.json()}, status)


async def show_order(request: Request) -> JSONResponse:
    # ContextMiddleware has already loaded the context the caller's Context-Token names.
    return JSONResponse(request.state.context)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with AsyncClient(FASTCTX_URL) as fastctx, httpx.AsyncClient(timeout=10) as http:
        app.state.fastctx, app.state.http = fastctx, http
        yield


app = Starlette(
    routes=[Route("/orders", place_order, methods=["POST"]), Route("/order", show_order)],
    middleware=[Middleware(ContextMiddleware, base_url=FASTCTX_URL)],
    lifespan=lifespan,
)
