"""Adaptive batching with a token budget: the queued Classify calls of one model are merged into model runs.

The batcher is in three parts. `admission` decides whether a call may queue (bounds, and its deadline against the
measured cost of runs); `run_forming` decides, as pure functions over the `RunQueue`, which texts form the next run;
this module schedules: it owns the queue, starts runs on executor threads (from one place, `_schedule`) and answers
each call when its last text has run.

An idle model runs a call at once; calls that arrive while the model's runs are busy wait and form the next run. A
model runs up to `concurrent_runs` runs at once, each on its own executor thread, so that the cores stay busy while
one run's answers are returned and the next run is formed; a second run starts once a share of a batch is queued.
Runs are formed from texts, not whole calls (the least served call first, as text-embeddings-inference forms batches
by a token budget), so a bulk call's texts spread over several runs while a short call that arrives meanwhile joins
the next run, and waits for at most the runs in progress; while those are long ones, short calls run beside them at
once (the express lane). A call is still answered whole, once all its texts have run, and by one model version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic

from .admission import ESTIMATE_TOLERANCE, ReturnSchedule, RunCost, admit, estimate_wait
from .batch_limits import BatchLimits
from .errors import ModelNotReadyError, OrtServeError
from .run_forming import (
    EXPRESS_AFTER_TOKENS,
    BatchOutput,
    QueuedCall,
    Row,
    RunPart,
    RunQueue,
    express_budget,
    keeps_cores_busy,
    may_start_run,
    run_pin,
    run_shape,
)
from .text_cost import estimate_tokens

if TYPE_CHECKING:
    from .observability.call_context import CallRecord

__all__ = ["AdaptiveBatcher", "BatchLimits", "BatchOutput", "RunBatch", "RunCost", "RunReport", "TextCost"]

log = logging.getLogger(__name__)

#: Runs the texts of one batch (from an executor thread) on the version `pin` (None: the current one) and returns one
#: row per text, in order, with the run's stage timings if it measured them.
RunBatch = Callable[[list[str], object], BatchOutput[Row]]

#: Estimated token count of one text, computed on the event loop before the text is tokenized: it must be cheap.
TextCost = Callable[[str], int]


@dataclass(frozen=True)
class RunReport:
    """One run as the batcher saw it: its shape (`rows` texts padded to an estimated `width` tokens), the seconds the
    cost model expected (None before anything was measured), and the seconds it took."""

    rows: int
    width: int
    estimated_s: float | None
    seconds: float


#: Hook called once per run that answered: (model, the calls' records and enqueue times, the run's output, the run).
RunObserver = Callable[[str, Sequence[tuple["CallRecord | None", float]], BatchOutput[Row], RunReport], None]


@dataclass(frozen=True)
class _RunInProgress(Generic[Row]):
    rows: int
    width: int
    """Texts of the run, and the tokens (estimated) they are padded to."""
    until: float | None
    """When it should end (`time.monotonic()`), from the measured run cost; None before the first run."""
    calls: tuple[QueuedCall[Row], ...]
    """The calls with texts in the run."""

    @property
    def tokens(self) -> int:
        """Padded tokens of the run (estimated)."""
        return self.rows * self.width


@dataclass(frozen=True)
class _LaunchedRun(Generic[Row]):
    """A run handed to an executor thread, as its outcome is answered on the loop."""

    parts: list[RunPart[Row]]
    texts: list[str]
    ended: asyncio.Future[None]
    """Done once the run's calls are answered or failed."""
    main: bool
    """A main run (in a slot, measured for the cost model), not an express run."""
    rows: int
    width: int
    estimated_s: float | None
    started: float


