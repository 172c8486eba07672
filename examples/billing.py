"""Billing: issues the invoice for the priced order of the request's context."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fastctx import AsyncClient
from fastctx.middleware import ContextMiddleware, current_token

FASTCTX_URL = os.environ.get("FASTCTX_URL", "http://127.0.0.1:8000")


async def invoice(request: Request) -> JSONResponse:
    context = request.state.context
    if "total_cents" not in context:
        return JSONResponse({"error": "the order has not been priced"}, 409)
    issued = {
        "number": f"INV-{context['order']['id']}",
        "amount_cents": context["total_cents"],
        "currency": "EUR",
    }
    fastctx: AsyncClient = request.app.state.fastctx
    token = current_token()
    assert token is not None  # required=True below: no request gets here without one
    version = await fastctx.patch(
        token, {"invoice": issued, "trail": [*context["trail"], "billing"]}
    )
    return JSONResponse({"invoice": issued["number"], "version": version})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with AsyncClient(FASTCTX_URL) as fastctx:
        app.state.fastctx = fastctx
        yield


app = Starlette(
    routes=[Route("/invoice", invoice, methods=["POST"])],
    middleware=[Middleware(ContextMiddleware, base_url=FASTCTX_URL, required=True)],
    lifespan=lifespan,
)
