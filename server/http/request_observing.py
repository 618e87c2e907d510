"""Observation of each HTTP request, as the gRPC chain's `ObservabilityInterceptor` observes each RPC: a
`CallRecord` (request id, model, version) that log lines read, the request counted and timed by protocol and
route, a trace span continued from the caller's `traceparent`, and an access log line for failures."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ErrorStatus
from ..observability.call_context import MAX_CALLER_VALUE_CHARS, CallRecord, enter_call, exit_call
from ..observability.logs import access_failures
from ..observability.metrics import NO_MODEL, UNKNOWN_MODEL

if TYPE_CHECKING:
    from ..model_table import ModelTable
    from ..observability.metrics import ServerMetrics
    from ..observability.tracing import ServerTracer
    from .messages import Route

access_log = logging.getLogger("ortserve.access")

#: `protocol` label of requests served over HTTP (gRPC's is "grpc").
HTTP_PROTOCOL = "http"
#: `rpc` label of requests that matched no route (their path is the caller's and must not create a series).
UNROUTED = "_unrouted"


@dataclass
class ObservedRequest:
    record: CallRecord
    label: str
    token: object


class HttpObserver:
    """Observes each request of the HTTP app; with no table, metrics or tracer it only keeps the call record."""

    def __init__(
        self,
        table: ModelTable | None = None,
        metrics: ServerMetrics | None = None,
        tracer: ServerTracer | None = None,
    ):
        self._models = {model.name: model for model in table} if table is not None else {}
        self._metrics = metrics
        self._tracer = tracer

    def begin(self, route: Route, model: str, headers: dict[str, str], request_id: str) -> ObservedRequest:
        served = self._models.get(model)
        label = model if served is not None else (UNKNOWN_MODEL if model else NO_MODEL)
        current = served.current if served is not None else None
        record = CallRecord(
            request_id,
            f"{route.method} {route.template}",
            model[:MAX_CALLER_VALUE_CHARS],
            current.version if current is not None else "",
        )
        record.metrics = self._metrics
        if self._metrics is not None:
            self._metrics.in_flight[label] = self._metrics.in_flight.get(label, 0) + 1
        if self._tracer is not None:
            self._tracer.start_http(record, route.method, route.template, headers)
        return ObservedRequest(record, label, enter_call(record))

    def end(self, observed: ObservedRequest, code: str, http_status: int, model_version: str = "") -> None:
        record = observed.record
        if model_version:
            record.version = model_version
        seconds = time.monotonic() - record.started
        if self._metrics is not None:
            self._metrics.in_flight[observed.label] -= 1
            # A model named in the body (`HttpRequest.use_model`) is known only now.
            label = record.model if record.model in self._models else (UNKNOWN_MODEL if record.model else NO_MODEL)
            self._metrics.observe_call(label, record.rpc, code, seconds, protocol=HTTP_PROTOCOL)
        if self._tracer is not None:
            self._tracer.finish_http(record, code, http_status)
        if http_status >= 400:
            access_failures.log(logging.INFO, "%s %d %s in %.1f ms", record.rpc, http_status, code, seconds * 1000)
        elif access_log.isEnabledFor(logging.DEBUG):
            access_log.debug("%s %d in %.1f ms", record.rpc, http_status, seconds * 1000)
        exit_call(observed.token)

    def unrouted(self, status: ErrorStatus) -> None:
        if self._metrics is not None:
            self._metrics.observe_call(NO_MODEL, UNROUTED, status.grpc_code, 0.0, protocol=HTTP_PROTOCOL)
