"""OpenTelemetry traces of the server, on when the environment names an OTLP endpoint.

With `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set (and neither
`OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`), each request is a server span named
`{method} {route template}`, a child of the request's `traceparent` when it has one, with a
client span for each backend round trip it waited on. The OpenTelemetry SDK exports them over
OTLP/HTTP and reads every other standard variable itself (`OTEL_SERVICE_NAME`,
`OTEL_TRACES_SAMPLER` and its argument, `OTEL_EXPORTER_OTLP_HEADERS`, the batch processor's).

Off, nothing here runs: `TRACER` is None, the app serves as it would without this module, and
the backends' command functions are the connection's own. No span carries a token, a key, a
query string or a body: routes are templates, scripts are named by what they do.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

T = TypeVar("T")

#: The tracer of this process's requests; None: tracing is off.
TRACER: Tracer | None = None

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTRUMENTATION = "fastctx"
DEFAULT_SERVICE_NAME = "fastctx"


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def missing_packages() -> str | None:
    """What to install for traces, when the OpenTelemetry SDK or its exporter does not import."""
    import importlib

    for module in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http"):
        try:
            importlib.import_module(module)
        except ImportError:
            return (
                f"{' or '.join(ENDPOINT_VARIABLES)} is set, but {module} cannot be imported:"
                " pip install 'fastctx[tracing]'"
            )
    return None


def configure(environ: Mapping[str, str] = os.environ) -> None:
    """Turn traces on as the environment asks, once per process (see the module's doc)."""
    if TRACER is not None or not wanted(environ):
        return
    missing = missing_packages()
    if missing is not None:
        raise RuntimeError(missing)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # The sampler is the one OTEL_TRACES_SAMPLER names; the ids are preset_ids(), so that a
    # request the sampler would drop is told apart before a span is made (`start_request`).
    provider = TracerProvider(resource=resource, id_generator=preset_ids())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)


def install(provider: TracerProvider | None) -> None:
    """Trace with `provider` (an in-memory exporter's, in tests); None turns tracing off.
    Apps and backends made from here on use it."""
    global TRACER, _HEAD
    TRACER = None if provider is None else provider.get_tracer(INSTRUMENTATION)
    _HEAD = None if provider is None else _head_sampling(provider)


def preset_ids() -> Any:
    """The SDK's random ids, except a trace id this module has drawn (and decided on) for the
    span about to start (`.preset`, used once)."""
    return _preset_ids_class()()


@functools.cache
def _preset_ids_class() -> type:
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class PresetIds(IdGenerator):
        def __init__(self) -> None:
            self._random = RandomIdGenerator()
            self.preset = 0

        def generate_span_id(self) -> int:
            return self._random.generate_span_id()

        def generate_trace_id(self) -> int:
            preset, self.preset = self.preset, 0
            return preset or self._random.generate_trace_id()

    return PresetIds


class _HeadSampling:
    """What the sampler would decide for a request, known without making a span: its bound on
    a new trace's id (TraceIdRatioBased's rule, ALWAYS_ON and ALWAYS_OFF its extremes), and
    whether a caller's unsampled traceparent is dropped (ParentBased's default)."""

    def __init__(self, ids: Any, root_bound: int, drops_unsampled_parents: bool) -> None:
        self.ids = ids
        self.root_bound = root_bound
        self.drops_unsampled_parents = drops_unsampled_parents


# Set by `install` when the provider's sampler is one whose decision this module can make;
# None: every request asks the SDK (3 to 4 us even for one it drops).
_HEAD: _HeadSampling | None = None
_TRACE_ID_LIMIT = (1 << 64) - 1  # TraceIdRatioBased compares these bits of a trace id


def _head_sampling(provider: TracerProvider) -> _HeadSampling | None:
    from opentelemetry.sdk.trace import sampling

    ids = provider.id_generator
    if not isinstance(ids, _preset_ids_class()):
        return None
    root, drops_unsampled_parents = provider.sampler, False
    if isinstance(root, sampling.ParentBased):
        drops_unsampled_parents = root._remote_parent_not_sampled is sampling.ALWAYS_OFF
        root = root._root
    if isinstance(root, sampling.TraceIdRatioBased):
        return _HeadSampling(ids, root.bound, drops_unsampled_parents)
    if root is sampling.ALWAYS_ON:
        return _HeadSampling(ids, _TRACE_ID_LIMIT + 1, drops_unsampled_parents)
    if root is sampling.ALWAYS_OFF:
        return _HeadSampling(ids, 0, drops_unsampled_parents)
    return None


