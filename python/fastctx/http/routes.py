"""What a route table gives `Front`: the shape every REST handler has, and what a match holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastctx.asgi.exchange import Exchange

Handler = Callable[[Exchange, str, str], Awaitable[int]]
"""(exchange, tenant, token or session id from the path) -> the status sent."""

Found = tuple[str, dict[str, Handler], str, frozenset[str]]
"""(route template, handlers by method, id from the path, the query parameters it takes)."""

NO_PARAMETERS: frozenset[str] = frozenset()
