"""Request bodies: the media type a route accepts, and reading within the size limit."""

from __future__ import annotations

from starlette.requests import Request

from fastctx.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def require_media_type(request: Request, *accepted: str) -> str:
    kind = media_type(request)
    if kind not in accepted:
        shown = kind or "no Content-Type"
        raise UnsupportedMediaType(f"{shown} is not accepted here; send {' or '.join(accepted)}")
    return kind


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes.

    A declared Content-Length over the limit is refused before reading anything; a chunked
    body is refused at the first chunk that crosses the limit, so at most `limit` bytes plus
    one chunk are ever held.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length must be a non-negative integer")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
