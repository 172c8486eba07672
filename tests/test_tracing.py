"""Traces: a server span per request named by its route, client spans for the backend round
trips it waited on, the caller's trace joined and carried on; exported over OTLP/HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, use_span

import fastctx
from fastctx import tracing
from fastctx.middleware import ContextMiddleware, propagation_headers
from support.backends import backend_url
from support.mcp_calls import tool_call
from support.otlp import OtlpReceiver
from support.ports import free_port
from support.redis import RedisServer
from support.servers import GranianServer

TRACING_DB = 14  # a DB no other test uses
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_traces_are_on_when_an_endpoint_is_named(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans of apps made during the test, kept in memory (the SDK's own exporter)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _server_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.SERVER]


def _no_token_in(spans: list[ReadableSpan], token: str) -> None:
    for span in spans:
        assert token not in span.name
        assert token not in repr(dict(span.attributes or {}))


@pytest.mark.parametrize("backend", ["memory", "redis", "cluster"], indirect=True)
def test_a_request_is_a_server_span_named_by_its_route(
    backend: str, exported: InMemorySpanExporter, start_app: Callable[..., httpx.Client]
) -> None:
    client = start_app("asgi", backend)
    created = client.post("/v1/contexts", json={"a": 1}, headers={"traceparent": TRACEPARENT})
    token = created.json()["token"]
    assert client.patch(f"/v1/contexts/{token}", json={"b": 2}, headers=MERGE).status_code == 200
    assert client.get(f"/v1/contexts/{token}").status_code == 200  # a hit: no round trip
    assert client.get("/v1/contexts/" + "0" * 22).status_code == 404
    spans = list(exported.get_finished_spans())
    servers = _server_spans(spans)
    assert [s.name for s in servers] == [
        "POST /v1/contexts",
        "PATCH /v1/contexts/{token}",
        "GET /v1/contexts/{token}",
        "GET /v1/contexts/{token}",
    ]
    post, patch, hit, missing = servers
    assert dict(post.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/v1/contexts",
        "http.response.status_code": 201,
    }
    assert (missing.attributes or {})["http.response.status_code"] == 404
    # The incoming traceparent made the POST's span its child, in its trace.
    assert post.context is not None
    assert format(post.context.trace_id, "032x") == TRACE_ID
    assert post.parent is not None
    assert format(post.parent.span_id, "016x") == PARENT_ID
    assert post.parent.is_remote
    assert patch.parent is None  # no traceparent: a trace of its own
    assert not _children(spans, hit)
    if backend == "memory://":
        assert not [s for s in spans if s.kind is SpanKind.CLIENT]
    else:
        # One client span per round trip the request waited on, named by what it ran.
        # A create outside a session is one SET; a patch is a script, named by its name.
        created_by = _children(spans, post)
        assert [s.name for s in created_by] == ["SET"]
        assert dict(created_by[0].attributes or {}) == {
            "db.system.name": "redis",
            "db.operation.name": "SET",
        }
        assert created_by[0].kind is SpanKind.CLIENT
        patched_by = _children(spans, patch)
        assert [s.name for s in patched_by] == ["EVALSHA append"]
        assert dict(patched_by[0].attributes or {}) == {
            "db.system.name": "redis",
            "db.operation.name": "EVALSHA",
            "db.stored_procedure.name": "append",
        }
        assert patched_by[0].kind is SpanKind.CLIENT
        assert _children(spans, missing)  # not cached: Redis was asked
    _no_token_in(spans, token)


def test_mcp_requests_carry_the_method_and_tool(
    exported: InMemorySpanExporter, start_app: Callable[..., httpx.Client]
) -> None:
    client = start_app("asgi", "memory://")
    call, headers = tool_call("context_create", {"data": {"n": 1}})
    assert client.post("/mcp", json=call, headers=headers).status_code == 200
    (span,) = _server_spans(list(exported.get_finished_spans()))
    assert span.name == "POST /mcp"
    assert (span.attributes or {})["mcp.method.name"] == "tools/call"
    assert (span.attributes or {})["gen_ai.tool.name"] == "context_create"


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_a_request_its_caller_did_not_sample_records_nothing(
    backend: str, exported: InMemorySpanExporter, start_app: Callable[..., httpx.Client]
) -> None:
    client = start_app("asgi", backend)
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    assert client.post("/v1/contexts", json={}, headers={"traceparent": unsampled}).is_success
    assert exported.get_finished_spans() == ()  # neither the request nor its round trips


def test_untraced_backends_keep_the_connections_own_functions(
    start_app: Callable[..., httpx.Client], redis_server: RedisServer
) -> None:
    """Off, a command is the connection's bound method: nothing stands between them."""
    from fastctx.backends import open_backend
    from fastctx.config import Settings

    assert tracing.TRACER is None
    backend: Any = open_backend(Settings(backend=redis_server.url(TRACING_DB)))
    commands = backend.commands
    assert commands.run == commands.connection.execute
    assert "script" not in vars(commands)  # the class's own method


