"""W3C Trace Context for the client side: the `traceparent` a call to fastctx (or to the next
service) carries, so that its spans join the trace of the request that made it.

Where the caller has OpenTelemetry (its API installed and a span current), the header is that
span's, written by the caller's own propagator. Otherwise it is the `traceparent` (and
`tracestate`) of the request being served, as `ContextMiddleware` found it: a service that is
not traced itself still hands its caller's trace on, as it hands on the context token. With
neither there is nothing to carry. Needs no package beyond the client's.
"""

from __future__ import annotations

import importlib.util
from contextvars import ContextVar
from typing import Any

__all__ = [
    "current_trace_headers",
    "incoming_trace_headers",
    "reset_incoming",
    "set_incoming",
]

TRACE_HEADERS = (b"traceparent", b"tracestate")

# The request being served (ContextMiddleware sets it): its traceparent and tracestate.
_incoming: ContextVar[dict[str, str] | None] = ContextVar("fastctx_trace", default=None)

_otel: Any = None  # (opentelemetry.trace, opentelemetry.propagate), once looked for; False: none


def incoming_trace_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """The trace context of raw ASGI headers, or None when they carry no traceparent."""
    found = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name.lower() in TRACE_HEADERS
    }
    return found if "traceparent" in found else None


def set_incoming(trace: dict[str, str] | None) -> Any:
    """Make `trace` the served request's trace context; returns the ContextVar's reset token."""
    return _incoming.set(trace)


def reset_incoming(reset: Any) -> None:
    _incoming.reset(reset)


def current_trace_headers() -> dict[str, str]:
    """The headers that carry the current trace on: the current OpenTelemetry span's, else the
    served request's; empty when there is no trace."""
    global _otel
    if _otel is None:
        _otel = _load_opentelemetry()
    if _otel:
        trace, propagate = _otel
        if trace.get_current_span().get_span_context().is_valid:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            if carrier:
                return carrier
    incoming = _incoming.get()
    return dict(incoming) if incoming else {}


def _load_opentelemetry() -> Any:
    if importlib.util.find_spec("opentelemetry") is None:
        return False
    try:
        from opentelemetry import propagate, trace
    except ImportError:  # a namespace without the API
        return False
    return trace, propagate
