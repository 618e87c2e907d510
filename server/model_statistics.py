"""Counts and cumulative times of one model's calls and runs since the server started, always kept (unlike the
Prometheus metrics, which are on with --metrics-port): what the Open Inference Protocol's ModelStatistics reports."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Duration:
    """How many times something happened and how long it took in all, in nanoseconds."""

    count: int = 0
    ns: int = 0

    def plus(self, seconds: float) -> Duration:
        return Duration(self.count + 1, self.ns + max(0, int(seconds * 1e9)))


@dataclass(frozen=True)
class StatisticsSnapshot:
    """The statistics of a model at one moment."""

    success: Duration = field(default_factory=Duration)
    """Answered calls, from arrival at the service to the answer."""
    fail: Duration = field(default_factory=Duration)
    """Calls that reached the model and failed (refused by admission, deadline passed, a failed run)."""
    tokenize: Duration = field(default_factory=Duration)
    """Runs and their tokenization time."""
    infer: Duration = field(default_factory=Duration)
    """Runs and their time in ONNX Runtime."""
    rank: Duration = field(default_factory=Duration)
    """Runs and the time to turn their probabilities into ranked labels."""
    texts: int = 0
    """Texts classified by answered calls."""
    runs: int = 0
    """ONNX Runtime runs (a run carries the texts of one or more calls)."""
    last_call_ms: int = 0
    """When the last call was answered, in milliseconds since the epoch; 0 before the first."""


class ModelStatistics:
    """The statistics of one served model. Calls are recorded on the event loop, runs in executor threads: a lock
    keeps the two apart (a few hundred nanoseconds per call and per run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = StatisticsSnapshot()

    def record_call(self, texts: int, seconds: float, ok: bool) -> None:
        with self._lock:
            now = self._current
            if ok:
                self._current = replace(
                    now,
                    success=now.success.plus(seconds),
                    texts=now.texts + texts,
                    last_call_ms=int(time.time() * 1000),
                )
            else:
                self._current = replace(now, fail=now.fail.plus(seconds))

    def record_run(self, tokenize_s: float, infer_s: float, rank_s: float) -> None:
        with self._lock:
            now = self._current
            self._current = replace(
                now,
                tokenize=now.tokenize.plus(tokenize_s),
                infer=now.infer.plus(infer_s),
                rank=now.rank.plus(rank_s),
                runs=now.runs + 1,
            )

    def snapshot(self) -> StatisticsSnapshot:
        return self._current  # immutable: a consistent copy without the lock
