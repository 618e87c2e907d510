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
from typing import Any

#: Longest model name kept from a caller (a longer one is cut): log lines stay bounded.
MAX_CALLER_VALUE_CHARS = 128


@dataclass(eq=False)
class BatchStages:
    """Timings of one model run over a batch, taken in the executor thread (times are `time.monotonic()`)."""

    started: float = field(default_factory=time.monotonic)
    """When the batch left the queue and started running."""
    texts: int = 0
    tokenize_start: float = 0.0
    tokenize_end: float = 0.0
    inference_start: float = 0.0
    inference_end: float = 0.0
    inference_s: float = 0.0
    """Time in ONNX Runtime, summed over the length-grouped runs of the batch."""
    padded_tokens: int = 0
    """Tokens computed on, padding included, summed over the runs of the batch."""

    @property
    def tokenize_s(self) -> float:
        return self.tokenize_end - self.tokenize_start


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
    metrics: Any = None
    """The `ServerMetrics` of the server handling the call, when metrics are on."""
    span: Any = None
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


def observe_batch(model: str, calls: Sequence[Any], output: object) -> None:
    """Batcher hook, called once per batch that ran: hands the batch's stage timings to each call's record and
    observes the batch metrics. `calls` have `.record` (a `CallRecord` or None) and `.enqueued` (monotonic)."""
    stages: BatchStages | None = getattr(output, "stages", None)
    if stages is None:
        return
    metrics: Any = None  # the ServerMetrics of the calls (records carry it, so this module needs no import of it)
    for call in calls:
        record: CallRecord | None = call.record
        if record is None:
            continue
        record.enqueued = call.enqueued
        record.stages = stages
        if record.metrics is not None:
            metrics = record.metrics
            metrics.observe_queue_wait(model, max(0.0, stages.started - call.enqueued))
    if metrics is not None:
        metrics.observe_stages(model, stages)
