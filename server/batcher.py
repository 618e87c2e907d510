"""Adaptive batching: concurrent Classify calls for one model are merged into one model run.

An idle model runs a call at once; calls that arrive while a batch runs wait and form the next batch. So a single
caller pays no batching delay, and many concurrent callers share runs (where CPU inference gains most).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .call_context import CallRecord, current_call
from .errors import DeadlineExceededError, ModelNotReadyError, OverloadedError
from .metrics import observe_batch

log = logging.getLogger(__name__)

#: What one run returns per text (label scores, a probability row, ...).
Row = TypeVar("Row")


@dataclass(frozen=True)
class BatchLimits:
    """Bounds of the batcher of one model."""

    max_batch_size: int = 32
    """Most texts merged into one batch (a single call with more texts still runs, alone)."""
    max_batch_delay_ms: float = 0.0
    """How long a batch may wait for more calls before it runs; 0 runs as soon as the model is free. The wait
    ends early once `max_batch_size` texts are queued."""
    max_queue_texts: int = 2048
    """Most texts waiting for the model; calls beyond it fail fast with RESOURCE_EXHAUSTED. A call that finds the
    queue empty is always admitted, so one large call is never refused for good."""


@dataclass(frozen=True)
class BatchOutput(Generic[Row]):
    """What a batch run gives back: one row per text of the batch, and the version that produced them."""

    version: str
    rows: Sequence[Row]


@dataclass(eq=False)
class _Call(Generic[Row]):
    texts: Sequence[str]
    deadline: float | None
    future: asyncio.Future[BatchOutput[Row]]
    enqueued: float = field(default_factory=time.monotonic)
    record: CallRecord | None = field(default_factory=current_call)  # observability: the submitting call, if any


#: Runs the texts of one batch (from an executor thread) and returns one row per text, in order.
RunBatch = Callable[[list[str]], BatchOutput[Row]]


class AdaptiveBatcher(Generic[Row]):
    """Merges concurrent `submit` calls into batches run by `run_batch` on `executor`, one batch at a time.

    `run_batch(texts)` is called from an executor thread (tokenization and ONNX Runtime release the GIL), never
    from the event loop; it returns one row per text. If it raises, exactly the calls of that batch fail with
    that exception. Deadlines are absolute `time.monotonic()` values; a call whose deadline has passed is
    dropped before it reaches the model. A call is never split across batches.
    """

    def __init__(self, name: str, run_batch: RunBatch[Row], executor: Executor, limits: BatchLimits | None = None):
        self.name = name
        self.limits = limits or BatchLimits()
        self._run_batch = run_batch
        self._executor = executor
        self._queue: deque[_Call[Row]] = deque()
        self._queued_texts = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_texts(self) -> int:
        """Texts waiting for the model (not counting the batch that runs now)."""
        return self._queued_texts

    def start(self) -> None:
        """Start the worker task; must be called from the running event loop that will call `submit`."""
        if self._worker is None and not self._closing:
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Refuse new calls, run what is queued, then stop the worker."""
        self._closing = True
        if self._worker is not None and self._wakeup is not None:
            self._wakeup.set()
            await self._worker
            self._worker = None

    async def submit(self, texts: Sequence[str], deadline: float | None = None) -> BatchOutput[Row]:
        """Queue `texts` for the next batch and wait for their rows.

        Raises `OverloadedError` at once if the queue is full, `DeadlineExceededError` if `deadline` passes before
        the texts reach the model, and whatever `run_batch` raised if their batch failed.
        """
        if self._closing:
            raise ModelNotReadyError(f"model {self.name!r} is shutting down; retry on another replica")
        self.start()
        assert self._wakeup is not None
        if self._queue and self._queued_texts + len(texts) > self.limits.max_queue_texts:
            raise OverloadedError(
                f"model {self.name!r} has {self._queued_texts} texts queued (limit max_queue_texts="
                f"{self.limits.max_queue_texts}); retry later"
            )
        call: _Call[Row] = _Call(texts, deadline, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        self._queued_texts += len(texts)
        self._wakeup.set()
        return await call.future

    async def _work(self) -> None:
        assert self._wakeup is not None
        batch: list[_Call[Row]] = []
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._wait_for_more()
                batch = self._take_batch()
                if batch:
                    await self._run(batch)
                batch = []
        finally:
            # Only reached early if the worker is cancelled (event loop shutdown): nobody may wait forever.
            stranded = batch + list(self._queue)
            self._queue.clear()
            self._queued_texts = 0
            for call in stranded:
                if not call.future.done():
                    call.future.set_exception(ModelNotReadyError(f"model {self.name!r} stopped serving"))

    async def _wait_for_more(self) -> None:
        """With a batch delay, let the batch fill for up to `max_batch_delay_ms` (less if it fills sooner)."""
        assert self._wakeup is not None
        delay = self.limits.max_batch_delay_ms / 1000
        if delay <= 0:
            return
        end = time.monotonic() + delay
        while self._queued_texts < self.limits.max_batch_size and not self._closing:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _run(self, batch: list[_Call[Row]]) -> None:
        texts = [text for call in batch for text in call.texts]
        loop = asyncio.get_running_loop()
        try:
            output = await loop.run_in_executor(self._executor, self._run_batch, texts)
            if len(output.rows) != len(texts):
                raise RuntimeError(f"run_batch returned {len(output.rows)} rows for {len(texts)} texts")
            observe_batch(self.name, batch, output)  # observability: stage timings and batch metrics
        except Exception as exc:  # fail exactly this batch's callers; the next batch runs normally
            log.warning(
                "model %s: a batch of %d texts from %d calls failed: %r", self.name, len(texts), len(batch), exc
            )
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        start = 0
        for call in batch:
            end = start + len(call.texts)
            if not call.future.done():  # a caller may have gone away (cancelled) while its batch ran
                call.future.set_result(BatchOutput(output.version, output.rows[start:end]))
            start = end

    def _take_batch(self) -> list[_Call[Row]]:
        """Pop calls for one batch: live calls in arrival order, up to max_batch_size texts (at least one call)."""
        now = time.monotonic()
        batch: list[_Call[Row]] = []
        size = 0
        while self._queue:
            call = self._queue[0]
            if batch and size + len(call.texts) > self.limits.max_batch_size:
                break
            self._queue.popleft()
            self._queued_texts -= len(call.texts)
            if call.future.done():  # the caller went away (cancelled): nothing to compute
                continue
            if call.deadline is not None and call.deadline <= now:
                waited_ms = (now - call.enqueued) * 1000
                call.future.set_exception(
                    DeadlineExceededError(
                        f"the deadline passed after {waited_ms:.0f} ms waiting for model {self.name!r}; "
                        "the texts were not run (raise the timeout or add capacity)"
                    )
                )
                continue
            batch.append(call)
            size += len(call.texts)
        return batch
