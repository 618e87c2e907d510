"""OpenTelemetry traces: a call from a traced client yields a server span in the caller's trace, with child spans for
queue wait, tokenization and inference; without opentelemetry everything still works (no-op)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ortserve.client import AsyncInferenceClient, InferenceClient
from ortserve.client.tracing import AsyncTracingInterceptor, traced_channel
from ortserve.server.healthcheck import wait_until_serving
from ortserve.server.observability.tracing import INFERENCE_SPAN, QUEUE_WAIT_SPAN, TOKENIZATION_SPAN
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import RunningServer, free_port, running_server, serve_command

CLASSIFY_SPAN = "ortserve.v1.Inference/Classify"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The process's tracer provider (set once per process, as OpenTelemetry allows) with an in-memory exporter."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture(scope="module")
def traced_server(artifacts: dict[str, Path], exporter: InMemorySpanExporter) -> Iterator[RunningServer]:
    with running_server(models=[f"bert={artifacts['bert']}"], tracing=True) as running:
        yield running


def _check_server_spans(spans: dict[str, ReadableSpan], client_span: ReadableSpan, request_id: str) -> None:
    server = spans[CLASSIFY_SPAN + "#server"]
    assert server.kind is trace.SpanKind.SERVER
    assert server.parent is not None and client_span.context is not None
    assert server.parent.span_id == client_span.context.span_id  # the client's context reached the server
    attributes = dict(server.attributes or {})
    assert attributes["ortserve.model"] == "bert"
    assert attributes["ortserve.request_id"] == request_id
    assert attributes["ortserve.model_version"]
    assert attributes["rpc.grpc.status_code"] == "OK"
    assert server.context is not None
    for name in (QUEUE_WAIT_SPAN, TOKENIZATION_SPAN, INFERENCE_SPAN):
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == server.context.span_id, name
        assert child.start_time is not None and child.end_time is not None and server.start_time is not None
        assert server.start_time <= child.start_time <= child.end_time, name
    assert spans[QUEUE_WAIT_SPAN].end_time <= spans[TOKENIZATION_SPAN].start_time  # type: ignore[operator]
    assert spans[TOKENIZATION_SPAN].end_time <= spans[INFERENCE_SPAN].start_time  # type: ignore[operator]


def _by_kind(exporter: InMemorySpanExporter, trace_id: int) -> dict[str, ReadableSpan]:
    """Spans of one trace by name; the client and server spans share a name, so the server's gets '#server'."""
    named = {}
    for span in exporter.get_finished_spans():
        if span.context is None or span.context.trace_id != trace_id:
            continue
        suffix = "#server" if span.kind is trace.SpanKind.SERVER else ""
        named[span.name + suffix] = span
    return named


