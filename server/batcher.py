"""Adaptive batching with a token budget: the queued Classify calls of one model are merged into model runs.

An idle model runs a call at once; calls that arrive while the model's runs are busy wait and form the next run. A
model runs up to `concurrent_runs` runs at once, each on its own executor thread, so that the cores stay busy while
one run's answers are returned and the next run is formed; a second run starts once a share of a batch is queued.
Runs are formed from texts, not whole calls: each run takes up to `max_batch_size` texts and `max_batch_tokens` padded
tokens from the queued calls, the least served call first (as text-embeddings-inference forms batches by a token
budget). So a bulk call's texts spread over several runs while a short call that arrives meanwhile joins the next
run, and waits for at most the runs in progress; while those are long ones, short calls run beside them at once (the
express lane). A call is still answered whole, once all its texts have run, and by one model version.

Admission is by cost: every text is given an estimated token count before it is tokenized (`TextCost`), the queue is
bounded in estimated tokens, texts and calls, and a call whose deadline cannot be met given the work queued ahead of it
(at the measured run cost) is refused before it runs. What is refused is refused at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import DeadlineExceededError, ModelNotReadyError, OverloadedError
from .observability.call_context import CallRecord, current_call, observe_batch

log = logging.getLogger(__name__)

#: What one run returns per text (label scores, a probability row, ...).
Row = TypeVar("Row")

#: A call is admitted only if its estimated wait is at most this share of the time left before its deadline. An
#: estimate is an average: admitting calls whose estimate just fits lets about half of them miss their deadline after
#: queueing, which wastes model time under overload. The margin keeps the queue about as deep as full runs need.
DEADLINE_MARGIN = 0.6

#: While a long run is in progress (at least `EXPRESS_AFTER_TOKENS` padded tokens; no other main run starts beside
#: it), whole calls that fit in `EXPRESS_RUN_TOKENS` may run beside it, on one more thread: a short call then waits
#: for neither the long run nor the calls ahead of it. Runs of short calls (under uniform load, every run) never have
#: an express run beside them, so this costs nothing in throughput where batching matters; beside a long run, a small
#: one takes a few percent of the CPU.
EXPRESS_RUN_TOKENS = 256
EXPRESS_AFTER_TOKENS = 2048

#: Two texts whose estimated token counts differ by more than this factor are not put in one run: padding the short
#: one to the long one would cost more than a run of its own, and a short call must not wait behind long texts.
LENGTH_SPREAD = 4


@dataclass(frozen=True)
class BatchLimits:
    """Bounds of the batcher of one model: how runs are formed, and what the queue admits."""

    max_batch_size: int = 32
    """Most texts in one run."""
    max_batch_tokens: int = 8192
    """Most padded tokens (texts × the longest text, estimated before tokenizing) in one run; 0 for no bound. A
    single text over the bound still runs, alone."""
    max_batch_delay_ms: float = 0.0
    """How long a batch may wait for more calls before it runs; 0 runs as soon as the model is free. The wait
    ends early once `max_batch_size` texts are queued."""
    max_queue_texts: int = 2048
    """Most texts waiting for the model; calls beyond it fail fast with RESOURCE_EXHAUSTED. A call that finds the
    queue empty is always admitted, so one large call is never refused for good."""
    max_queue_tokens: int = 262_144
    """Most estimated tokens waiting for the model (two of the largest calls: 256 texts of 512 tokens); beyond it
    calls fail fast with RESOURCE_EXHAUSTED. 0 for no bound. Like `max_queue_texts`, it never refuses a call at an
    empty queue."""
    max_calls_in_flight: int = 512
    """Most calls admitted and not yet answered (queued or running); beyond it calls fail fast with
    RESOURCE_EXHAUSTED, so a flood of callers costs a refusal each instead of memory and event-loop time."""
    concurrent_runs: int = 1
    """Most runs of the model at once, each on its own executor thread (the executor needs that many threads, plus
    one for the express lane). An idle model starts a run for any text; beside short runs in progress a free slot
    waits for `max_batch_size // concurrent_runs` queued texts; beside a long run it stays free (see
    `_may_start_run`)."""

    def __post_init__(self) -> None:
        if self.concurrent_runs < 1:
            raise ValueError(f"concurrent_runs must be at least 1, got {self.concurrent_runs}")


@dataclass(frozen=True)
class BatchOutput(Generic[Row]):
    """What a batch run gives back: one row per text of the batch, the version that produced them, and `pin`, an
    opaque handle of that version: the later runs of the same call pass it back to `run_batch`, so a call whose texts
    span several runs is answered by one version even if a new one is swapped in meanwhile."""

    version: str
    rows: Sequence[Row]
    pin: object = None


#: Runs the texts of one batch (from an executor thread) on the version `pin` (None: the current one) and returns one
#: row per text, in order.
RunBatch = Callable[[list[str], object], BatchOutput[Row]]

#: Estimated token count of one text, computed on the event loop before the text is tokenized: it must be cheap.
TextCost = Callable[[str], int]


def _estimate_tokens_by_length(text: str) -> int:
    return len(text) // 4 + 2


class RunCost:
    """The measured cost of model runs: seconds per padded token, a moving average over recent runs.

    Runs under load are full and dominate the average, which is what deadline estimates under load need; an idle
    model's small runs cost more per token, which only makes the estimates more cautious.
    """

    def __init__(self, weight: float = 0.2):
        self.seconds_per_token: float | None = None
        self.wait_factor = 1.0
        """Observed over predicted waits of recent calls: what the run cost alone misses (the event loop's own work
        between runs, CPU taken by the gRPC stack under load), so that deadline estimates correct themselves."""
        self._weight = weight

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens <= 0:
            return
        rate = seconds / tokens
        if self.seconds_per_token is None:
            self.seconds_per_token = rate
        else:
            self.seconds_per_token += self._weight * (rate - self.seconds_per_token)

    def observe_wait(self, predicted: float, observed: float) -> None:
        if predicted > 0.001:
            ratio = min(10.0, max(0.5, observed / predicted))
            self.wait_factor += self._weight * (ratio - self.wait_factor)

    def seconds(self, tokens: int) -> float | None:
        """Estimated seconds of `tokens` padded tokens of work, or None before the first run was measured."""
        return None if self.seconds_per_token is None else tokens * self.seconds_per_token


_sequence = itertools.count()


@dataclass(eq=False)
class _Call(Generic[Row]):
    texts: Sequence[str]
    costs: list[int]
    deadline: float | None
    future: asyncio.Future[BatchOutput[Row]]
    enqueued: float = field(default_factory=time.monotonic)
    record: CallRecord | None = field(default_factory=current_call)  # observability: the submitting call, if any
    seq: int = field(default_factory=lambda: next(_sequence))
    taken: int = 0
    """Texts [0, taken) have been put into runs; [taken, len) are queued."""
    answered: int = 0
    """Texts whose rows are in; texts [answered, taken) are in runs still in progress (possibly several at once)."""
    attained: int = 0
    """Estimated tokens of this call put into runs so far: the least served call goes first."""
    pin: object = None
    version: str = ""
    rows: list[Row | None] = field(default_factory=list)
    predicted_wait: float | None = None

    @property
    def queued_tokens(self) -> int:
        return sum(self.costs[self.taken :])

    @property
    def waits_for_its_version(self) -> bool:
        """Texts of this call are in a run in progress and no run has answered yet, so which version the call is
        answered by is not known: its next texts must wait for that run, or a swap in between would split it."""
        return self.pin is None and self.taken > self.answered


@dataclass
class _Part(Generic[Row]):
    call: _Call[Row]
    start: int
    end: int


class AdaptiveBatcher(Generic[Row]):
    """Forms runs from the texts of concurrent `submit` calls and runs them with `run_batch` on `executor`, up to
    `limits.concurrent_runs` runs at a time.

    `run_batch(texts, pin)` is called from an executor thread (tokenization and ONNX Runtime release the GIL), never
    from the event loop; it returns one row per text. If it raises, exactly the calls with texts in that run fail with
    that exception. Deadlines are absolute `time.monotonic()` values: a call that cannot meet its deadline is refused
    at admission or dropped before its next run. `limits` are enforced here, where runs are formed; `run_batch` gets
    runs that already respect them.
    """

    def __init__(
        self,
        name: str,
        run_batch: RunBatch[Row],
        executor: Executor,
        limits: BatchLimits | None = None,
        text_cost: TextCost = _estimate_tokens_by_length,
    ):
        self.name = name
        self.limits = limits or BatchLimits()
        self.run_cost = RunCost()
        self._run_batch = run_batch
        self._executor = executor
        self._text_cost = text_cost
        self._queue: list[_Call[Row]] = []
        self._queued_texts = 0
        self._queued_tokens = 0
        self._calls_in_flight = 0
        self._runs: dict[asyncio.Task[None], _RunInProgress] = {}
        """Main runs in progress, with their estimated end and size."""
        self._express: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_texts(self) -> int:
        """Texts waiting for the model (not counting the run in progress)."""
        return self._queued_texts

    @property
    def queued_tokens(self) -> int:
        """Estimated tokens waiting for the model (not counting the run in progress)."""
        return self._queued_tokens

    @property
    def calls_in_flight(self) -> int:
        """Calls admitted and not yet answered."""
        return self._calls_in_flight

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
        if self._express is not None:
            await self._express

    @property
    def _slots_full(self) -> bool:
        return len(self._runs) >= self.limits.concurrent_runs

    @property
    def _long_run_in_progress(self) -> bool:
        return any(run.tokens >= EXPRESS_AFTER_TOKENS for run in self._runs.values())

    def _may_start_run(self) -> bool:
        """Whether a free slot should take a run now: always when no run is in progress; beside short runs once a
        share of a full batch is queued (`max_batch_size` / `concurrent_runs` texts); never beside a long run.

        Starting a run for every text that arrives would split closed-loop callers into runs of one text each,
        beside one large run, which costs more per text than it gains. A long run already keeps every core busy
        (its products are large enough for the intra-op threads): a second one beside it gains nothing, and would
        make a short call that arrives meanwhile share the cores with two long runs (it goes by the express lane)."""
        if not self._queue or self._slots_full:
            return False
        if not self._runs:
            return True
        if self._long_run_in_progress:
            return False
        return self._queued_texts >= max(1, self.limits.max_batch_size // self.limits.concurrent_runs)

    async def submit(self, texts: Sequence[str], deadline: float | None = None) -> BatchOutput[Row]:
        """Queue `texts` and wait for their rows, all from one model version.

        Raises `OverloadedError` at once if the queue or the calls in flight are at their bounds,
        `DeadlineExceededError` at once if the work queued ahead cannot finish before `deadline`, or later if the
        deadline passes before the texts run, and whatever `run_batch` raised if one of their runs failed.
        """
        if self._closing:
            raise ModelNotReadyError(f"model {self.name!r} is shutting down; retry on another replica")
        self.start()
        assert self._wakeup is not None
        costs = [self._text_cost(text) for text in texts]
        self._admit(len(texts), sum(costs), deadline)
        call: _Call[Row] = _Call(texts, costs, deadline, asyncio.get_running_loop().create_future())
        call.rows = [None] * len(texts)
        call.predicted_wait = self._estimated_wait(sum(costs), call.enqueued, calibrated=False)
        self._queue.append(call)
        self._queued_texts += len(texts)
        self._queued_tokens += sum(costs)
        self._calls_in_flight += 1
        if self.limits.max_batch_delay_ms <= 0 and self._may_start_run():
            # A free slot and nothing to wait for: start the run from here, one event-loop hop sooner than the worker.
            parts = self._take_batch()
            if parts:
                self._start_run(parts)
        if self._queue:
            self._wakeup.set()  # the worker forms the runs of whatever is still queued
        self._start_express()
        try:
            return await call.future
        finally:
            self._calls_in_flight -= 1
            if call in self._queue:  # the caller went away (cancelled) while texts were still queued
                self._dequeue(call)

    def _admit(self, texts: int, tokens: int, deadline: float | None) -> None:
        limits = self.limits
        if self._calls_in_flight >= limits.max_calls_in_flight:
            raise OverloadedError(
                f"model {self.name!r} has {self._calls_in_flight} calls in flight (limit max_calls_in_flight="
                f"{limits.max_calls_in_flight}); retry later"
            )
        if self._queue and self._queued_texts + texts > limits.max_queue_texts:
            raise OverloadedError(
                f"model {self.name!r} has {self._queued_texts} texts queued (limit max_queue_texts="
                f"{limits.max_queue_texts}); retry later"
            )
        if self._queue and limits.max_queue_tokens and self._queued_tokens + tokens > limits.max_queue_tokens:
            raise OverloadedError(
                f"model {self.name!r} has about {self._queued_tokens} tokens queued (limit max_queue_tokens="
                f"{limits.max_queue_tokens}); retry later"
            )
        if deadline is None:
            return
        now = time.monotonic()
        wait = self._estimated_wait(tokens, now)
        if wait is not None and wait > DEADLINE_MARGIN * (deadline - now):
            raise DeadlineExceededError(
                f"model {self.name!r} cannot finish this call before its deadline (about {wait * 1000:.0f} ms of "
                f"work ahead and in it, {max(0.0, deadline - now) * 1000:.0f} ms left); the texts were not run "
                "(raise the timeout, send fewer texts, or add capacity)"
            )

    def _estimated_wait(self, tokens: int, now: float, calibrated: bool = True) -> float | None:
        """Seconds until a new call of `tokens` estimated tokens would be answered, or None if not known yet.

        Runs serve the least served call first, so a new call waits for at most its own size of each queued call's
        work (and for the run in progress), not for whole bulk calls.
        """
        ahead = sum(min(call.queued_tokens, tokens) for call in self._queue)
        work = self.run_cost.seconds(tokens + ahead)
        if work is None:
            return None
        work /= self.limits.concurrent_runs  # the runs share the work (each run's cost is measured while sharing)
        # With every slot taken, the first run to end frees one; a run of unknown length counts as ending now.
        ends = [run.until for run in self._runs.values() if run.until is not None]
        running = max(0.0, min(ends) - now) if self._slots_full and ends else 0.0
        return (work + running) * (self.run_cost.wait_factor if calibrated else 1.0)

    def _dequeue(self, call: _Call[Row]) -> None:
        self._queue.remove(call)
        self._queued_texts -= len(call.texts) - call.taken
        self._queued_tokens -= call.queued_tokens

    async def _work(self) -> None:
        assert self._wakeup is not None
        try:
            while True:
                if self._may_start_run():
                    await self._wait_for_more()
                    parts = self._take_batch()
                    if parts:
                        self._start_run(parts)
                        continue
                    if any(not call.waits_for_its_version for call in self._queue):
                        continue  # the run's calls were all past their deadline and failed: form another
                if self._closing and not self._queue and not self._runs:
                    return
                # Woken by a new call, a run that ended (a free slot, or a pinned call), or close().
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            # Only reached early if the worker is cancelled (event loop shutdown): nobody may wait forever.
            for task in list(self._runs):
                task.cancel()  # a cancelled run fails its own calls
            stranded = list(self._queue)
            self._queue.clear()
            self._queued_texts = self._queued_tokens = 0
            for call in stranded:
                if not call.future.done():
                    call.future.set_exception(ModelNotReadyError(f"model {self.name!r} stopped serving"))

    def _start_run(self, parts: list[_Part[Row]]) -> None:
        """Start a main run of `parts` in a slot; when it ends, the slot is freed and the worker woken."""
        tokens = _padded_tokens(parts)
        estimate = self.run_cost.seconds(tokens)
        started = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._run(parts, main=True))
        self._runs[task] = _RunInProgress(tokens, started + estimate if estimate is not None else None)
        task.add_done_callback(self._run_done)
        self._start_express()

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self._runs.pop(task, None)
        if self._wakeup is not None:
            self._wakeup.set()

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

    def _start_express(self) -> None:
        """Start an express run of whole short calls if a long run is in progress and no express run is."""
        if self._express is not None or self._closing or not self._long_run_in_progress:
            return
        parts = self._take_express()
        if parts:
            self._express = asyncio.get_running_loop().create_task(self._run(parts, main=False))
            self._express.add_done_callback(self._express_done)

    def _express_done(self, task: asyncio.Task[None]) -> None:
        self._express = None
        self._start_express()

    def _take_express(self) -> list[_Part[Row]]:
        """Whole calls not yet started that fit together in `EXPRESS_RUN_TOKENS`, least served first."""
        now = time.monotonic()
        parts: list[_Part[Row]] = []
        rows = width = 0
        for call in sorted(self._queue, key=lambda c: (c.attained, c.seq)):
            if call.taken or call.future.done():
                continue
            if call.deadline is not None and call.deadline <= now:
                continue  # the main loop fails it with its message
            more, wider = rows + len(call.texts), max([width, *call.costs])
            if more > self.limits.max_batch_size or more * wider > EXPRESS_RUN_TOKENS:
                continue
            rows, width = more, wider
            parts.append(_Part(call, 0, len(call.texts)))
        for part in parts:
            call = part.call
            self._dequeue(call)
            call.taken = len(call.texts)
            call.attained += sum(call.costs)
        return parts

    async def _run(self, parts: list[_Part[Row]], main: bool) -> None:
        """Run `parts`; a main run also updates the run cost."""
        texts = [part.call.texts[i] for part in parts for i in range(part.start, part.end)]
        tokens = _padded_tokens(parts)
        pin = parts[0].call.pin
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            output = await loop.run_in_executor(self._executor, self._run_batch, texts, pin)
            if len(output.rows) != len(texts):
                raise RuntimeError(f"run_batch returned {len(output.rows)} rows for {len(texts)} texts")
            observe_batch(self.name, [part.call for part in parts], output)  # observability: stages, batch metrics
        except Exception as exc:  # fail exactly the callers of this run; the next run goes ahead normally
            log.warning("model %s: a run of %d texts from %d calls failed: %r", self.name, len(texts), len(parts), exc)
            for part in parts:
                self._fail(part.call, exc)
            return
        except asyncio.CancelledError:  # the event loop is shutting down: nobody may wait forever
            for part in parts:
                self._fail(part.call, ModelNotReadyError(f"model {self.name!r} stopped serving"))
            raise
        if main:
            self.run_cost.observe(tokens, time.monotonic() - started)
        offset = 0
        for part in parts:
            call, count = part.call, part.end - part.start
            call.rows[part.start : part.end] = output.rows[offset : offset + count]
            offset += count
            call.answered += count
            call.pin, call.version = output.pin, output.version
            if call.answered == len(call.texts) and not call.future.done():
                if call.predicted_wait is not None:
                    self.run_cost.observe_wait(call.predicted_wait, time.monotonic() - call.enqueued)
                call.future.set_result(BatchOutput(call.version, list(call.rows), call.pin))  # type: ignore[arg-type]

    def _fail(self, call: _Call[Row], exc: BaseException) -> None:
        if call in self._queue:
            self._dequeue(call)
        if not call.future.done():
            call.future.set_exception(exc)

    def _take_batch(self) -> list[_Part[Row]]:
        """Take the texts of one run from the queue: the least served call first, then others, within the limits.

        A run holds texts of similar estimated length only (`LENGTH_SPREAD`), and of calls pinned to the same version
        (or not pinned yet). The first text always runs, even if it alone exceeds `max_batch_tokens`.
        """
        now = time.monotonic()
        for call in list(self._queue):
            if call.future.done():  # the caller went away (cancelled): nothing to compute
                self._dequeue(call)
            elif call.deadline is not None and call.deadline <= now:
                waited_ms = (now - call.enqueued) * 1000
                self._fail(
                    call,
                    DeadlineExceededError(
                        f"the deadline passed after {waited_ms:.0f} ms waiting for model {self.name!r}; "
                        "the texts were not run (raise the timeout or add capacity)"
                    ),
                )
        limits = self.limits
        parts: list[_Part[Row]] = []
        rows = width = 0
        pin: object = None
        for call in sorted(self._queue, key=lambda c: (c.attained, c.seq)):
            if (parts and call.pin is not pin) or call.waits_for_its_version:
                continue
            end = call.taken
            while end < len(call.texts) and (not limits.max_batch_size or rows < limits.max_batch_size):
                cost = call.costs[end]
                if rows:
                    wider = max(width, cost)
                    if limits.max_batch_tokens and (rows + 1) * wider > limits.max_batch_tokens:
                        break
                    if wider > LENGTH_SPREAD * max(1, min(width, cost)):
                        break
                rows, width = rows + 1, max(width, cost)
                end += 1
            if end > call.taken:
                if not parts:
                    pin = call.pin
                parts.append(_Part(call, call.taken, end))
                taken_tokens = sum(call.costs[call.taken : end])
                call.attained += taken_tokens
                self._queued_texts -= end - call.taken
                self._queued_tokens -= taken_tokens
                call.taken = end
                if end == len(call.texts):
                    self._queue.remove(call)
            if limits.max_batch_size and rows >= limits.max_batch_size:
                break
        return self._drop_hopeless(parts, rows * width, now)

    def _drop_hopeless(self, parts: list[_Part[Row]], tokens: int, now: float) -> list[_Part[Row]]:
        """Fail the calls of `parts` whose deadline passes before this run would end: running them only wastes the
        model on answers nobody reads, while live calls wait (the overload collapse this batcher is built to avoid)."""
        duration = self.run_cost.seconds(tokens)
        if duration is None:
            return parts
        kept = []
        for part in parts:
            call = part.call
            if call.deadline is not None and call.deadline < now + duration:
                self._fail(
                    call,
                    DeadlineExceededError(
                        f"model {self.name!r} cannot finish this call before its deadline (its next run takes about "
                        f"{duration * 1000:.0f} ms, {max(0.0, call.deadline - now) * 1000:.0f} ms left); "
                        "the texts were not run (raise the timeout or add capacity)"
                    ),
                )
            else:
                kept.append(part)
        return kept


@dataclass(frozen=True)
class _RunInProgress:
    tokens: int
    """Padded tokens of the run (estimated)."""
    until: float | None
    """When it should end (`time.monotonic()`), from the measured run cost; None before the first run."""


def _padded_tokens(parts: Sequence[_Part[Row]]) -> int:
    """Estimated padded tokens of a run of `parts`: texts × the longest text's estimate."""
    texts = sum(part.end - part.start for part in parts)
    return texts * max(part.call.costs[i] for part in parts for i in range(part.start, part.end))
