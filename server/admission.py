"""Admission and cost estimation: whether a new call may join a model's queue, from its bounds and from the measured
cost of runs. What is refused is refused at once (RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED), before any work."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batch_limits import BatchLimits
from .errors import DeadlineExceededError, OverloadedError
from .run_forming import RunQueue
from .stage_timings import MeasuredRun, width_band

#: A call is admitted only if its estimated wait is at most this share of the time left before its deadline. An
#: estimate is an average: admitting calls whose estimate just fits lets about half of them miss their deadline after
#: queueing, which wastes model time under overload. The margin keeps the queue about as deep as full runs need.
DEADLINE_MARGIN = 0.6


#: The estimate of a call's own runs is trusted to within this factor either way once calibrated (the target of the
#: warm-up's fit, checked by tests at widths 8 to 512): a call is refused early only if even its own work divided by
#: it misses the deadline. Refusing on a pessimistic reading would turn away work the server could do.
ESTIMATE_TOLERANCE = 1.5

#: Callers refused for the work ahead are told to come back one at a time, this many admitted calls apart at the
#: model's measured pace (`ReturnSchedule`): at most about one returning caller per four calls the model takes, so
#: refusing the ones that still find no room costs a small share of the machine (a refusal costs both sides about a
#: quarter of what an answer costs; 500 callers x 500 ms on 2 cores: 2 apart gave 460 answers/s, 4 apart 511, one
#: run each; BENCHMARKS.md, "Overload, fourth round").
RETURN_SPACING = 4.0
#: The longest a refused caller is told to wait: the ortserve client's own largest back-off (`RetryPolicy`).
MAX_PUSHBACK_S = 2.0


class ReturnSchedule:
    """When the callers refused for the work ahead should come back (the retry pushback of admission's refusals).

    Each refused caller is given a time of its own: after the work ahead has drained to what its deadline allows,
    and after the callers refused before it, `RETURN_SPACING` admitted calls apart at the pace the model admits
    calls (measured), at most `MAX_PUSHBACK_S` from now, jittered within its slot; with no slot left within
    `MAX_PUSHBACK_S`, a time drawn in its second half. Told to come back "when there is room" alone, every refused
    caller would come back at once and be refused again; spaced out, they come back about as fast as the model can
    take some of them. Used on the event loop only (admission runs there).
    """

    def __init__(self, weight: float = 0.05) -> None:
        self.next_return = 0.0
        """When the next refused caller may come back (monotonic seconds)."""
        self.pace_s: float | None = None
        """Moving average of seconds between two admitted calls."""
        self._last_admitted: float | None = None
        self._weight = weight

    def admitted(self, now: float) -> None:
        """Count one admitted call at `now`."""
        if self._last_admitted is not None:
            interval = now - self._last_admitted
            self.pace_s = interval if self.pace_s is None else self.pace_s + self._weight * (interval - self.pace_s)
        self._last_admitted = now

    def pushback_s(self, now: float, room_in: float) -> float:
        """Seconds a caller refused at `now` should wait, if the work ahead leaves room for it in `room_in` seconds."""
        spacing = RETURN_SPACING * (self.pace_s or 0.0)
        start = max(now + max(0.0, room_in), self.next_return)
        if start - now >= MAX_PUSHBACK_S:  # no slot within the longest pushback: spread over its second half
            return random.uniform(MAX_PUSHBACK_S / 2, MAX_PUSHBACK_S)
        self.next_return = start + spacing
        return min(MAX_PUSHBACK_S, start - now + random.uniform(0.0, spacing))


class RunCost:
    """What a model run costs, in seconds: `fixed + rows·width·(per_token + per_token_width·width)`.

    A fixed cost per run (the session call, feeding inputs, ranking), a cost per token (the feed-forward layers) and
    the growth with the sequence width that attention brings (its cost per token grows with the width). The three
    coefficients are fitted by least squares to runs that the model's warm-up measures at several widths
    (`calibrate`), before the model serves, so a fresh server's first long call is estimated from evidence. Every run
    then refines a correction factor of its width band (`observe`), a moving average of measured over predicted.

    Uncalibrated (a batcher used without a model, as in tests), it falls back to one moving average of seconds per
    padded token, learned from the runs as they come.
    """

    def __init__(self, weight: float = 0.2):
        self.coefficients: tuple[float, float, float] | None = None
        """(fixed, per_token, per_token_width) from `calibrate`, or None."""
        self.seconds_per_token: float | None = None
        """The uncalibrated fallback: seconds per padded token."""
        self.band_factor: dict[int, float] = {}
        """Measured over predicted run time per width band (1.0 until a run of that band is measured)."""
        self.wait_factor = 1.0
        """Observed over predicted waits of recent calls: what the run cost alone misses (the event loop's own work
        between runs, CPU taken by the gRPC stack under load), so that deadline estimates correct themselves."""
        self._weight = weight

    @property
    def calibrated(self) -> bool:
        return self.coefficients is not None

    def calibrate(self, runs: Sequence[MeasuredRun]) -> None:
        """Fit the coefficients to `runs` (non-negative, by least squares on relative errors, so that a short run is
        fitted as closely as a long one); the band factors start over."""
        runs = [r for r in runs if r.seconds > 0]
        if not runs:
            return
        weights = np.array([1.0 / r.seconds for r in runs])
        design = np.array([[1.0, r.rows * r.width, r.rows * r.width * r.width] for r in runs]) * weights[:, None]
        seconds = np.array([r.seconds for r in runs]) * weights
        columns = [0, 1, 2]
        while True:  # drop a term whose fitted coefficient is negative (noise), and fit the others again
            fit, *_ = np.linalg.lstsq(design[:, columns], seconds, rcond=None)
            negative = [c for c, value in zip(columns, fit, strict=True) if value < 0]
            if not negative or len(columns) == 1:
                break
            columns.remove(negative[0])
        coefficients = [0.0, 0.0, 0.0]
        for column, value in zip(columns, fit, strict=True):
            coefficients[column] = max(0.0, float(value))
        if coefficients[1] == 0.0 and coefficients[2] == 0.0:  # a degenerate fit: keep a per-token cost at least
            coefficients[1] = float(sum(r.seconds for r in runs) / max(1, sum(r.rows * r.width for r in runs)))
        self.coefficients = (coefficients[0], coefficients[1], coefficients[2])
        self.band_factor.clear()

    def run_seconds(self, rows: int, width: int) -> float | None:
        """Estimated seconds of one run of `rows` texts padded to `width` tokens; None before anything is known."""
        if self.coefficients is None:
            return None if self.seconds_per_token is None else rows * width * self.seconds_per_token
        fixed, per_token, per_token_width = self.coefficients
        base = fixed + rows * width * (per_token + per_token_width * width)
        return base * self.band_factor.get(width_band(width), 1.0)

    def token_seconds(self, tokens: int, width: int) -> float | None:
        """Estimated seconds of `tokens` tokens of texts `width` tokens wide inside fuller runs (no fixed cost)."""
        if self.coefficients is None:
            return None if self.seconds_per_token is None else tokens * self.seconds_per_token
        _, per_token, per_token_width = self.coefficients
        return tokens * (per_token + per_token_width * width) * self.band_factor.get(width_band(width), 1.0)

    def call_seconds(self, costs: Sequence[int], max_batch_size: int) -> float | None:
        """Estimated seconds of the runs of one call's texts (estimated tokens `costs`), as runs of similar lengths
        of up to `max_batch_size` texts: each text at its own width, plus the fixed cost of each run."""
        if not costs:
            return 0.0
        if self.coefficients is None:
            return None if self.seconds_per_token is None else sum(costs) * self.seconds_per_token
        work = sum(self.token_seconds(cost, cost) or 0.0 for cost in costs)
        runs = -(-len(costs) // max(1, max_batch_size))
        return work + runs * self.coefficients[0]

    def observe(self, tokens: int, seconds: float, rows: int = 0, width: int = 0) -> None:
        """Learn from one run of `tokens` padded tokens (`rows` × `width`, when known) that took `seconds`."""
        if tokens <= 0:
            return
        rate = seconds / tokens
        if self.seconds_per_token is None:
            self.seconds_per_token = rate
        else:
            self.seconds_per_token += self._weight * (rate - self.seconds_per_token)
        if self.coefficients is None or not rows or not width:
            return
        predicted = self.run_seconds(rows, width)
        if predicted:
            band = width_band(width)
            factor = self.band_factor.get(band, 1.0)
            ratio = min(4.0, max(0.25, factor * seconds / predicted))
            self.band_factor[band] = factor + self._weight * (ratio - factor)

    def observe_wait(self, predicted: float, observed: float) -> None:
        if predicted > 0.001:
            ratio = min(10.0, max(0.5, observed / predicted))
            self.wait_factor += self._weight * (ratio - self.wait_factor)


@dataclass(frozen=True)
class WaitEstimate:
    """How long a new call would take: the work ahead of it (queued and running), and its own runs."""

    ahead: float
    own: float

    @property
    def total(self) -> float:
        return self.ahead + self.own


def estimate_wait(
    queue: RunQueue[Any],
    run_cost: RunCost,
    limits: BatchLimits,
    run_ends: Sequence[float | None],
    costs: Sequence[int],
    now: float,
    calibrated: bool = True,
) -> WaitEstimate | None:
    """Seconds until a new call of texts of estimated tokens `costs` would be answered, or None if not known yet.

    `run_ends` are the expected ends of the main runs in progress (None: unknown). Runs serve the least served call
    first, so a new call waits for at most its own size of each queued call's work (and for the runs in progress),
    not for whole bulk calls. `calibrated` applies the observed wait factor to the work ahead.
    """
    own = run_cost.call_seconds(costs, limits.max_batch_size)
    if own is None:
        return None
    tokens = sum(costs)
    ahead = 0.0
    # Read for every call, and for every queued call in it: under overload (a hundred calls queued) this loop was
    # most of admission's cost, so the seconds per token of each width are computed once (the cost is linear in the
    # tokens) and a call of one text skips the slice, sum and max.
    seconds_per_token: dict[int, float] = {}
    for call in queue.calls:
        queued = call.costs[call.taken :] if call.taken else call.costs
        if not queued:
            continue
        if len(queued) == 1:
            amount = width = queued[0]
        else:
            amount, width = sum(queued), max(queued)
        rate = seconds_per_token.get(width)
        if rate is None:
            rate = seconds_per_token[width] = run_cost.token_seconds(1, width) or 0.0
        ahead += min(amount, tokens) * rate
    ahead /= limits.concurrent_runs  # the runs share the work (each run's cost is measured while sharing)
    if len(costs) > limits.max_batch_size:
        own /= limits.concurrent_runs  # a call of several runs has them run side by side
    # With every slot taken, the first run to end frees one; a run of unknown length counts as ending now.
    ends = [end for end in run_ends if end is not None]
    slots_full = len(run_ends) >= limits.concurrent_runs
    ahead += max(0.0, min(ends) - now) if slots_full and ends else 0.0
    return WaitEstimate(ahead * (run_cost.wait_factor if calibrated else 1.0), own)


def admit(
    queue: RunQueue[Any],
    run_cost: RunCost,
    returns: ReturnSchedule,
    limits: BatchLimits,
    run_ends: Sequence[float | None],
    calls_in_flight: int,
    costs: Sequence[int],
    deadline: float | None,
) -> None:
    """Raise `OverloadedError` if a call of texts of estimated tokens `costs` would exceed the queue's bounds, or
    `DeadlineExceededError` if it cannot finish before `deadline` even on an optimistic reading of its own work;
    return if admitted. A call at an empty queue is never refused by the queue bounds, so one large call is never
    refused for good. `returns` counts admitted calls and tells a call refused for the work ahead when to come back.

    The work ahead keeps the `DEADLINE_MARGIN` (under overload, admitting calls whose queueing just fits wastes the
    model on answers that come too late); the call's own work is read optimistically (`ESTIMATE_TOLERANCE`), so a
    long call at a quiet server is refused only when it truly cannot make it.
    """
    texts, tokens = len(costs), sum(costs)
    model = queue.model
    now = time.monotonic()
    if calls_in_flight >= limits.max_calls_in_flight:
        raise OverloadedError(
            f"model {model!r} has {calls_in_flight} calls in flight (limit max_calls_in_flight="
            f"{limits.max_calls_in_flight}); retry later"
        )
    if queue.calls and queue.queued_texts + texts > limits.max_queue_texts:
        raise OverloadedError(
            f"model {model!r} has {queue.queued_texts} texts queued (limit max_queue_texts="
            f"{limits.max_queue_texts}); retry later"
        )
    if queue.calls and limits.max_queue_tokens and queue.queued_tokens + tokens > limits.max_queue_tokens:
        raise OverloadedError(
            f"model {model!r} has about {queue.queued_tokens} tokens queued (limit max_queue_tokens="
            f"{limits.max_queue_tokens}); retry later"
        )
    wait = None if deadline is None else estimate_wait(queue, run_cost, limits, run_ends, costs, now)
    if deadline is None or wait is None:  # with nothing measured yet, the run-time deadline checks protect the rest
        returns.admitted(now)
        return
    left = deadline - now
    own = wait.own / ESTIMATE_TOLERANCE
    allowed = DEADLINE_MARGIN * (left - own)
    if own >= left or wait.ahead > allowed:
        retry_after = returns.pushback_s(now, wait.ahead - allowed) if own < left else None
        raise DeadlineExceededError(
            f"model {model!r} cannot finish this call before its deadline (about {wait.total * 1000:.0f} ms of "
            f"work ahead and in it, {max(0.0, left) * 1000:.0f} ms left); the texts were not run "
            "(raise the timeout, send fewer texts, or add capacity)",
            retry_after_s=retry_after,
        )
    returns.admitted(now)