def test_a_traced_call_has_server_and_stage_spans_in_the_callers_trace(
    traced_server: RunningServer, exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        with traced_channel(grpc.insecure_channel(traced_server.target)) as channel:
            stub = pb_grpc.InferenceStub(channel)
            response = stub.Classify(
                pb.ClassifyRequest(model="bert", texts=["a traced call", "and another text"]),
                metadata=[("x-request-id", "trace-test-1")],
                timeout=30,
            )
    assert response.model_version
    spans = _by_kind(exporter, caller.get_span_context().trace_id)
    client_span = spans[CLASSIFY_SPAN]
    assert client_span.kind is trace.SpanKind.CLIENT
    _check_server_spans(spans, client_span, "trace-test-1")
    assert dict(spans[CLASSIFY_SPAN + "#server"].attributes or {})["ortserve.model_version"] == response.model_version


def test_the_projects_clients_carry_the_callers_trace(
    traced_server: RunningServer, exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("client caller") as caller:
        with InferenceClient(traced_server.target) as client:
            client.classify("bert", ["through InferenceClient"])
    spans = _by_kind(exporter, caller.get_span_context().trace_id)
    assert spans[CLASSIFY_SPAN].kind is trace.SpanKind.CLIENT
    assert spans[CLASSIFY_SPAN + "#server"].parent.span_id == spans[CLASSIFY_SPAN].context.span_id  # type: ignore

    async def call() -> int:
        with tracer.start_as_current_span("async client caller") as async_caller:
            async with AsyncInferenceClient(traced_server.target) as client:
                await client.classify("bert", ["through AsyncInferenceClient"])
        return async_caller.get_span_context().trace_id

    assert CLASSIFY_SPAN + "#server" in _by_kind(exporter, asyncio.run(call()))
    with tracer.start_as_current_span("opted out") as opted_out:
        with InferenceClient(traced_server.target, trace_context=False) as client:
            client.classify("bert", ["no trace context"])
    assert set(_by_kind(exporter, opted_out.get_span_context().trace_id)) == {"opted out"}  # no call joined it


def test_the_asyncio_client_interceptor_propagates_context_too(
    traced_server: RunningServer, exporter: InMemorySpanExporter
) -> None:
    async def call() -> int:
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("async caller") as caller:
            async with grpc.aio.insecure_channel(
                traced_server.target, interceptors=[AsyncTracingInterceptor()]
            ) as channel:
                stub = pb_grpc.InferenceStub(channel)
                await stub.Classify(
                    pb.ClassifyRequest(model="bert", texts=["async"]),
                    metadata=(("x-request-id", "trace-test-2"),),
                    timeout=30,
                )
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.Classify(pb.ClassifyRequest(model="bert", texts=[]), timeout=30)
                assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        return caller.get_span_context().trace_id

    trace_id = asyncio.run(call())
    for _ in range(100):  # an aborted call's status reaches the client before the server's span ends
        spans = [s for s in exporter.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id]
        servers = [s for s in spans if s.kind is trace.SpanKind.SERVER]
        if len(servers) == 2:
            break
        time.sleep(0.05)
    assert sorted(dict(s.attributes or {})["rpc.grpc.status_code"] for s in servers) == ["INVALID_ARGUMENT", "OK"]
    ok = next(s for s in servers if dict(s.attributes or {})["rpc.grpc.status_code"] == "OK")
    client = next(
        s
        for s in spans
        if s.kind is trace.SpanKind.CLIENT
        and s.context is not None
        and ok.parent is not None
        and s.context.span_id == ok.parent.span_id
    )
    named = {s.name: s for s in spans if s.kind is not trace.SpanKind.CLIENT}
    named[CLASSIFY_SPAN + "#server"] = ok
    _check_server_spans(named, client, "trace-test-2")


NO_OTEL = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError("blocked for the test: " + name)
sys.meta_path.insert(0, Block())
import grpc
from ortserve.client.tracing import tracing_available, traced_channel
from ortserve.server.observability.tracing import configure_tracing
from ortserve.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
assert not tracing_available()
assert configure_tracing(True) is None
with traced_channel(grpc.insecure_channel(sys.argv[1])) as channel:
    response = pb_grpc.InferenceStub(channel).Classify(pb.ClassifyRequest(model="bert", texts=["x"]), timeout=30)
print("version", response.model_version)
"""


def test_without_opentelemetry_tracing_is_a_no_op(traced_server: RunningServer) -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_OTEL, traced_server.target], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("version ")


@pytest.mark.slow  # a server process exporting to an OTLP sink
def test_spans_are_exported_over_otlp_to_the_configured_endpoint(artifacts: dict[str, Path]) -> None:
    """`ortserve serve --otlp-endpoint` sends its spans to a real OTLP/gRPC receiver (flushed at shutdown)."""
    from concurrent.futures import ThreadPoolExecutor

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

    received: list[Any] = []

    class Receiver(otlp_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the OTLP method name
            received.extend(span for r in request.resource_spans for s in r.scope_spans for span in s.spans)
            return otlp.ExportTraceServiceResponse()

    receiver = grpc.server(ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(Receiver(), receiver)
    receiver_port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    port = free_port()
    command = serve_command(
        port,
        "--model",
        f"bert={artifacts['bert']}",
        "--otlp-endpoint",
        f"http://127.0.0.1:{receiver_port}",
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(f"127.0.0.1:{port}", process, timeout=120)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            pb_grpc.InferenceStub(channel).Classify(
                pb.ClassifyRequest(model="bert", texts=["exported"]), metadata=[("x-request-id", "otlp-1")], timeout=30
            )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        receiver.stop(1)
    assert process.returncode == 0, stderr
    names = {span.name for span in received}
    assert {CLASSIFY_SPAN, QUEUE_WAIT_SPAN, TOKENIZATION_SPAN, INFERENCE_SPAN} <= names, names
    (server_span,) = [span for span in received if span.name == CLASSIFY_SPAN]
    attributes = {a.key: a.value.string_value for a in server_span.attributes}
    assert attributes["ortserve.request_id"] == "otlp-1"
    children = [span for span in received if span.name != CLASSIFY_SPAN]
    assert all(span.parent_span_id == server_span.span_id for span in children)
