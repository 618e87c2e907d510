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

from .errors import DeadlineExceededError, OverloadedError

log = logging.getLogger(__name__)

#: What one run returns for its texts: a result per text, in order, plus a tag such as the model version.
Rows = TypeVar("Rows")


@dataclass(frozen=True)
class BatchLimits:
    """Bounds of the batcher of one model."""

    max_batch_size: int = 32
    """Most texts merged into one batch (a single call with more texts still runs, alone)."""
    max_batch_delay_ms: float = 0.0
    """How long a batch may wait for more calls before it runs; 0 runs as soon as the model is free."""
    max_queue_texts: int = 2048
    """Most texts waiting for the model; calls beyond it fail fast with RESOURCE_EXHAUSTED."""


@dataclass(frozen=True)
class BatchOutput(Generic[Rows]):
    """What a batch run gives back: one row per text of the batch, and the version that produced them."""

    version: str
    rows: Sequence[Rows]


@dataclass(eq=False)
class _Call:
    texts: Sequence[str]
    deadline: float | None
    future: asyncio.Future[BatchOutput[Rows]]
    enqueued: float = field(default_factory=time.monotonic)


RunBatch = Callable[[list[str]], BatchOutput[Rows]]


class AdaptiveBatcher(Generic[Rows]):
    """Merges concurrent `submit` calls into batches run by `run_batch` on `executor`.

    `run_batch(texts)` is called from an executor thread (tokenization and ONNX Runtime release the GIL), never
    from the event loop; it returns one row per text. If it raises, exactly the calls of that batch fail with
    that exception. Deadlines are absolute `time.monotonic()` values; a call whose deadline has passed is
    dropped before it reaches the model.
    """

    def __init__(self, name: str, run_batch: RunBatch[Rows], executor: Executor, limits: BatchLimits | None = None):
        self.name = name
        self.limits = limits or BatchLimits()
        self._run_batch = run_batch
        self._executor = executor
        self._queue: deque[_Call[Rows]] = deque()
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
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Run what is queued, then stop the worker."""
        self._closing = True
        if self._worker is not None and self._wakeup is not None:
            self._wakeup.set()
            await self._worker
            self._worker = None

    async def submit(self, texts: Sequence[str], deadline: float | None = None) -> BatchOutput[Rows]:
        """Queue `texts` for the next batch and wait for their rows."""
        if self._worker is None or self._wakeup is None:
            self.start()
        assert self._wakeup is not None
        if self._queued_texts + len(texts) > self.limits.max_queue_texts:
            raise OverloadedError(
                f"model {self.name!r} has {self._queued_texts} texts queued (limit max_queue_texts="
                f"{self.limits.max_queue_texts}); retry later"
            )
        call: _Call[Rows] = _Call(texts, deadline, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        self._queued_texts += len(texts)
        self._wakeup.set()
        return await call.future

    async def _work(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.limits.max_batch_delay_ms > 0 and self._queued_texts < self.limits.max_batch_size:
                await asyncio.sleep(self.limits.max_batch_delay_ms / 1000)
            batch = self._take_batch()
            if not batch:
                continue
            texts = [text for call in batch for text in call.texts]
            try:
                output = await loop.run_in_executor(self._executor, self._run_batch, texts)
            except Exception as exc:  # fail exactly this batch's callers; the next batch runs normally
                log.warning("model %s: a batch of %d texts failed: %r", self.name, len(texts), exc)
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(exc)
                continue
            start = 0
            for call in batch:
                end = start + len(call.texts)
                if not call.future.done():
                    call.future.set_result(BatchOutput(output.version, output.rows[start:end]))
                start = end

    def _take_batch(self) -> list[_Call[Rows]]:
        """Pop calls for one batch: live calls in arrival order, up to max_batch_size texts (at least one call)."""
        now = time.monotonic()
        batch: list[_Call[Rows]] = []
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
                call.future.set_exception(
                    DeadlineExceededError(f"the deadline passed while the call waited for model {self.name!r}")
                )
                continue
            batch.append(call)
            size += len(call.texts)
        return batch
