"""Run forming as pure functions (`ortserve.server.run_forming`): driven directly, with no event loop, no executor and
no model, as text-embeddings-inference tests its next-batch step."""

from __future__ import annotations

from ortserve.server.batch_limits import BatchLimits
from ortserve.server.errors import DeadlineExceededError
from ortserve.server.run_forming import (
    EXPRESS_AFTER_TOKENS,
    EXPRESS_RUN_TOKENS,
    LENGTH_SPREAD,
    MEDIUM_CALL_TOKENS,
    WIDE_TEXT_TOKENS,
    QueuedCall,
    RunQueue,
    express_budget,
    may_start_run,
    padded_tokens,
    run_pin,
    run_shape,
)

NOW = 1000.0


def queued(queue: RunQueue[str], *costs: int, deadline: float | None = None) -> QueuedCall[str]:
    call: QueuedCall[str] = QueuedCall([f"t{i}" for i in range(len(costs))], list(costs), deadline, enqueued=NOW)
    queue.add(call)
    return call


def test_a_run_takes_the_least_served_call_first_within_the_text_and_token_bounds() -> None:
    queue: RunQueue[str] = RunQueue("m")
    bulk = queued(queue, *[10] * 8)
    bulk.attained = 50  # served before
    fresh = queued(queue, 10, 10)
    formed = queue.take_batch(BatchLimits(max_batch_size=4, max_batch_tokens=0), NOW)
    assert [(p.call, p.start, p.end) for p in formed.parts] == [(bulk, 0, 2), (fresh, 0, 2)]  # in arrival order
    assert queue.queued_texts == 6 and queue.queued_tokens == 60
    assert fresh not in queue.calls and bulk in queue.calls


def test_the_token_budget_bounds_a_run_but_its_first_text_always_runs() -> None:
    queue: RunQueue[str] = RunQueue("m")
    queued(queue, 600, 600)
    limits = BatchLimits(max_batch_tokens=512)
    assert padded_tokens(queue.take_batch(limits, NOW).parts) == 600  # alone, over the budget
    assert queue.queued_texts == 1


def test_texts_of_very_different_lengths_do_not_share_a_run() -> None:
    queue: RunQueue[str] = RunQueue("m")
    short = queued(queue, 10)
    queued(queue, 10 * LENGTH_SPREAD + 1)
    formed = queue.take_batch(BatchLimits(), NOW)
    assert [p.call for p in formed.parts] == [short]


def test_calls_past_or_missing_their_deadline_are_refused_while_forming() -> None:
    queue: RunQueue[str] = RunQueue("m")
    late = queued(queue, 10, deadline=NOW - 1)
    hopeless = queued(queue, 10, deadline=NOW + 0.05)
    live = queued(queue, 10, deadline=NOW + 10)
    formed = queue.take_batch(BatchLimits(), NOW, run_seconds=lambda rows, width: 0.1)
    assert [p.call for p in formed.parts] == [live]
    assert [call for call, _ in formed.refused] == [late, hopeless]
    assert all(isinstance(error, DeadlineExceededError) for _, error in formed.refused)
    assert "waiting for model 'm'" in str(formed.refused[0][1])
    assert queue.calls == [] and queue.queued_texts == 0


def test_a_call_whose_first_run_has_not_answered_waits_for_its_version() -> None:
    queue: RunQueue[str] = RunQueue("m")
    call = queued(queue, 10, 10, 10)
    queue.take_batch(BatchLimits(max_batch_size=1), NOW)
    assert call.waits_for_its_version
    assert queue.take_batch(BatchLimits(max_batch_size=1), NOW).parts == []
    call.answered, call.pin = 1, "v1"  # its first run answered: the call is pinned to v1
    assert [p.start for p in queue.take_batch(BatchLimits(max_batch_size=1), NOW).parts] == [1]


def test_calls_pinned_to_different_versions_never_share_a_run() -> None:
    queue: RunQueue[str] = RunQueue("m")
    old, new = queued(queue, 10), queued(queue, 10)
    old.pin, new.pin = "v1", "v2"
    assert [p.call for p in queue.take_batch(BatchLimits(), NOW).parts] == [old]


def test_a_slot_takes_a_run_when_idle_after_a_share_of_a_batch_and_never_beside_a_long_run() -> None:
    queue: RunQueue[str] = RunQueue("m")
    limits = BatchLimits(max_batch_size=8, concurrent_runs=2)
    assert not may_start_run(queue, [], limits)  # nothing queued
    queued(queue, 10)
    assert may_start_run(queue, [], limits)  # idle: at once
    assert not may_start_run(queue, [(4, 10)], limits)  # beside a short run: wait for 8 / 2 texts
    queued(queue, 10, 10, 10)
    assert may_start_run(queue, [(4, 10)], limits)
    assert not may_start_run(queue, [(EXPRESS_AFTER_TOKENS // 8, 8)], limits)  # beside a long run: never
    assert not may_start_run(queue, [(1, WIDE_TEXT_TOKENS)], limits)  # a run of one wide text is a long run
    assert not may_start_run(queue, [(4, 10), (4, 10)], limits)  # every slot taken


def test_the_express_lane_takes_whole_short_calls_only() -> None:
    queue: RunQueue[str] = RunQueue("m")
    started = queued(queue, 10, 10)
    started.taken = 1
    long = queued(queue, 300)
    short = queued(queue, 20, 20)
    parts = queue.take_express(BatchLimits(), NOW)
    assert [(p.call, p.start, p.end) for p in parts] == [(short, 0, 2)]
    assert started in queue.calls and long in queue.calls and short not in queue.calls


def linear_estimate(rows: int, width: int) -> float:
    """A run cost of 10 µs per padded token: a run of 8 texts of 500 tokens takes 40 ms."""
    return rows * width * 10e-6


def test_a_run_is_bounded_in_time_as_well_as_tokens() -> None:
    """Issue 25: a ~300-token call beside two bulk callers joined a run of a whole token budget (8,192 tokens, most of
    a second on the demo model) and waited for another such run ahead of it; now the runs it waits for and joins
    stop at `max_run_ms` of estimated run time, and it goes first (least served), in a run of its own: bulk texts
    padded into it would make it wait as long as a bulk run."""
    limits = BatchLimits(max_batch_size=32, max_batch_tokens=8192, max_run_ms=25)
    queue: RunQueue[str] = RunQueue("m")
    bulk_a = queued(queue, *[500] * 256)
    bulk_b = queued(queue, *[500] * 256)
    first = queue.take_batch(limits, NOW, run_estimate=linear_estimate)
    assert [(p.call, p.end - p.start) for p in first.parts] == [(bulk_a, 5)]  # 5 x 500 x 10 µs = 25 ms
    medium = queued(queue, 300)
    second = queue.take_batch(limits, NOW, run_estimate=linear_estimate)
    assert [(p.call, p.end - p.start) for p in second.parts] == [(medium, 1)]
    third = queue.take_batch(limits, NOW, run_estimate=linear_estimate)
    assert [(p.call, p.end - p.start) for p in third.parts] == [(bulk_b, 5)]


def test_a_lone_bulk_call_is_not_cut_but_yields_once_another_call_comes() -> None:
    """A bulk call alone runs whole token budgets: nobody waits for it. Once another call came (it may come back: a
    caller between calls) or has texts in a run in progress, its runs of wide texts stop at `max_run_ms`."""
    limits = BatchLimits(max_batch_size=32, max_batch_tokens=8192, max_run_ms=25)
    queue: RunQueue[str] = RunQueue("m")
    bulk = queued(queue, *[500] * 64)
    assert padded_tokens(queue.take_batch(limits, NOW, run_estimate=linear_estimate).parts) == 16 * 500
    bulk.answered, bulk.pin = 16, "v1"
    assert padded_tokens(queue.take_batch(limits, NOW, run_estimate=linear_estimate, current="v1").parts) == 16 * 500
    other = queued(queue, 500)
    assert [p.call for p in queue.take_batch(limits, NOW, run_estimate=linear_estimate, current="v1").parts] == [other]
    formed = queue.take_batch(limits, NOW, run_estimate=linear_estimate, current="v1")  # `other` came after it
    assert [(p.call, p.end - p.start) for p in formed.parts] == [(bulk, 5)]  # 5 x 500 x 10 µs = 25 ms
    lone = RunQueue[str]("m")
    later = queued(lone, *[500] * 64)
    running = [queued(RunQueue[str]("n"), 500)]  # a call with texts in a run in progress
    assert padded_tokens(lone.take_batch(limits, NOW, run_estimate=linear_estimate, running=running).parts) == 2500
    assert later.taken == 5


def test_short_texts_are_not_cut_in_time() -> None:
    """Runs of short texts gain from their size: `max_run_ms` bounds runs of wide texts only."""
    limits = BatchLimits(max_batch_size=32, max_batch_tokens=8192, max_run_ms=1)
    queue: RunQueue[str] = RunQueue("m")
    queued(queue, *[WIDE_TEXT_TOKENS // 2] * 8)
    queued(queue, *[WIDE_TEXT_TOKENS // 2] * 8)
    assert run_shape(queue.take_batch(limits, NOW, run_estimate=linear_estimate).parts) == (16, WIDE_TEXT_TOKENS // 2)


def test_a_call_pinned_to_the_serving_version_shares_runs_with_fresh_calls() -> None:
    """Issue 25: the last text of a bulk call (pinned to the version of its first run) never ran while fresh calls
    came: every run was led by a fresh call, with which a pinned call could not share a run, so one of two bulk
    callers waited for good. A call pinned to the serving version is a fresh call's equal; one pinned to an older
    version goes first."""
    queue: RunQueue[str] = RunQueue("m")
    leftover = queued(queue, 500)
    leftover.attained, leftover.pin = 15 * 500, "v1"
    fresh = queued(queue, *[500] * 16)
    formed = queue.take_batch(BatchLimits(max_batch_size=17, max_batch_tokens=17 * 500), NOW, current="v1")
    assert [(p.call, p.end - p.start) for p in formed.parts] == [(leftover, 1), (fresh, 16)]
    assert run_pin(formed.parts) == "v1"
    swapped: RunQueue[str] = RunQueue("m")
    old = queued(swapped, 500)
    old.attained, old.pin = 15 * 500, "v1"
    newer = queued(swapped, 500)
    assert [p.call for p in swapped.take_batch(BatchLimits(), NOW, current="v2").parts] == [old]
    assert [p.call for p in swapped.take_batch(BatchLimits(), NOW, current="v2").parts] == [newer]


def test_a_medium_call_leads_a_run_of_its_own_beside_bulk_calls() -> None:
    queue: RunQueue[str] = RunQueue("m")
    bulk = queued(queue, *[500] * 16)
    medium = queued(queue, 300)
    assert [p.call for p in queue.take_batch(BatchLimits(), NOW).parts] == [medium]
    assert [p.call for p in queue.take_batch(BatchLimits(), NOW).parts] == [bulk]


def test_a_stream_of_medium_calls_leaves_bulk_calls_every_other_run_to_fill() -> None:
    queue: RunQueue[str] = RunQueue("m")
    bulk = queued(queue, *[500] * 64)
    bulk.attained = 500  # served before: each fresh medium call goes first
    runs = []
    for _ in range(4):
        queued(queue, 300)
        runs.append([p.call is bulk for p in queue.take_batch(BatchLimits(), NOW).parts])
        bulk.answered = bulk.taken  # its run answered
    assert runs == [[False], [True, False], [False], [True, False]]


def test_the_express_lane_takes_a_medium_call_beside_bulk_calls_only() -> None:
    assert express_budget(0) == EXPRESS_RUN_TOKENS  # beside short calls' runs: short calls only
    assert express_budget(16 * 512) == MEDIUM_CALL_TOKENS
    queue: RunQueue[str] = RunQueue("m")
    medium = queued(queue, 300)
    assert queue.take_express(BatchLimits(), NOW) == []
    assert [p.call for p in queue.take_express(BatchLimits(), NOW, express_budget(16 * 512))] == [medium]


def test_the_time_bound_is_off_at_zero_or_before_any_run_is_measured() -> None:
    for limits, estimate in [
        (BatchLimits(max_run_ms=0), linear_estimate),
        (BatchLimits(max_run_ms=25), lambda rows, width: None),
    ]:
        queue: RunQueue[str] = RunQueue("m")
        queued(queue, *[500] * 64)
        queued(queue, *[500] * 64)
        assert padded_tokens(queue.take_batch(limits, NOW, run_estimate=estimate).parts) == 16 * 500


def test_a_first_text_longer_than_the_time_bound_still_runs() -> None:
    queue: RunQueue[str] = RunQueue("m")
    queued(queue, 4000, 4000)
    queued(queue, 4000)
    formed = queue.take_batch(BatchLimits(max_run_ms=1), NOW, run_estimate=linear_estimate)
    assert run_shape(formed.parts) == (1, 4000)
