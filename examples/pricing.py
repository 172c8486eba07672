"""Pricing: prices the order of the request's context, then asks billing for an invoice."""

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
from fastctx.middleware import ContextMiddleware, apropagate, current_token

FASTCTX_URL = os.environ.get("FASTCTX_URL", "http://127.0.0.1:8000")
BILLING_URL = os.environ.get("BILLING_URL", "http://127.0.0.1:8002")
UNIT_CENTS = {"apple": 50, "pear": 75, "fig": 120}


async def price(request: Request) -> JSONResponse:
    context = request.state.context
    items = context["order"]["items"]
    unknown = sorted({item["sku"] for item in items} - UNIT_CENTS.keys())
    if unknown:
        return JSONResponse({"error": f"no price for {', '.join(unknown)}"}, 422)
    lines = [
        {"sku": item["sku"], "qty": item["qty"], "cents": item["qty"] * UNIT_CENTS[item["sku"]]}
        for item in items
    ]
    fastctx: AsyncClient = request.app.state.fastctx
    # A merge patch adds the prices next to the order; arrays are replaced whole, so the
    # trail is written out with this service appended.
    patch = {
        "prices": lines,
        "total_cents": sum(line["cents"] for line in lines),
        "trail": [*context["trail"], "pricing"],
    }
    token = current_token()
    assert token is not None  # required=True below: no request gets here without one
    await fastctx.patch(token, patch)
    # The apropagate hook puts this request's token on the call as Context-Token.
    http: httpx.AsyncClient = request.app.state.http
    billed = await http.post(f"{BILLING_URL}/invoice")
    return JSONResponse(billed.json(), billed.status_code)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    hooks = {"request": [apropagate]}
    async with (
        AsyncClient(FASTCTX_URL) as fastctx,
        httpx.AsyncClient(timeout=10, event_hooks=hooks) as http,
    ):
        app.state.fastctx, app.state.http = fastctx, http
        yield


app = Starlette(
    routes=[Route("/price", price, methods=["POST"])],
    middleware=[Middleware(ContextMiddleware, base_url=FASTCTX_URL, required=True)],
    lifespan=lifespan,
)