class AdaptiveBatcher(Generic[Row]):
    """Forms runs from the texts of concurrent `submit` calls and runs them with `run_batch` on `executor`, up to
    `limits.concurrent_runs` runs at a time.

    `run_batch(texts, pin)` is called from an executor thread (tokenization and ONNX Runtime release the GIL), never
    from the event loop; it returns one row per text. If it raises, exactly the calls with texts in that run fail with
    that exception. Deadlines are absolute `time.monotonic()` values: a call that cannot meet its deadline is refused
    at admission or dropped before its next run. `limits` are enforced here, where runs are formed; `run_batch` gets
    runs that already respect them. `on_run`, if given, is called on the event loop after each run that answered
    (the server's metrics and traces read the run's stage timings there). `current_pin()` is the pin `run_batch`
    would return for a run of unpinned calls started now (the serving version): calls pinned to it share runs with
    fresh calls. Without it, pinned calls share runs only with calls pinned alike.
    """

    def __init__(
        self,
        name: str,
        run_batch: RunBatch[Row],
        executor: Executor,
        limits: BatchLimits | None = None,
        text_cost: TextCost = estimate_tokens,
        on_run: RunObserver[Row] | None = None,
        current_pin: Callable[[], object] = lambda: None,
    ):
        self.name = name
        self.limits = limits or BatchLimits()
        self.run_cost = RunCost()
        self._returns = ReturnSchedule()
        """When callers refused for the work ahead should come back (admission's retry pushback)."""
        self._run_batch = run_batch
        self._executor = executor
        self._text_cost = text_cost
        self._on_run = on_run
        self._current_pin = current_pin
        self._queue: RunQueue[Row] = RunQueue(name)
        self._calls_in_flight = 0
        self._runs: dict[asyncio.Future[None], _RunInProgress[Row]] = {}
        """Main runs in progress (each future is done once its calls are answered), with their estimated end and
        size."""
        self._express: asyncio.Future[None] | None = None
        self._delay_timer: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def queued_texts(self) -> int:
        """Texts waiting for the model (not counting the runs in progress)."""
        return self._queue.queued_texts

    @property
    def queued_tokens(self) -> int:
        """Estimated tokens waiting for the model (not counting the runs in progress)."""
        return self._queue.queued_tokens

    @property
    def calls_in_flight(self) -> int:
        """Calls admitted and not yet answered."""
        return self._calls_in_flight

    async def close(self) -> None:
        """Refuse new calls, run what is queued, then return once every run has ended."""
        self._closing = True
        while True:
            self._schedule()
            pending = [*self._runs, *([self._express] if self._express is not None else [])]
            if not pending:
                break
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for call in self._queue.clear():  # only calls that no run could take (none, unless a run_batch misbehaved)
            self._fail(call, ModelNotReadyError(f"model {self.name!r} stopped serving"))

    async def submit(
        self, texts: Sequence[str], deadline: float | None = None, record: CallRecord | None = None
    ) -> BatchOutput[Row]:
        """Queue `texts` and wait for their rows, all from one model version. `record` is the call's observability
        record, if the server observes calls: it receives the stage timings of the call's runs.

        Raises `OverloadedError` at once if the queue or the calls in flight are at their bounds,
        `DeadlineExceededError` at once if the work queued ahead cannot finish before `deadline`, or later if the
        deadline passes before the texts run, and whatever `run_batch` raised if one of their runs failed.
        """
        if self._closing:
            raise ModelNotReadyError(f"model {self.name!r} is shutting down; retry on another replica")
        costs = [self._text_cost(text) for text in texts]
        run_ends = [run.until for run in self._runs.values()]
        admit(self._queue, self.run_cost, self._returns, self.limits, run_ends, self._calls_in_flight, costs, deadline)
        call: QueuedCall[Row] = QueuedCall(texts, costs, deadline, record)
        call.future = asyncio.get_running_loop().create_future()
        predicted = estimate_wait(self._queue, self.run_cost, self.limits, run_ends, costs, call.enqueued, False)
        call.predicted_wait = predicted.total if predicted is not None else None
        self._queue.add(call)
        self._calls_in_flight += 1
        self._schedule()
        try:
            result: BatchOutput[Row] = await call.future
            return result
        finally:
            self._calls_in_flight -= 1
            if call in self._queue.calls:  # the caller went away (cancelled) while texts were still queued
                self._queue.remove(call)

    # --- scheduling: the one place runs start --------------------------------------------------------------------

    def _schedule(self) -> None:
        """Start every run that should start now: main runs while a free slot may take one (after the batch delay,
        if any), then an express run of short calls beside a long run. Called whenever that may have changed: a call
        was queued, a run ended, the batch delay expired, the batcher is closing."""
        while may_start_run(self._queue, [(run.rows, run.width) for run in self._runs.values()], self.limits):
            if self._waiting_for_more():
                break
            now = time.monotonic()
            formed = self._queue.take_batch(
                self.limits,
                now,
                self._optimistic_run_seconds,
                self._calibrated_run_seconds,
                self._current_pin(),
                [call for run in self._runs.values() for call in run.calls],
            )
            for call, error in formed.refused:
                self._fail(call, error)
            if formed.parts:
                self._start_run(formed.parts)
            elif all(call.waits_for_its_version for call in self._queue.calls):
                break  # what is left waits for a run in progress to answer
        self._start_express()

    def _optimistic_run_seconds(self, rows: int, width: int) -> float | None:
        """A run's estimated duration read optimistically: a call is dropped as hopeless only on evidence."""
        seconds = self.run_cost.run_seconds(rows, width)
        return None if seconds is None else seconds / ESTIMATE_TOLERANCE

    def _calibrated_run_seconds(self, rows: int, width: int) -> float | None:
        """A run's estimated duration once the warm-up calibrated the cost model (None before): runs are bounded in
        time (`max_run_ms`) only on that evidence, not on a rate learned from whatever ran first."""
        return self.run_cost.run_seconds(rows, width) if self.run_cost.calibrated else None

    def _waiting_for_more(self) -> bool:
        """With a batch delay, whether the next run should wait for more calls: until `max_batch_size` texts are
        queued or the oldest queued call has waited `max_batch_delay_ms` (a timer schedules again then)."""
        delay = self.limits.max_batch_delay_ms / 1000
        if delay <= 0 or self._closing or self._queue.queued_texts >= self.limits.max_batch_size:
            return False
        due = min(call.enqueued for call in self._queue.calls) + delay
        if time.monotonic() >= due:
            return False
        if self._delay_timer is None or self._delay_timer.when() > due:
            if self._delay_timer is not None:
                self._delay_timer.cancel()
            self._delay_timer = asyncio.get_running_loop().call_at(due, self._delay_expired)
        return True

    def _delay_expired(self) -> None:
        self._delay_timer = None
        self._schedule()

    def _start_run(self, parts: list[RunPart[Row]]) -> None:
        """Start a main run of `parts` in a slot; when it ends, the slot is freed and runs are scheduled again."""
        rows, width = run_shape(parts)
        estimate = self.run_cost.run_seconds(rows, width)
        until = time.monotonic() + estimate if estimate is not None else None
        ended = asyncio.get_running_loop().create_future()
        self._runs[ended] = _RunInProgress(rows, width, until, tuple(part.call for part in parts))
        asyncio.get_running_loop().call_soon(self._launch, parts, ended, True)

    def _start_express(self) -> None:
        """Start an express run of whole short calls (or a medium call, beside bulk calls only) if a long run is in
        progress and no express run is."""
        runs = self._runs.values()
        if self._express is not None or self._closing or not any(keeps_cores_busy(r.rows, r.width) for r in runs):
            return
        # A medium call goes beside runs of bulk calls that were not cut (formed while their call was alone).
        bulk = [sum(call.costs) for run in runs if run.tokens >= EXPRESS_AFTER_TOKENS for call in run.calls]
        budget = express_budget(min(bulk, default=0))
        parts = self._queue.take_express(self.limits, time.monotonic(), budget)
        if parts:
            self._express = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._launch, parts, self._express, False)

    # --- one run ---------------------------------------------------------------------------------------------------

    def _launch(self, parts: list[RunPart[Row]], ended: asyncio.Future[None], main: bool) -> None:
        """Hand the run of `parts` to an executor thread. The thread hands its outcome back to the loop in one
        callback (`_finish_run`), which answers the calls: no task and no asyncio future wrapping the executor's, so a
        call on an idle model takes fewer turns of the loop (each turn costs it a poll and callbacks).

        Called through `call_soon`, not from `_schedule` directly, as the task it replaces started: the run's thread
        then wakes once the loop has done the rest of this turn's work, not while the loop still holds the GIL and a
        core for it (BENCHMARKS.md, "Where one call's time goes")."""
        texts = [part.call.texts[i] for part in parts for i in range(part.start, part.end)]
        pin = run_pin(parts)
        loop = asyncio.get_running_loop()
        rows, width = run_shape(parts)
        estimate = self.run_cost.run_seconds(rows, width)
        run = _LaunchedRun(parts, texts, ended, main, rows, width, estimate, time.monotonic())

        def run_on_thread() -> None:
            output: BatchOutput[Row] | None = None
            error: BaseException | None = None
            try:
                output = self._run_batch(texts, pin)
            except BaseException as exc:  # handed to the loop: exactly the calls of this run fail with it
                error = exc
            try:
                loop.call_soon_threadsafe(self._finish_run, run, output, error)
            except RuntimeError:  # the event loop closed meanwhile: nobody is left to answer
                log.debug("model %s: a run ended after the event loop closed", self.name)

        try:
            self._executor.submit(run_on_thread)
        except RuntimeError as exc:  # the executor was shut down: fail the calls on the loop's next turn
            loop.call_soon(self._finish_run, run, None, exc)

    def _finish_run(self, run: _LaunchedRun[Row], output: BatchOutput[Row] | None, error: BaseException | None) -> None:
        """On the loop: answer the calls a run completed (or fail exactly its calls), free its slot, schedule."""
        try:
            self._answer(run, time.monotonic() - run.started, output, error)
        finally:
            if run.main:
                self._runs.pop(run.ended, None)
            elif self._express is run.ended:
                self._express = None
            if not run.ended.done():
                run.ended.set_result(None)
            # On the loop's next turn, as a task's done callback would: the calls answered here resume first, and the
            # next run is formed from what queued meanwhile.
            asyncio.get_running_loop().call_soon(self._schedule)

    def _answer(
        self, run: _LaunchedRun[Row], seconds: float, output: BatchOutput[Row] | None, error: BaseException | None
    ) -> None:
        """Answer the calls that a run's output completes; a main run also updates the run cost."""
        parts, texts, rows, width = run.parts, run.texts, run.rows, run.width
        try:
            if error is not None or output is None:
                raise error or RuntimeError("run_batch returned nothing")
            if len(output.rows) != len(texts):
                raise RuntimeError(f"run_batch returned {len(output.rows)} rows for {len(texts)} texts")
            if self._on_run is not None:
                report = RunReport(rows, width, run.estimated_s, seconds)
                self._on_run(self.name, [(part.call.record, part.call.enqueued) for part in parts], output, report)
        except Exception as exc:  # fail exactly the callers of this run; the next run goes ahead normally
            log.warning("model %s: a run of %d texts from %d calls failed: %r", self.name, len(texts), len(parts), exc)
            for part in parts:
                self._fail(part.call, exc)
            return
        except BaseException as exc:  # SystemExit or the like raised in the run's thread: its calls must not wait
            # forever, and raising it here, in a loop callback, would stop the whole server for one run.
            log.error("model %s: a run of %d texts ended with %r", self.name, len(texts), exc)
            for part in parts:
                self._fail(part.call, ModelNotReadyError(f"model {self.name!r} could not run these texts"))
            return
        if run.main:
            self.run_cost.observe(rows * width, seconds, rows, width)
        offset = 0
        for part in parts:
            call, count = part.call, part.end - part.start
            call.rows[part.start : part.end] = output.rows[offset : offset + count]
            offset += count
            call.answered += count
            call.pin, call.version = output.pin, output.version
            if call.answered == len(call.texts) and not call.finished:
                if call.predicted_wait is not None:
                    self.run_cost.observe_wait(call.predicted_wait, time.monotonic() - call.enqueued)
                answer = BatchOutput(call.version, list(call.rows), call.pin, output.stages)
                call.future.set_result(answer)

    def _fail(self, call: QueuedCall[Row], exc: BaseException | OrtServeError) -> None:
        if call in self._queue.calls:
            self._queue.remove(call)
        if not call.finished:
            call.future.set_exception(exc)
