"""OpenTelemetry traces of the server: one SERVER span per RPC, with child spans for queue wait, tokenization and
inference. Optional: without the `[tracing]` extra (opentelemetry not installed) `configure_tracing` returns None.

The caller's trace context comes from the W3C `traceparent` metadata (see `ortserve.client.tracing`). Spans go over
OTLP/gRPC to `otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) when one is set; otherwise to whatever tracer provider
the process configured (an application embedding the server, or a test's in-memory exporter).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .call_context import CallRecord

log = logging.getLogger(__name__)

TRACER_NAME = "ortserve.server"
#: Child spans of a Classify call's server span.
QUEUE_WAIT_SPAN, TOKENIZATION_SPAN, INFERENCE_SPAN = "queue wait", "tokenization", "inference"


class ServerTracer:
    """Starts and ends the spans of each call; used by `ObservabilityInterceptor`."""

    def __init__(self, tracer: Any, provider_to_shut_down: Any = None):
        from opentelemetry import propagate, trace

        self._tracer = tracer
        self._trace = trace
        self._propagator = propagate.get_global_textmap()
        self._provider = provider_to_shut_down

    def start(self, record: CallRecord, method: str, metadata: Sequence[tuple[str, Any]] | None) -> None:
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        parent = self._propagator.extract(carrier)
        service, _, rpc = method.lstrip("/").rpartition("/")
        record.span = self._tracer.start_span(
            method.lstrip("/"),
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": rpc,
                "ortserve.request_id": record.request_id,
                "ortserve.model": record.model,
            },
        )

    def start_http(self, record: CallRecord, method: str, route: str, headers: Mapping[str, str]) -> None:
        """The SERVER span of an HTTP request, continuing the caller's `traceparent` header (names lower case)."""
        parent = self._propagator.extract(dict(headers))
        record.span = self._tracer.start_span(
            f"{method} {route}",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "http.route": route,
                "ortserve.request_id": record.request_id,
                "ortserve.model": record.model,
            },
        )

    def finish_http(self, record: CallRecord, code: str, http_status: int) -> None:
        if record.span is not None:
            record.span.set_attribute("http.response.status_code", http_status)
            self._end(record, code, "ortserve.status_code")

    def finish(self, record: CallRecord, code: str) -> None:
        self._end(record, code, "rpc.grpc.status_code")

    def _end(self, record: CallRecord, code: str, code_attribute: str) -> None:
        """End the call's span with its stage spans (queue wait, tokenization, inference) as children."""
        span = record.span
        if span is None:
            return
        if record.version:
            span.set_attribute("ortserve.model_version", record.version)
        span.set_attribute(code_attribute, code)
        stages = record.stages
        if stages is not None and record.enqueued is not None and span.is_recording():
            # Stage times are monotonic; spans want wall-clock nanoseconds.
            offset_ns = time.time_ns() - time.monotonic_ns()
            parent = self._trace.set_span_in_context(span)  # type: ignore[arg-type]  # an OpenTelemetry Span
            for name, start, end in (
                (QUEUE_WAIT_SPAN, record.enqueued, stages.started),
                (TOKENIZATION_SPAN, stages.tokenize_start, stages.tokenize_end),
                (INFERENCE_SPAN, stages.inference_start, stages.inference_end),
            ):
                if start and end >= start:
                    child = self._tracer.start_span(name, context=parent, start_time=int(start * 1e9) + offset_ns)
                    if name != QUEUE_WAIT_SPAN:
                        child.set_attribute("ortserve.batch_texts", stages.texts)
                    child.end(end_time=int(end * 1e9) + offset_ns)
        if code != "OK":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, code))
        span.end()

    def shutdown(self) -> None:
        """Flush and stop the exporter this module set up (if any)."""
        if self._provider is not None:
            self._provider.shutdown()


def configure_tracing(enabled: bool, otlp_endpoint: str | None = None) -> ServerTracer | None:
    """A `ServerTracer` if tracing is on (`enabled`, or an OTLP endpoint is set) and opentelemetry is installed."""
    endpoint = (
        otlp_endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if not enabled and not otlp_endpoint:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        log.warning("tracing is on but opentelemetry is not installed (pip install 'ortserve[tracing]'): no spans")
        return None
    provider = trace.get_tracer_provider()
    owned = None
    if endpoint and not _is_sdk_provider(provider):
        try:
            provider = owned = _otlp_provider(endpoint)
        except ImportError:
            log.warning("OTLP endpoint set but the OTLP exporter is not installed (pip install 'ortserve[tracing]')")
            return None
        trace.set_tracer_provider(provider)
        log.info("tracing: exporting spans over OTLP/gRPC to %s", endpoint)
    elif not _is_sdk_provider(provider):
        log.warning(
            "tracing is on but no OTLP endpoint is set (--otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT) "
            "and no tracer provider is configured: spans go nowhere"
        )
    return ServerTracer(provider.get_tracer(TRACER_NAME), owned)


def _is_sdk_provider(provider: Any) -> bool:
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return False
    return isinstance(provider, TracerProvider)


def _otlp_provider(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; the name defaults to ortserve here.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "ortserve"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider
