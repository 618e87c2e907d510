"""Admission and cost estimation: whether a new call may join a model's queue, from its bounds and from the measured
cost of runs. What is refused is refused at once (RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED), before any work."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .batch_limits import BatchLimits
from .errors import DeadlineExceededError, OverloadedError
from .run_forming import RunQueue

#: A call is admitted only if its estimated wait is at most this share of the time left before its deadline. An
#: estimate is an average: admitting calls whose estimate just fits lets about half of them miss their deadline after
#: queueing, which wastes model time under overload. The margin keeps the queue about as deep as full runs need.
DEADLINE_MARGIN = 0.6


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


def estimated_wait(
    queue: RunQueue[Any],
    run_cost: RunCost,
    limits: BatchLimits,
    run_ends: Sequence[float | None],
    tokens: int,
    now: float,
    calibrated: bool = True,
) -> float | None:
    """Seconds until a new call of `tokens` estimated tokens would be answered, or None if not known yet.

    `run_ends` are the expected ends of the main runs in progress (None: unknown). Runs serve the least served call
    first, so a new call waits for at most its own size of each queued call's work (and for the runs in progress),
    not for whole bulk calls.
    """
    ahead = sum(min(call.queued_tokens, tokens) for call in queue.calls)
    work = run_cost.seconds(tokens + ahead)
    if work is None:
        return None
    work /= limits.concurrent_runs  # the runs share the work (each run's cost is measured while sharing)
    # With every slot taken, the first run to end frees one; a run of unknown length counts as ending now.
    ends = [end for end in run_ends if end is not None]
    slots_full = len(run_ends) >= limits.concurrent_runs
    running = max(0.0, min(ends) - now) if slots_full and ends else 0.0
    return (work + running) * (run_cost.wait_factor if calibrated else 1.0)


def admit(
    queue: RunQueue[Any],
    run_cost: RunCost,
    limits: BatchLimits,
    run_ends: Sequence[float | None],
    calls_in_flight: int,
    texts: int,
    tokens: int,
    deadline: float | None,
) -> None:
    """Raise `OverloadedError` if a call of `texts` texts and `tokens` estimated tokens would exceed the queue's
    bounds, or `DeadlineExceededError` if the work ahead of it cannot finish before `deadline`; return if admitted.
    A call at an empty queue is never refused by the queue bounds, so one large call is never refused for good."""
    model = queue.model
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
    if deadline is None:
        return
    now = time.monotonic()
    wait = estimated_wait(queue, run_cost, limits, run_ends, tokens, now)
    if wait is not None and wait > DEADLINE_MARGIN * (deadline - now):
        raise DeadlineExceededError(
            f"model {model!r} cannot finish this call before its deadline (about {wait * 1000:.0f} ms of "
            f"work ahead and in it, {max(0.0, deadline - now) * 1000:.0f} ms left); the texts were not run "
            "(raise the timeout, send fewer texts, or add capacity)"
        )
