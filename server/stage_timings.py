"""Stage timings of one model run (tokenization, ONNX Runtime), returned by the run with its rows: read by metrics,
trace spans and the batcher's cost model. A leaf module (standard library only), so the runtime can fill it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class MeasuredRun:
    """One run timed by a model's warm-up: `rows` texts padded to `width` tokens took `seconds`."""

    rows: int
    width: int
    seconds: float


def fastest_seconds(
    actions: Sequence[Callable[[], object]],
    repeats: int = 2,
    most: int = 8,
    agree: float = 0.15,
    cheap_s: float = 0.03,
    budget_s: float = 0.0,
    pause_s: float = 0.0,
) -> list[float]:
    """Seconds of the fastest call of each of `actions`: a call is only ever slowed down by other work on the
    machine, so the fastest is the closest to its own cost.

    The actions take turns (one pass calls each once), so that a burst of other work slows one call of an action,
    not all of them. Each is called at least `repeats` times, and again in further passes (at most `most` calls in
    all) while its two fastest calls disagree by more than `agree` (a share of the faster), or while its calls add
    up to less than `cheap_s` seconds: a quiet machine pays for `repeats` calls of the long actions, a busy one for
    as many as it takes to see an undisturbed call twice, and repeating a short action costs next to nothing. With a
    `budget_s`, no further pass starts once the calls took that long in all (the first `repeats` passes always run):
    on a machine too busy to settle, what time allows is kept. With a `pause_s`, each call follows a sleep that long
    (not timed): a call after a pause pays what a call at an idle server pays, which back-to-back calls do not.
    """
    times: list[list[float]] = [[] for _ in actions]
    pending = list(range(len(actions)))
    while pending:
        if budget_s and sum(map(sum, times)) >= budget_s and all(len(each) >= repeats for each in times):
            break
        for index in pending:
            if pause_s:
                time.sleep(pause_s)
            start = time.perf_counter()
            actions[index]()
            times[index].append(time.perf_counter() - start)
        pending = [i for i in pending if len(times[i]) < most and not _settled(times[i], repeats, agree, cheap_s)]
    return [min(each) for each in times]


def _settled(times: list[float], repeats: int, agree: float, cheap_s: float) -> bool:
    if len(times) < max(2, repeats) or sum(times) < cheap_s:
        return False
    fastest, second = sorted(times)[:2]
    return second <= fastest * (1 + agree)


#: Width bands of the per-width correction factors and of the estimate-error metric: upper bounds in tokens.
WIDTH_BANDS = (8, 16, 32, 64, 128, 256, 512, 1024)


def width_band(width: int) -> int:
    """The band of a run `width` tokens wide: the first of `WIDTH_BANDS` at least as wide (0 past the last)."""
    for band in WIDTH_BANDS:
        if width <= band:
            return band
    return 0
