"""JSON-RPC 2.0 messages as MCP uses them: decoding, error codes, and encoded replies."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from fastctx import _core
from fastctx.asgi.body import decode_json

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Defined by MCP: the session era's "resource not found", and the 2026-07-28 envelope errors.
RESOURCE_NOT_FOUND = -32002
HEADER_MISMATCH = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022

RequestId = int | str
# The protocol eras: sessions opened by initialize, or self-contained 2026-07-28 requests.
Era = Literal["session", "modern"]


class Message(msgspec.Struct, forbid_unknown_fields=False):
    """One JSON-RPC message; which members are set says whether it is a request,
    a notification (no id) or a response (no method)."""

    jsonrpc: str
    id: RequestId | msgspec.UnsetType | None = msgspec.UNSET
    method: str | msgspec.UnsetType = msgspec.UNSET
    params: Any = msgspec.UNSET
    result: Any = msgspec.UNSET
    error: Any = msgspec.UNSET


class RpcError(Exception):
    """A JSON-RPC error reply; `status` is the HTTP status it goes out with."""

    def __init__(self, code: int, message: str, data: Any = None, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status


_decoder = msgspec.json.Decoder(Message)
encode = msgspec.json.Encoder().encode


def decode(body: bytes) -> Message:
    """The message in a POST body; `RpcError` for bad JSON, batches or a malformed envelope."""
    if not body or body.isspace():
        raise RpcError(PARSE_ERROR, "parse error: the body is empty", status=400)
    try:
        message = decode_json(body, _decoder)
    except msgspec.ValidationError as exc:
        if body.lstrip().startswith(b"["):
            raise RpcError(INVALID_REQUEST, "batches are not supported", status=400) from None
        raise RpcError(INVALID_REQUEST, f"not a JSON-RPC message: {exc}", status=400) from None
    except (msgspec.DecodeError, _core.JsonError) as exc:
        raise RpcError(PARSE_ERROR, f"parse error: {exc}", status=400) from None
    if message.jsonrpc != "2.0":
        raise RpcError(INVALID_REQUEST, 'jsonrpc must be "2.0"', status=400)
    if message.id is None:
        raise RpcError(INVALID_REQUEST, "a request id must be a string or a number", status=400)
    has_reply = message.result is not msgspec.UNSET or message.error is not msgspec.UNSET
    if message.method is msgspec.UNSET and not (has_reply and message.id is not msgspec.UNSET):
        raise RpcError(INVALID_REQUEST, "a message needs a method (or is a response)", status=400)
    return message


def _id(request_id: RequestId | msgspec.UnsetType | None) -> RequestId | None:
    return None if isinstance(request_id, msgspec.UnsetType) else request_id


def result(request_id: RequestId | msgspec.UnsetType | None, value: Any) -> bytes:
    if isinstance(value, msgspec.Raw):
        # Already encoded (a tool's result, around a stored document): spliced, not copied
        # through the encoder once more.
        return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (encode(_id(request_id)), value)
    return encode({"jsonrpc": "2.0", "id": _id(request_id), "result": value})


def error(request_id: RequestId | msgspec.UnsetType | None, exc: RpcError) -> bytes:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        body["data"] = exc.data
    return encode({"jsonrpc": "2.0", "id": _id(request_id), "error": body})
