"""JSON responses for the Starlette endpoints (the context routes write theirs directly)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from fastctx.http.body import JSON

encode = msgspec.json.Encoder().encode


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(encode(content), status, headers=headers, media_type=JSON)
