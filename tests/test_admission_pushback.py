"""Issue 25, 500 callers x 500 ms: a call refused at admission for the work queued ahead of it is told when to come
back (`admission.ReturnSchedule`), on gRPC as the `grpc-retry-pushback-ms` trailer and on HTTP as `Retry-After`,
from the same field of the error; the client hands it to the caller (`InferenceError.retry_after_s`), and the
benchmark's overload callers wait that long instead of coming back at once."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest

from ortserve.client import InferenceClient, InferenceError
from ortserve.client.convert import chunk_error
from ortserve.client.errors import PUSHBACK_TRAILER, retry_pushback_s
from ortserve.server.admission import MAX_PUSHBACK_S, RETURN_SPACING, ReturnSchedule, RunCost, admit
from ortserve.server.batch_limits import BatchLimits
from ortserve.server.errors import DeadlineExceededError
from ortserve.server.run_forming import QueuedCall, RunQueue
from ortserve.server.stage_timings import MeasuredRun
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import running_server
from .test_batcher import WAIT_S, GatedRun

#: As if the warm-up had measured 0.1 s per token and no fixed cost per run.
TENTH_OF_A_SECOND_PER_TOKEN = [MeasuredRun(1, 1, 0.1), MeasuredRun(1, 100, 10.0), MeasuredRun(4, 10, 4.0)]


def _queue_of(calls: int, tokens: int) -> RunQueue[str]:
    queue: RunQueue[str] = RunQueue("m")
    for _ in range(calls):
        queue.add(QueuedCall(["queued"], [tokens], None))
    return queue


def _refusal(queue: RunQueue[str], run_cost: RunCost, tokens: int, seconds_left: float) -> DeadlineExceededError:
    with pytest.raises(DeadlineExceededError) as refused:
        limits = BatchLimits(concurrent_runs=1)
        admit(queue, run_cost, ReturnSchedule(), limits, [], 0, [tokens], time.monotonic() + seconds_left)
    return refused.value


# --- the schedule --------------------------------------------------------------------------------------------------


def test_refused_callers_are_given_return_times_of_their_own_spaced_at_the_models_pace() -> None:
    schedule = ReturnSchedule()
    for step in range(200):  # a call admitted every 10 ms
        schedule.admitted(step * 0.01)
    assert schedule.pace_s == pytest.approx(0.01)
    spacing = RETURN_SPACING * 0.01
    now = 5.0
    returns = [now + schedule.pushback_s(now, room_in=0.3) for _ in range(5)]
    for index, at in enumerate(returns):  # after the work ahead, then one slot each, jittered within it
        slot = now + 0.3 + index * spacing
        assert slot <= at <= slot + spacing
    later = 5.0 + 10.0  # the slots given out have passed: the next caller waits for the work ahead only
    assert 0.3 <= schedule.pushback_s(later, room_in=0.3) <= 0.3 + spacing


def test_no_caller_is_told_to_wait_longer_than_the_longest_pushback() -> None:
    schedule = ReturnSchedule()
    schedule.admitted(0.0)
    schedule.admitted(0.5)  # a slow pace: each slot half a second times the spacing
    waits = [schedule.pushback_s(1.0, room_in=0.0) for _ in range(50)]
    assert max(waits) <= MAX_PUSHBACK_S
    # Once no slot is left within it, callers are spread over its second half: they do not all come back at once.
    beyond = waits[2:]
    assert all(MAX_PUSHBACK_S / 2 <= wait <= MAX_PUSHBACK_S for wait in beyond)
    assert len(set(beyond)) > 1


# --- admission -----------------------------------------------------------------------------------------------------


def test_a_call_refused_for_the_work_ahead_is_told_when_to_come_back() -> None:
    run_cost = RunCost()
    run_cost.calibrate(TENTH_OF_A_SECOND_PER_TOKEN)
    queue = _queue_of(calls=10, tokens=5)  # 5 s of work ahead of a 5-token call
    first = _refusal(queue, run_cost, tokens=5, seconds_left=2.0)
    second = _refusal(queue, run_cost, tokens=5, seconds_left=2.0)
    assert first.retry_after_s is not None and second.retry_after_s is not None
    # The work ahead (5 s) is more than the deadline allows (0.6 x (2 s - its own work)): room in about 4 s, more
    # than the longest pushback, so each is told a time in its second half.
    for refusal in (first, second):
        assert MAX_PUSHBACK_S / 2 <= refusal.retry_after_s <= MAX_PUSHBACK_S

    short_queue = _queue_of(calls=3, tokens=5)  # 1.5 s ahead against ~1.0 s allowed: room in about half a second
    fresh = RunCost()
    fresh.calibrate(TENTH_OF_A_SECOND_PER_TOKEN)
    early = _refusal(short_queue, fresh, tokens=5, seconds_left=2.0)
    assert early.retry_after_s is not None and 0.3 < early.retry_after_s < 1.0


def test_a_call_that_cannot_finish_within_its_own_deadline_gets_no_pushback() -> None:
    run_cost = RunCost()
    run_cost.calibrate(TENTH_OF_A_SECOND_PER_TOKEN)
    hopeless = _refusal(_queue_of(calls=1, tokens=5), run_cost, tokens=100, seconds_left=2.0)  # 10 s of its own
    assert hopeless.retry_after_s is None  # coming back later would not make its deadline any longer


# --- both doors and the client -------------------------------------------------------------------------------------


@pytest.fixture
def crowded_server(artifacts: dict[str, Path]) -> Iterator[object]:
    """A server whose model holds one run and has ten calls queued behind it, costed at 0.1 s per token."""
    with running_server(models=[f"bert={artifacts['bert']}"], http_port=0) as server:
        assert server.server is not None
        batcher = server.server.table.get("bert").batcher
        gate = GatedRun(wrapped=batcher._run_batch)
        batcher._run_batch = gate  # type: ignore[assignment]
        batcher.run_cost.calibrate(TENTH_OF_A_SECOND_PER_TOKEN)
        batcher.limits = BatchLimits(concurrent_runs=1)  # the held run takes the only slot: the rest stays queued
        gate.hold()
        submitted = [asyncio.run_coroutine_threadsafe(batcher.submit(["the market rallied"]), server.loop)]
        gate.wait_started()
        submitted += [
            asyncio.run_coroutine_threadsafe(batcher.submit([f"stocks fell {i} points"]), server.loop)
            for i in range(10)
        ]
        end = time.monotonic() + WAIT_S
        while batcher.queued_texts < 10:
            assert time.monotonic() < end
            time.sleep(0.005)
        try:
            yield server
        finally:
            gate.release()
            for call in submitted:
                call.result(WAIT_S)


def test_grpc_and_http_refusals_for_the_work_ahead_carry_the_same_pushback(crowded_server) -> None:  # type: ignore[no-untyped-def]
    server = crowded_server
    with grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)]) as channel:
        stub = pb_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Classify(pb.ClassifyRequest(model="bert", texts=["short"]), timeout=3)
    assert refused.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "work ahead" in refused.value.details()
    pushback_ms = int(dict(refused.value.trailing_metadata())[PUSHBACK_TRAILER])
    assert 0 < pushback_ms <= MAX_PUSHBACK_S * 1000

    with InferenceClient(server.target) as client, pytest.raises(InferenceError) as failure:
        client.classify("bert", ["short"], timeout=3)
    assert failure.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert failure.value.retry_after_s is not None and 0 < failure.value.retry_after_s <= MAX_PUSHBACK_S

    http_port = server.server.http_port
    answer = httpx.post(
        f"http://127.0.0.1:{http_port}/invocations",
        json={"inputs": ["short"]},
        headers={"x-timeout-ms": "3000"},
        timeout=WAIT_S,
    )
    assert answer.status_code == 504, answer.text
    assert 1 <= int(answer.headers["retry-after"]) <= MAX_PUSHBACK_S  # whole seconds, rounded up


def test_the_clients_error_keeps_the_pushback_through_its_rewrites_and_pickling() -> None:
    class Refused(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.DEADLINE_EXCEEDED

        def details(self) -> str:
            return "cannot finish this call before its deadline"

        def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("x-request-id", "r1"), (PUSHBACK_TRAILER, "1250"))

    assert retry_pushback_s(Refused()) == 1.25
    failure = chunk_error(Refused(), start=256, count=256, total=512)
    assert failure.retry_after_s == 1.25 and "texts[256:512]" in failure.details
    assert pickle.loads(pickle.dumps(failure)).retry_after_s == 1.25
    assert failure.replaced(hint="try later").retry_after_s == 1.25

    class Malformed(Refused):
        def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
            return ((PUSHBACK_TRAILER, "-5"),)

    assert retry_pushback_s(Malformed()) is None  # gRPC reads a malformed pushback as "do not retry"


# --- the benchmark's callers ---------------------------------------------------------------------------------------


class RefusingWithPushback(pb_grpc.InferenceServicer):
    """Refuses every call with DEADLINE_EXCEEDED and a pushback; counts the calls."""

    def __init__(self, pushback_ms: int):
        self.pushback_ms = pushback_ms
        self.calls = 0

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        self.calls += 1
        context.set_trailing_metadata(((PUSHBACK_TRAILER, str(self.pushback_ms)),))
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "about 900 ms of work ahead and in it")


def test_the_overload_callers_wait_for_the_servers_pushback() -> None:
    from benchmarks.under_load import overload_level

    servicer = RefusingWithPushback(pushback_ms=1500)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        level = overload_level(port, "m", ["x"], callers=3, seconds=0.6, deadline_s=5.0, warmup_s=0.0)
    finally:
        server.stop(0)
    # Each caller was refused once and told to wait past the end of the window: without the pushback, its own
    # back-off (50 ms doubling) would have brought it back several times.
    assert servicer.calls == 3
    assert level["pushbacks"] == 3 and level["pushback_p50_ms"] == 1500


# --- the estimate's cost -------------------------------------------------------------------------------------------


def test_the_work_ahead_is_each_queued_calls_share_at_its_own_width() -> None:
    """`estimate_wait` computes each width's cost per token once (a faster loop, for refusals under overload): the
    work ahead must stay what each queued call's own reading gives."""
    from ortserve.server.admission import estimate_wait

    run_cost = RunCost()
    run_cost.calibrate([MeasuredRun(1, 16, 0.002), MeasuredRun(32, 16, 0.03), MeasuredRun(8, 128, 0.05)])
    run_cost.observe(32 * 64, 0.05, 32, 64)  # a band factor of its own at width 64
    queue: RunQueue[str] = RunQueue("m")
    shapes = [([14], 0), ([64], 0), ([14, 300, 64], 1), ([5, 5], 2), ([200] * 40, 7), ([64, 14], 0)]
    for costs, taken in shapes:
        call: QueuedCall[str] = QueuedCall(["t"] * len(costs), costs, None)
        call.taken = taken
        queue.add(call)
    for tokens in (14, 100, 5000):
        expected = sum(
            run_cost.token_seconds(min(sum(costs[taken:]), tokens), max(costs[taken:])) or 0.0
            for costs, taken in shapes
            if costs[taken:]
        )
        wait = estimate_wait(queue, run_cost, BatchLimits(concurrent_runs=1), [], [tokens], 0.0, calibrated=False)
        assert wait is not None and wait.ahead == pytest.approx(expected, rel=1e-9)
