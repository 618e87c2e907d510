"""Trace context propagation from callers to the server: gRPC client interceptors that start a CLIENT span per call
and send its W3C `traceparent` in the call's metadata, so the server's spans join the caller's trace.

Optional: needs `opentelemetry-api` (`pip install 'ortserve[tracing]'`). Without it the interceptors pass calls
through unchanged, so code can install them unconditionally.

    channel = traced_channel(grpc.insecure_channel("localhost:50051"))                        # blocking API
    channel = grpc.aio.insecure_channel("localhost:50051", interceptors=[AsyncTracingInterceptor()])   # asyncio
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import grpc

try:
    from opentelemetry import propagate, trace
except ImportError:  # the slim client: grpcio + protobuf only
    propagate = trace = None  # type: ignore[assignment]

TRACER_NAME = "ortserve.client"


def tracing_available() -> bool:
    """True if opentelemetry is installed, so the interceptors create spans and propagate context."""
    return trace is not None


def _traced_metadata(metadata: Any, span: Any) -> list[tuple[str, Any]]:
    carrier: dict[str, str] = {}
    assert propagate is not None and trace is not None
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return [*(metadata or ()), *carrier.items()]


def _start_span(method: str) -> Any:
    assert trace is not None
    service, _, rpc = method.lstrip("/").rpartition("/")
    return trace.get_tracer(TRACER_NAME).start_span(
        method.lstrip("/"),
        kind=trace.SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
    )


def _end_span(span: Any, code: grpc.StatusCode | None) -> None:
    assert trace is not None
    name = code.name if code is not None else "UNKNOWN"
    span.set_attribute("rpc.grpc.status_code", name)
    if code is not grpc.StatusCode.OK:
        span.set_status(trace.Status(trace.StatusCode.ERROR, name))
    span.end()


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class TracingInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Blocking-API interceptor: a CLIENT span per unary call, its context sent as `traceparent` metadata."""

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        if trace is None:
            return continuation(client_call_details, request)
        span = _start_span(client_call_details.method)
        details = _ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            _traced_metadata(client_call_details.metadata, span),
            client_call_details.credentials,
            getattr(client_call_details, "wait_for_ready", None),
            getattr(client_call_details, "compression", None),
        )
        try:
            outcome = continuation(details, request)
        except BaseException:
            _end_span(span, None)
            raise
        outcome.add_done_callback(lambda call: _end_span(span, call.code()))
        return outcome


class AsyncTracingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Asyncio interceptor (`grpc.aio.*_channel(..., interceptors=[AsyncTracingInterceptor()])`), as above."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        if trace is None:
            return await continuation(client_call_details, request)
        span = _start_span(str(client_call_details.method))
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            grpc.aio.Metadata(*_traced_metadata(client_call_details.metadata, span)),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        try:
            call = await continuation(details, request)
            await call  # the span ends with the call; the caller's own await gets the same (cached) outcome
        except grpc.aio.AioRpcError as error:
            _end_span(span, error.code())
            return call
        except BaseException:
            _end_span(span, None)
            raise
        _end_span(span, grpc.StatusCode.OK)
        return call


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """`channel` with `TracingInterceptor` installed (a plain pass-through without opentelemetry)."""
    return grpc.intercept_channel(channel, TracingInterceptor())
