"""The interceptor that observes every RPC: its call record (request id, model, version), metrics, trace span and
access log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from ..observability.call_context import MAX_CALLER_VALUE_CHARS, CallRecord, enter_call, exit_call
from ..observability.logs import access_failures
from ..observability.metrics import NO_MODEL, UNKNOWN_MODEL, UNOBSERVED_PREFIXES, ServerMetrics
from .request_id import current_request_id
from .requested_model import requested_model
from .wrapping import HandlerWrappingInterceptor

if TYPE_CHECKING:
    from ..model_table import ModelTable
    from ..observability.tracing import ServerTracer

access_log = logging.getLogger("ortserve.access")


Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class ObservabilityInterceptor(HandlerWrappingInterceptor):
    """Opens a `CallRecord` per unary RPC (request id, model, version: read by log lines, metrics and spans), counts
    the RPC by model, method and status code, times it, and starts its trace span when tracing is on.

    Health checks and reflection pass through untouched.
    """

    def __init__(self, table: ModelTable, metrics: ServerMetrics | None = None, tracer: ServerTracer | None = None):
        self._models = {model.name: model for model in table}
        self._metrics = metrics
        self._tracer = tracer
        super().__init__()

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None or method.startswith(UNOBSERVED_PREFIXES):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._observed(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _observed(self, behavior: Behavior, method: str) -> Behavior:
        rpc = method.rsplit("/", 1)[-1]
        models, metrics, tracer = self._models, self._metrics, self._tracer
        in_flight = metrics.in_flight if metrics is not None else {}

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            name = requested_model(request) or ""
            served = models.get(name)
            label = name if served is not None else (UNKNOWN_MODEL if name else NO_MODEL)
            metadata = context.invocation_metadata()
            current = served.current if served is not None else None
            # The chain's request id interceptor runs first: one id for the caller, the error log and these records.
            record = CallRecord(
                current_request_id(),
                rpc,
                name[:MAX_CALLER_VALUE_CHARS],
                current.version if current is not None else "",
            )
            record.metrics = metrics
            token = enter_call(record)
            in_flight[label] = in_flight.get(label, 0) + 1
            if tracer is not None:
                tracer.start(record, method, metadata)
            code = "OK"
            try:
                response = await behavior(request, context)
                answered = getattr(response, "model_version", "")
                if answered:
                    record.version = answered
                code = _code_name(context.code(), "OK")
                return response
            except BaseException as exc:
                code = _code_name(context.code(), "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN")
                raise
            finally:
                in_flight[label] -= 1
                seconds = time.monotonic() - record.started
                if metrics is not None:
                    metrics.observe_call(label, rpc, code, seconds)
                if tracer is not None:
                    tracer.finish(record, code)
                if code != "OK":
                    access_failures.log(logging.INFO, "%s %s in %.1f ms", rpc, code, seconds * 1000)
                elif access_log.isEnabledFor(logging.DEBUG):
                    access_log.debug("%s %s in %.1f ms", rpc, code, seconds * 1000)
                exit_call(token)

        return observed


def _code_name(code: Any, default: str) -> str:
    """A status code as its name; `context.code()` gives None until the handler sets one."""
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    for status in grpc.StatusCode:  # some grpc versions hand back the integer value
        if status.value[0] == code:
            return status.name
    return default
