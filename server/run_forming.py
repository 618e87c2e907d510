"""Run forming: which queued texts go into the next model run. Pure code over a `RunQueue`: no asyncio, no clock of
its own (the caller passes `now`), no model; tests drive it directly, as text-embeddings-inference tests its
next-batch step.

A run takes up to `max_batch_size` texts and `max_batch_tokens` padded tokens from the queued calls, and, while
other calls share the model, wide texts for at most `max_run_ms` of estimated run time (so that a call that arrives
beside bulk work waits for a short run, not a whole token budget, and leads the next one: bulk work yields between
runs); the least served call first, texts of similar length only (`LENGTH_SPREAD`), and texts of calls answered by
one model version only. A call whose deadline passed, or passes before the run would end, is refused while forming
(`FormedRun.refused`): running it would only spend the model on an answer nobody reads. Beside a long run, whole short
calls (or a medium call, beside bulk calls) may form an express run.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .batch_limits import BatchLimits
from .errors import DeadlineExceededError
from .stage_timings import BatchStages

if TYPE_CHECKING:
    from .observability.call_context import CallRecord

#: What one run returns per text (label scores, a probability row, ...).
Row = TypeVar("Row")

#: Two texts whose estimated token counts differ by more than this factor are not put in one run: padding the short
#: one to the long one would cost more than a run of its own, and a short call must not wait behind long texts.
LENGTH_SPREAD = 4

#: While a long run is in progress (`keeps_cores_busy`: at least `EXPRESS_AFTER_TOKENS` padded tokens, or texts of
#: `WIDE_TEXT_TOKENS`; no other main run starts beside it), whole calls that fit in `EXPRESS_RUN_TOKENS` may run
#: beside it, on one more thread: a short call then waits for neither the long run nor the calls ahead of it. Runs of
#: short calls (under uniform load, every run) never have an express run beside them, so this costs nothing in
#: throughput where batching matters; beside a long run, a small one takes a few percent of the CPU.
EXPRESS_RUN_TOKENS = 256
EXPRESS_AFTER_TOKENS = 2048

#: Beside runs of `EXPRESS_AFTER_TOKENS` of bulk calls only (runs not cut in time: formed while their call was alone),
#: the express lane also takes a whole medium call: one of at most
#: `MEDIUM_CALL_TOKENS` estimated tokens and a `LENGTH_SPREAD`-th of the smallest call in those runs (a ~300-token
#: text beside calls of 16 texts of 512 tokens). It would otherwise wait for the whole long run in progress, or, run
#: after it, for texts of the bulk calls padded into its own run; beside it, it takes a share of the cores for the
#: tens of milliseconds it needs, while the bulk runs keep their full size (and their efficiency). A run led by such a
#: small call takes no texts of bulk calls (`BULK_CALL_TOKENS` queued or more): they form the next run (unless the
#: run before kept them out already: a stream of small calls does not starve them).
MEDIUM_CALL_TOKENS = 1024
BULK_CALL_TOKENS = LENGTH_SPREAD * MEDIUM_CALL_TOKENS

#: Texts at least this wide (estimated tokens) cost about the same per text in a run of one as in a full one (minilm,
#: 512 tokens: 46-55 ms a text for runs of 1 to 16 texts), so runs of them are bounded in time (`max_run_ms`) at no
#: loss; runs of shorter texts gain from size (a fixed cost per run), and are not bounded.
WIDE_TEXT_TOKENS = 256


@dataclass(frozen=True)
class BatchOutput(Generic[Row]):
    """What a run gives back: one row per text of the run, the version that produced them, `pin`, an opaque handle of
    that version (the later runs of the same call pass it back to `run_batch`, so a call whose texts span several runs
    is answered by one version even if a new one is swapped in meanwhile), and the run's stage timings, if measured."""

    version: str
    rows: Sequence[Row]
    pin: object = None
    stages: BatchStages | None = None


_sequence = itertools.count()


