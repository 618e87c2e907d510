"""What is known about the call being handled (request id, model, version, stage timings), kept in a contextvar,
and the batcher hook that hands a batch's stage timings to the records of its calls.

The observability interceptor (`ortserve.server.interceptors.observing`) opens a `CallRecord` at the start
of each RPC; log lines, metrics and trace spans of that call read it. Outside a call, `current_call()` is None.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..stage_timings import BatchStages

#: Longest model name kept from a caller (a longer one is cut): log lines stay bounded.
MAX_CALLER_VALUE_CHARS = 128


class CallMetrics(Protocol):
    """What a call record needs of the server's metrics (`ortserve.server.observability.metrics.ServerMetrics`)."""

    def observe_queue_wait(self, model: str, seconds: float) -> None: ...

    def observe_stages(self, model: str, stages: BatchStages) -> None: ...

    def observe_run_estimate(self, model: str, width: int, ratio: float) -> None: ...


class CallSpan(Protocol):
    """What a call record needs of a trace span (an OpenTelemetry `Span`)."""

    def set_attribute(self, key: str, value: Any) -> None: ...

    def is_recording(self) -> bool: ...

    def set_status(self, status: Any) -> None: ...

    def end(self, end_time: int | None = None) -> None: ...


@dataclass(eq=False)
class CallRecord:
    """One RPC being handled. Created by the interceptor; filled in by the batcher hook once its batch ran."""

    request_id: str
    rpc: str
    model: str
    """The model name the caller asked for (cut to MAX_CALLER_VALUE_CHARS); "" for RPCs without one."""
    version: str = ""
    """The version serving `model` when the call started, replaced by the one that answered."""
    started: float = field(default_factory=time.monotonic)
    enqueued: float | None = None
    """When the call's texts entered the model's queue (set by the batcher hook)."""
    stages: BatchStages | None = None
    """The run of the batch that carried this call's texts (set by the batcher hook)."""
    metrics: CallMetrics | None = None
    """The `ServerMetrics` of the server handling the call, when metrics are on."""
    span: CallSpan | None = None
    """The call's OpenTelemetry server span, when tracing is on."""


_CURRENT: ContextVar[CallRecord | None] = ContextVar("ortserve_call", default=None)


def current_call() -> CallRecord | None:
    """The call being handled in this task, or None (start-up, the batcher's worker, the watcher)."""
    return _CURRENT.get()


def enter_call(record: CallRecord) -> object:
    """Make `record` the current call; pass the returned token to `exit_call`."""
    return _CURRENT.set(record)


def exit_call(token: object) -> None:
    _CURRENT.reset(token)  # type: ignore[arg-type]


def observe_batch(
    model: str,
    calls: Sequence[tuple[CallRecord | None, float]],
    stages: BatchStages | None,
    width: int = 0,
    estimated_s: float | None = None,
    seconds: float = 0.0,
) -> None:
    """Batcher hook, called once per batch that ran with the stage timings the run returned: hands them to the record
    of each call (`calls`: its record, or None, and when it was enqueued, `time.monotonic()`) and observes the batch
    metrics, and how the run's estimated duration (`estimated_s`, for a run `width` tokens wide) compared with the
    `seconds` it took."""
    if stages is None:
        return
    metrics: CallMetrics | None = None  # the ServerMetrics of the calls (records carry it: no import of it here)
    for record, enqueued in calls:
        if record is None:
            continue
        record.enqueued = enqueued
        record.stages = stages
        if record.metrics is not None:
            metrics = record.metrics
            metrics.observe_queue_wait(model, max(0.0, stages.started - enqueued))
    if metrics is not None:
        metrics.observe_stages(model, stages)
        if estimated_s is not None and seconds > 0:
            metrics.observe_run_estimate(model, width, estimated_s / seconds)
