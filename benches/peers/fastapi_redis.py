"""The "traditional" peer: FastAPI on uvicorn over redis-py (asyncio, hiredis), JSON per request.

It implements POST /v1/contexts and GET /v1/contexts/{token} as a typical service would, and
as fast as that stack is documented to go: orjson instead of the stdlib, no pydantic model for
an arbitrary document, one shared connection pool, and uvicorn with uvloop and httptools.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import redis.asyncio as redis
from fastapi import FastAPI, HTTPException, Request, Response

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_TTL = 86400
JSON = "application/json"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # redis-py picks the hiredis parser by itself when hiredis is installed.
    app.state.redis = redis.Redis.from_url(REDIS_URL)
    try:
        yield
    finally:
        await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/contexts", status_code=201)
async def create(request: Request) -> Response:
    try:
        document = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise HTTPException(400, "malformed JSON") from None
    token = secrets.token_urlsafe(16)
    expires_at = time.time() + DEFAULT_TTL
    await request.app.state.redis.set(f"ctx:{token}", orjson.dumps(document), ex=DEFAULT_TTL)
    body = {
        "token": token,
        "version": 1,
        "expires_at": datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="milliseconds"),
    }
    return Response(
        orjson.dumps(body),
        201,
        headers={"Location": f"/v1/contexts/{token}", "ETag": '"1"'},
        media_type=JSON,
    )


@app.get("/v1/contexts/{token}")
async def read(token: str, request: Request) -> Response:
    stored = await request.app.state.redis.get(f"ctx:{token}")
    if stored is None:
        raise HTTPException(404, "no such context")
    # Such services hold the context as a dict between Redis and the wire.
    document = orjson.loads(stored)
    return Response(orjson.dumps(document), headers={"ETag": '"1"'}, media_type=JSON)