@dataclass(eq=False)
class QueuedCall(Generic[Row]):
    """One submitted call: its texts, their estimated costs, and how far it has been served."""

    texts: Sequence[str]
    costs: list[int]
    deadline: float | None
    """Absolute `time.monotonic()` deadline, or None."""
    record: CallRecord | None = None
    """The call's observability record, if the server observes calls."""
    enqueued: float = field(default_factory=time.monotonic)
    seq: int = field(default_factory=lambda: next(_sequence))
    future: Any = None
    """The scheduler's waiter of the call (an `asyncio.Future`); None where forming is tested alone."""
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

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows = [None] * len(self.texts)

    @property
    def finished(self) -> bool:
        """Answered, failed, or abandoned by its caller: nothing more to compute for it."""
        return self.future is not None and self.future.done()

    @property
    def queued_tokens(self) -> int:
        return sum(self.costs[self.taken :])

    @property
    def waits_for_its_version(self) -> bool:
        """Texts of this call are in a run in progress and no run has answered yet, so which version the call is
        answered by is not known: its next texts must wait for that run, or a swap in between would split it."""
        return self.pin is None and self.taken > self.answered


@dataclass
class RunPart(Generic[Row]):
    """Texts [start, end) of `call`, in one run."""

    call: QueuedCall[Row]
    start: int
    end: int


@dataclass
class FormedRun(Generic[Row]):
    """The next run (`parts`, maybe empty) and the calls refused while forming it, with the error each gets."""

    parts: list[RunPart[Row]]
    refused: list[tuple[QueuedCall[Row], DeadlineExceededError]] = field(default_factory=list)


def run_shape(parts: Sequence[RunPart[Any]]) -> tuple[int, int]:
    """(rows, width) of a run of `parts`: its texts, and the longest text's estimated tokens (all are padded to it)."""
    rows = sum(part.end - part.start for part in parts)
    return rows, max(part.call.costs[i] for part in parts for i in range(part.start, part.end))


def run_pin(parts: Sequence[RunPart[Any]]) -> object:
    """The version a run of `parts` takes: that of its pinned calls (all share one), or None (the current version)
    if none is pinned yet."""
    return next((part.call.pin for part in parts if part.call.pin is not None), None)


def padded_tokens(parts: Sequence[RunPart[Any]]) -> int:
    """Estimated padded tokens of a run of `parts`: texts × the longest text's estimate."""
    rows, width = run_shape(parts)
    return rows * width


def keeps_cores_busy(rows: int, width: int) -> bool:
    """Whether a run of `rows` texts padded to `width` tokens is long: `EXPRESS_AFTER_TOKENS` padded tokens, or texts
    of `WIDE_TEXT_TOKENS` (its products are then large enough for every intra-op thread)."""
    return rows * width >= EXPRESS_AFTER_TOKENS or width >= WIDE_TEXT_TOKENS