def test_context_middleware_carries_the_trace_on(receiver: OtlpReceiver, tmp_path: Any) -> None:
    """A service behind ContextMiddleware, not traced itself, loads the context under its
    caller's trace and hands both the token and the trace to the next call."""
    seen: dict[str, Any] = {}

    async def service(scope: Any, receive: Any, send: Any) -> None:
        seen["headers"] = propagation_headers()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = GranianServer.start(tmp_path, "memory://")
    try:
        token = httpx.post(f"{server.base_url}/v1/contexts", json={"n": 1}).json()["token"]

        async def call() -> list[Any]:
            middleware = ContextMiddleware(service, server.base_url)
            headers = [(b"traceparent", TRACEPARENT.encode()), (b"context-token", token.encode())]
            scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
            sent: list[Any] = []

            async def send(message: Any) -> None:
                sent.append(message)

            async def receive() -> Any:
                return {"type": "http.request", "body": b""}

            await middleware(scope, receive, send)
            await middleware.client.close()
            return sent

        sent = asyncio.run(call())
        spans = receiver.wait_for(lambda got: any(s.trace_id == TRACE_ID for s in got))
    finally:
        server.stop()
    assert sent[0]["status"] == 204
    assert seen["headers"] == {"traceparent": TRACEPARENT, "Context-Token": token}
    (load,) = [s for s in spans if s.trace_id == TRACE_ID]
    assert load.name == "GET /v1/contexts/{token}"
    assert load.trace_id == TRACE_ID
    assert load.parent_span_id == PARENT_ID


def test_the_client_joins_the_callers_current_span(exported: InMemorySpanExporter) -> None:
    """With OpenTelemetry in the caller, a call is made under its current span."""
    provider = TracerProvider()
    caller = provider.get_tracer("caller")
    from fastctx.tracecontext import current_trace_headers

    assert current_trace_headers() == {}
    with caller.start_as_current_span("checkout") as span:
        headers = current_trace_headers()
        context = span.get_span_context()
        # version, the span's trace and id, then its flags (sampled, and perhaps random)
        assert headers["traceparent"].startswith(
            f"00-{context.trace_id:032x}-{context.span_id:016x}-"
        )
    with use_span(span):  # ended: still current, still the one carried
        assert current_trace_headers()["traceparent"] == headers["traceparent"]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """A real OTLP/HTTP receiver, and the standard variables that send a server's spans to it."""
    otlp = OtlpReceiver().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fastctx-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms, not 5 s
    try:
        yield otlp
    finally:
        otlp.stop()


def test_a_served_node_exports_its_spans_over_otlp(
    receiver: OtlpReceiver, redis_server: RedisServer, tmp_path: Any
) -> None:
    server = GranianServer.start(tmp_path, redis_server.url(TRACING_DB))
    try:
        caller = TracerProvider().get_tracer("caller")
        with (
            caller.start_as_current_span("checkout") as checkout,
            fastctx.Client(server.base_url) as client,
        ):
            token = client.create({"secret": "do-not-export"})
            client.patch(token, {"more": 1})
        spans = receiver.wait_for(
            lambda got: sum(s.kind == 2 for s in got) >= 2 and any(s.kind == 3 for s in got)
        )
    finally:
        server.stop()
    context = checkout.get_span_context()
    servers = [s for s in spans if s.kind == 2]  # SPAN_KIND_SERVER
    assert [s.name for s in servers] == ["POST /v1/contexts", "PATCH /v1/contexts/{token}"]
    for span in servers[:2]:
        assert span.trace_id == f"{context.trace_id:032x}"  # the client's trace
        assert span.parent_span_id == f"{context.span_id:016x}"
        assert span.service == "fastctx-under-test"
    children = {s.name for s in spans if s.parent_span_id == servers[0].span_id}
    assert children == {"SET"}
    assert not [s for s in servers if s.name == "GET /healthz"]  # the start's probes
    for span in spans:
        assert token.encode() not in span.raw
        assert b"do-not-export" not in span.raw


def test_tracing_without_the_sdk_stops_the_server_at_start(
    spawn_fastctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """An endpoint set without the SDK installed is one line at start, not a silent no-op."""
    hide = tmp_path / "hide"
    (hide / "opentelemetry" / "sdk").mkdir(parents=True)
    (hide / "opentelemetry" / "sdk" / "__init__.py").write_text("raise ImportError('hidden')\n")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("PYTHONPATH", str(hide))
    spawned = spawn_fastctx("serve", "--port", str(free_port()))
    assert spawned.proc.wait(timeout=30) == 2
    assert "pip install 'fastctx[tracing]'" in spawned.output()


@pytest.fixture
def backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> str:
    return backend_url(request, redis_server, TRACING_DB)


def test_the_head_sampling_decision_is_the_samplers_own() -> None:
    """A request the sampler would drop makes no span at all; one it keeps is recorded, with
    the trace id drawn for it, so the share kept is the sampler's ratio."""
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=ParentBasedTraceIdRatio(0.25), id_generator=tracing.preset_ids()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        tracer = tracing.TRACER
        assert tracer is not None
        started = [tracing.start_request(tracer, "GET", []) for _ in range(4000)]
        kept = [span for span in started if span is not None]
        assert all(span.is_recording() for span in kept)  # the SDK decided the same
        assert 800 <= len(kept) <= 1200  # a quarter, give or take
        for span in kept:
            tracing.end_request(span, "GET", "/v1/contexts/{token}", 200)
        assert len(exporter.get_finished_spans()) == len(kept)
        # A caller's decision stands: its unsampled traceparent makes no span, a sampled one
        # is always recorded, as the span's parent.
        unsampled = [(b"traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00".encode())]
        sampled = [(b"traceparent", TRACEPARENT.encode())]
        assert all(tracing.start_request(tracer, "GET", unsampled) is None for _ in range(50))
        for _ in range(50):
            span = tracing.start_request(tracer, "GET", sampled)
            assert span is not None
            assert span.is_recording()
            assert format(span.get_span_context().trace_id, "032x") == TRACE_ID
    finally:
        tracing.install(None)