# Requests: a server span each.


def _header_getter() -> Any:
    from opentelemetry.propagators.textmap import Getter

    class AsgiHeaders(Getter[list[tuple[bytes, bytes]]]):
        """Reads a header of an ASGI scope's raw list (names are lowercase there)."""

        def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
            wanted = key.lower().encode("latin-1")
            found = [value.decode("latin-1") for name, value in carrier if name == wanted]
            return found or None

        def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
            return [name.decode("latin-1") for name, _ in carrier]

    return AsgiHeaders()


@functools.cache
def _propagation() -> tuple[Any, Any]:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator(), _header_getter()


def parent_of(headers: list[tuple[bytes, bytes]]) -> Context:
    """The span context an incoming `traceparent` (and `tracestate`) names, if any."""
    propagator, getter = _propagation()
    return propagator.extract(headers, getter=getter)  # type: ignore[no-any-return]


def start_request(tracer: Tracer, method: str, headers: list[tuple[bytes, bytes]]) -> Span | None:
    """The server span of a request, until its route is known (see `end_request`); None for
    a request the sampler drops, when that is known without asking the SDK."""
    from opentelemetry.trace import SpanKind

    head = _HEAD
    context = None
    traceparent = next((value for name, value in headers if name == b"traceparent"), None)
    if traceparent is not None:
        if head is not None and head.drops_unsampled_parents and _unsampled(traceparent):
            return None
        context = parent_of(headers)
    elif head is not None:
        # A new trace: draw its id here, decide as TraceIdRatioBased does, and have the SDK
        # use that id (it then decides the same).
        trace_id = random.getrandbits(128) or 1
        if trace_id & _TRACE_ID_LIMIT >= head.root_bound:
            return None
        head.ids.preset = trace_id
    return tracer.start_span(
        method,
        context=context,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method},
    )


def _unsampled(traceparent: bytes) -> bool:
    """A well-formed version-00 traceparent whose sampled flag is off."""
    if len(traceparent) != 55 or traceparent[:3] != b"00-":
        return False  # left to the SDK's parser
    try:
        return not int(traceparent[53:55], 16) & 1
    except ValueError:
        return False


def end_request(span: Span, method: str, route: str, status: int) -> None:
    """Name the request's span by its route and status, and end it."""
    name_request(span, method, route, status)
    span.end()


def name_request(span: Span, method: str, route: str, status: int) -> None:
    from opentelemetry.trace import StatusCode

    span.update_name(f"{method} {route}")
    span.set_attributes({"http.route": route, "http.response.status_code": status})
    if status >= 500:
        span.set_status(StatusCode.ERROR)


class NamingStats:
    """The app's request statistics, which also name the current request's span: they are
    told each request's route template and status, the span's name and attributes."""

    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stats, name)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._stats.observe(route, method, status, seconds)
        from opentelemetry import trace

        span = trace.get_current_span()
        if span.is_recording():
            name_request(span, method, route, status)


def annotate(attributes: Mapping[str, str]) -> None:
    """Add to the current request's span (an MCP call's method and tool, say)."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(dict(attributes))


# Backend round trips: a client span each, for the requests that are recorded.


def traced_command(execute: Callable[..., Awaitable[T]], system: str) -> Callable[..., Any]:
    """`execute` (a connection's), with a client span named by the command for each call made
    while a recorded request is current; calls outside one (background work) make none."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    tracer = TRACER
    assert tracer is not None

    async def traced(*args: Any) -> T:
        if not trace.get_current_span().is_recording():
            return await execute(*args)
        operation = _operation(args[0])
        attributes = {"db.system.name": system, "db.operation.name": operation}
        with tracer.start_as_current_span(operation, kind=SpanKind.CLIENT, attributes=attributes):
            return await execute(*args)

    return traced


def traced_script(run: Callable[..., Awaitable[T]], system: str) -> Callable[..., Any]:
    """`Commands.script`, with one client span per script run (its WAIT included)."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    tracer = TRACER
    assert tracer is not None

    async def traced(script: Any, keys: Iterable[str], args: Any = ()) -> T:
        if not trace.get_current_span().is_recording():
            return await run(script, keys, args)
        attributes = {
            "db.system.name": system,
            "db.operation.name": "EVALSHA",
            "db.stored_procedure.name": script.name,
        }
        name = f"EVALSHA {script.name}"
        with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            return await run(script, keys, args)

    return traced


def _operation(command: Any) -> str:
    return command.decode() if isinstance(command, bytes) else str(command)