def may_start_run(queue: RunQueue[Any], runs_in_progress: Sequence[tuple[int, int]], limits: BatchLimits) -> bool:
    """Whether a free slot should take a run now, given the (rows, width) of the main runs in progress: always when
    none is in progress; beside short runs once a share of a full batch is queued (`max_batch_size` /
    `concurrent_runs` texts); never beside a long run (`keeps_cores_busy`), nor with every slot taken.

    Starting a run for every text that arrives would split closed-loop callers into runs of one text each, beside one
    large run, which costs more per text than it gains. A long run already keeps every core busy: a second one beside
    it gains nothing, slows both (two runs of 512-token texts side by side took 80-160 ms each against 45 ms alone on
    minilm), and would make a call that arrives meanwhile wait for two long runs (a short one goes by the express
    lane; a medium one leads the next run)."""
    if not queue.calls or len(runs_in_progress) >= limits.concurrent_runs:
        return False
    if not runs_in_progress:
        return True
    if any(keeps_cores_busy(rows, width) for rows, width in runs_in_progress):
        return False
    return queue.queued_texts >= max(1, limits.max_batch_size // limits.concurrent_runs)


def express_budget(smallest_long_run_call: int) -> int:
    """Padded tokens an express run may hold beside long runs whose smallest call has `smallest_long_run_call`
    estimated tokens: `EXPRESS_RUN_TOKENS` of short calls, or beside bulk calls a medium call (`MEDIUM_CALL_TOKENS`)."""
    return max(EXPRESS_RUN_TOKENS, min(MEDIUM_CALL_TOKENS, smallest_long_run_call // LENGTH_SPREAD))


def _unknown_duration(rows: int, width: int) -> float | None:
    return None


def _work_class(tokens: int) -> int:
    """Calls of queued work within a factor of 4 of each other share a class; every short call (up to an express
    run's tokens) is in the first."""
    return max(tokens, EXPRESS_RUN_TOKENS).bit_length() // 2


def _longer_than(estimate: float | None, bound: float) -> bool:
    """Whether an estimated run time passes `bound`; an unknown one (nothing measured yet) does not."""
    return estimate is not None and estimate > bound


class RunQueue(Generic[Row]):
    """The queued calls of one model, with their queued texts and estimated tokens kept as running totals."""

    def __init__(self, model: str):
        self.model = model
        self.calls: list[QueuedCall[Row]] = []
        self.queued_texts = 0
        self.queued_tokens = 0
        self.latest_seq = -1
        """`seq` of the call queued last."""
        self._kept_bulk_out = False
        """Whether the main run formed last kept bulk calls out (it was led by a small call)."""

    def add(self, call: QueuedCall[Row]) -> None:
        self.calls.append(call)
        self.latest_seq = max(self.latest_seq, call.seq)
        self.queued_texts += len(call.texts) - call.taken
        self.queued_tokens += call.queued_tokens

    def remove(self, call: QueuedCall[Row]) -> None:
        """Take `call`'s queued texts out of the queue (its texts already in runs stay there)."""
        self.calls.remove(call)
        self.queued_texts -= len(call.texts) - call.taken
        self.queued_tokens -= call.queued_tokens

    def clear(self) -> list[QueuedCall[Row]]:
        calls, self.calls = self.calls, []
        self.queued_texts = self.queued_tokens = 0
        return calls

    def _least_served_first(self, current: object = None) -> list[QueuedCall[Row]]:
        """The calls by tokens served so far; among equals (calls not yet started), the one with much less work left
        first (by factors of 4 of its queued tokens, short calls alike), then in arrival order: a medium text that
        arrives beside a fresh bulk call goes ahead of it, not one run later. Calls pinned to a version other than
        `current` (the one fresh calls run on) go before all: they cannot share a run with fresh calls, and would
        otherwise wait for a moment when no fresh call is queued, which under load never comes."""
        return sorted(
            self.calls,
            key=lambda c: (c.pin is None or c.pin is current, c.attained, _work_class(c.queued_tokens), c.seq),
        )

    def take_batch(
        self,
        limits: BatchLimits,
        now: float,
        run_seconds: Callable[[int, int], float | None] = lambda rows, width: None,
        run_estimate: Callable[[int, int], float | None] = lambda rows, width: None,
        current: object = None,
        running: Collection[QueuedCall[Row]] = (),
    ) -> FormedRun[Row]:
        """Take the texts of one main run: the least served call first, then others, within `limits`.

        A run holds texts of similar estimated length only (`LENGTH_SPREAD`), and of calls answered by one version:
        calls pinned to the same version, with calls not pinned yet if that version is `current` (the version a run
        of unpinned calls would take now; after a swap they stay apart, so that fresh calls go to the new version).
        A run led by a call of at most `MEDIUM_CALL_TOKENS` takes no texts of calls with `BULK_CALL_TOKENS` queued,
        unless the run before kept them out: a stream of small calls leaves bulk calls every other run to fill, and
        does not starve them.
        The first text always runs, even if it alone exceeds `max_batch_tokens`. While the model is shared (another
        call is queued, came after the first call of the run, or has texts in `running`, the calls of the runs in
        progress), a run of wide texts (`WIDE_TEXT_TOKENS`) also stops where `run_estimate(rows, width)` (the
        expected seconds of a run of that shape; None while unknown) would pass `max_run_ms`: a call that arrives a
        moment later waits for a short run, not for a whole token budget, and leads the next. Calls whose caller went
        away are dropped; calls past their deadline, or whose deadline passes before the run would end
        (`run_seconds` of its rows and width, read optimistically), are refused.
        """
        refused: list[tuple[QueuedCall[Row], DeadlineExceededError]] = []
        for call in list(self.calls):
            if call.finished:  # the caller went away (cancelled): nothing to compute
                self.remove(call)
            elif call.deadline is not None and call.deadline <= now:
                self.remove(call)
                waited_ms = (now - call.enqueued) * 1000
                refused.append(
                    (
                        call,
                        DeadlineExceededError(
                            f"the deadline passed after {waited_ms:.0f} ms waiting for model {self.model!r}; "
                            "the texts were not run (raise the timeout or add capacity)"
                        ),
                    )
                )
        parts: list[RunPart[Row]] = []
        rows = width = 0
        pin: object = None
        time_bound = limits.max_run_ms / 1000
        out_of_time = False
        small_leader = bounded = kept_bulk_out = False
        for call in self._least_served_first(current):
            version = current if call.pin is None else call.pin
            if (parts and version is not pin) or call.waits_for_its_version:
                continue
            if small_leader and not self._kept_bulk_out and call.queued_tokens >= BULK_CALL_TOKENS:
                kept_bulk_out = True
                continue  # the small call waited for a bulk run: it does not wait for more bulk texts in its own
            if not parts:
                bounded = time_bound > 0 and self._shared(call, running)
            end = call.taken
            while end < len(call.texts) and (not limits.max_batch_size or rows < limits.max_batch_size):
                cost = call.costs[end]
                if rows:
                    wider = max(width, cost)
                    if limits.max_batch_tokens and (rows + 1) * wider > limits.max_batch_tokens:
                        break
                    if wider > LENGTH_SPREAD * max(1, min(width, cost)):
                        break
                    if (
                        bounded
                        and wider >= WIDE_TEXT_TOKENS
                        and _longer_than(run_estimate(rows + 1, wider), time_bound)
                    ):
                        out_of_time = True
                        break
                rows, width = rows + 1, max(width, cost)
                end += 1
            if end > call.taken:
                if not parts:
                    pin = version
                    small_leader = call.queued_tokens <= MEDIUM_CALL_TOKENS
                parts.append(RunPart(call, call.taken, end))
                taken_tokens = sum(call.costs[call.taken : end])
                call.attained += taken_tokens
                self.queued_texts -= end - call.taken
                self.queued_tokens -= taken_tokens
                call.taken = end
                if end == len(call.texts):
                    self.calls.remove(call)
            if out_of_time or (limits.max_batch_size and rows >= limits.max_batch_size):
                break
        parts.sort(key=lambda part: part.call.seq)  # chosen least served first, run in the order the calls came
        if parts:
            self._kept_bulk_out = kept_bulk_out
        kept = self._drop_hopeless(parts, run_seconds(rows, width) if parts else None, now, refused)
        return FormedRun(kept, refused)

    def _shared(self, leader: QueuedCall[Row], running: Collection[QueuedCall[Row]]) -> bool:
        """Whether a run led by `leader` shares the model: another call is queued, has texts in a run in progress
        (`running`), or came after `leader` (it may come back: a caller between two calls). A call alone is not cut
        into short runs: nobody would gain from it."""
        return (
            self.latest_seq > leader.seq
            or any(call is not leader for call in self.calls)
            or any(call is not leader for call in running)
        )

    def _drop_hopeless(
        self,
        parts: list[RunPart[Row]],
        duration: float | None,
        now: float,
        refused: list[tuple[QueuedCall[Row], DeadlineExceededError]],
    ) -> list[RunPart[Row]]:
        """The parts of calls whose deadline does not pass before this run would end (`duration` from now); the
        others are refused: running them only wastes the model on answers nobody reads, while live calls wait (the
        overload collapse the batcher is built to avoid)."""
        if duration is None:
            return parts
        kept = []
        for part in parts:
            call = part.call
            if call.deadline is not None and call.deadline < now + duration:
                if call in self.calls:
                    self.remove(call)
                refused.append(
                    (
                        call,
                        DeadlineExceededError(
                            f"model {self.model!r} cannot finish this call before its deadline (its next run takes "
                            f"about {duration * 1000:.0f} ms, {max(0.0, call.deadline - now) * 1000:.0f} ms left); "
                            "the texts were not run (raise the timeout or add capacity)"
                        ),
                    )
                )
            else:
                kept.append(part)
        return kept

    def take_express(self, limits: BatchLimits, now: float, budget: int = EXPRESS_RUN_TOKENS) -> list[RunPart[Row]]:
        """Whole calls not yet started that fit together in `budget` padded tokens (`express_budget`), least served
        first."""
        parts: list[RunPart[Row]] = []
        rows = width = 0
        for call in self._least_served_first():
            if call.taken or call.finished:
                continue
            if call.deadline is not None and call.deadline <= now:
                continue  # the next main run refuses it with its message
            more, wider = rows + len(call.texts), max([width, *call.costs])
            if more > limits.max_batch_size or more * wider > budget:
                continue
            rows, width = more, wider
            parts.append(RunPart(call, 0, len(call.texts)))
        for part in parts:
            call = part.call
            self.remove(call)
            call.taken = len(call.texts)
            call.attained += sum(call.costs)
        return parts
