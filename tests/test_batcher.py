"""The adaptive batcher's behaviour: merging, ordering, failure isolation, deadlines, admission, length grouping.

Most tests drive `AdaptiveBatcher` with a fake run function whose runs can be held open (a gate), which makes the
order of events deterministic without sleeping. The status codes are checked over gRPC against a real server running
a real ONNX Runtime model; there the same gate wraps the model's real run function.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from ortserve.client import InferenceClient, InferenceError
from ortserve.server.batcher import AdaptiveBatcher, BatchLimits, BatchOutput
from ortserve.server.errors import DeadlineExceededError, ModelNotReadyError, OverloadedError
from ortserve.server.runtime import OnnxClassifier, TokenizedBatch, group_by_length

from .helpers import RunningServer, running_server

T = TypeVar("T")
WAIT_S = 30  # generous bound for "this happens", never a performance claim


class GatedRun:
    """A fake `run_batch`: records every batch, returns `row:<text>` per text, fails a batch holding "boom", and
    (while `hold` is set) blocks each run until `release()`."""

    def __init__(self, wrapped: Any = None):
        self.batches: list[list[str]] = []
        self.started = threading.Semaphore(0)
        self._open = threading.Event()
        self._open.set()
        self._wrapped = wrapped

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_started(self) -> None:
        assert self.started.acquire(timeout=WAIT_S), "the model never started a run"

    def __call__(self, texts: list[str], pin: object = None) -> BatchOutput[Any]:
        self.batches.append(list(texts))
        self.started.release()
        assert self._open.wait(WAIT_S), "the test never released the run"
        if any("boom" in text for text in texts):
            raise RuntimeError("the model failed on this batch")
        if self._wrapped is not None:
            return self._wrapped(texts, pin)
        return BatchOutput("v1", [f"row:{text}" for text in texts])


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, WAIT_S))


async def started(fake: GatedRun) -> None:
    """Wait, without blocking the event loop, until the fake model has started its next run."""
    await asyncio.to_thread(fake.wait_started)


async def settle() -> None:
    """Let every ready task take its next step (submissions reach the queue)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_idle_call_runs_at_once_and_alone(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    # A batch delay of a minute would fail the wait_for in `run` if it applied: a full batch must not wait for it.
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=2, max_batch_delay_ms=60_000))
    idle = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_delay_ms=0))

    async def scenario() -> None:
        output = await asyncio.wait_for(idle.submit(["alone"]), WAIT_S)
        assert output.rows == ["row:alone"] and output.version == "v1"
        full = await asyncio.wait_for(batcher.submit(["a", "b"]), WAIT_S)
        assert list(full.rows) == ["row:a", "row:b"]
        await idle.close()
        await batcher.close()

    run(scenario())
    assert fake.batches == [["alone"], ["a", "b"]]


def test_a_batch_delay_waits_for_more_calls_until_the_batch_is_full(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    # A minute of delay: the batch can only run within the test's time because it fills up.
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=3, max_batch_delay_ms=60_000))

    async def scenario() -> None:
        first = asyncio.create_task(batcher.submit(["a"]))
        await settle()
        assert fake.batches == []  # waiting for more calls, not running
        rest = [asyncio.create_task(batcher.submit([text])) for text in ("b", "c")]
        await asyncio.gather(first, *rest)
        await batcher.close()

    run(scenario())
    assert fake.batches == [["a", "b", "c"]]


def test_calls_arriving_during_a_run_are_merged_into_the_next_batch_in_order(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=32))
    callers = [[f"c{i}-t{j}" for j in range(i % 3 + 1)] for i in range(6)]

    async def scenario() -> list[BatchOutput[Any]]:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["first"]))
        await started(fake)
        rest = [asyncio.create_task(batcher.submit(texts)) for texts in callers]
        await settle()
        assert batcher.queued_texts == sum(len(texts) for texts in callers)
        fake.release()
        outputs = await asyncio.gather(first, *rest)
        await batcher.close()
        return outputs

    outputs = run(scenario())
    assert fake.batches == [["first"], [text for texts in callers for text in texts]]  # one run for all six
    for texts, output in zip(callers, outputs[1:], strict=True):
        assert list(output.rows) == [f"row:{text}" for text in texts]


def test_batches_respect_max_batch_size_and_spread_a_large_call_over_runs(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=4))
    sizes = [3, 1, 2, 2, 5, 1]

    async def scenario() -> list[BatchOutput[Any]]:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["first"]))
        await started(fake)
        calls = [asyncio.create_task(batcher.submit([f"{n}-{j}" for n in [n] for j in range(n)])) for n in sizes]
        await settle()
        fake.release()
        outputs = await asyncio.gather(first, *calls)
        await batcher.close()
        return outputs[1:]

    outputs = run(scenario())
    assert all(len(batch) <= 4 for batch in fake.batches)
    # 3+1, 2+2, four of the 5, then the last 1-text call (least served) with the fifth text of the 5, each run's
    # texts in the order their calls came.
    assert fake.batches[1:] == [
        ["3-0", "3-1", "3-2", "1-0"],
        ["2-0", "2-1", "2-0", "2-1"],
        ["5-0", "5-1", "5-2", "5-3"],
        ["5-4", "1-0"],
    ]
    for n, output in zip(sizes, outputs, strict=True):  # every call answered whole, rows in its own order
        assert list(output.rows) == [f"row:{n}-{j}" for j in range(n)]


def test_a_failing_batch_fails_exactly_its_callers_and_the_next_batch_succeeds(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=2))

    async def scenario() -> list[Any]:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["fine"]))
        await started(fake)
        queued = [asyncio.create_task(batcher.submit([text])) for text in ["x", "boom", "y", "z"]]
        await settle()
        fake.release()
        results = await asyncio.gather(first, *queued, return_exceptions=True)
        after = await batcher.submit(["after"])
        await batcher.close()
        return [*results, after]

    first, x, boom, y, z, after = run(scenario())
    assert fake.batches == [["fine"], ["x", "boom"], ["y", "z"], ["after"]]
    assert list(first.rows) == ["row:fine"]
    assert isinstance(x, RuntimeError) and isinstance(boom, RuntimeError)  # x shared the failing batch
    assert list(y.rows) == ["row:y"] and list(z.rows) == ["row:z"] and list(after.rows) == ["row:after"]


def test_a_run_ending_with_a_base_exception_fails_its_callers_and_the_model_serves_on(
    executor: ThreadPoolExecutor,
) -> None:
    """A run thread that ends with an exception that is not an `Exception` (SystemExit, say) answers its callers with
    an error, and the next call runs (on main, the SystemExit left the run's task and stopped the event loop: the
    whole server)."""

    def run_batch(texts: list[str], pin: object = None) -> BatchOutput[str]:
        if texts == ["exit"]:
            raise SystemExit("the run thread was told to exit")
        return BatchOutput("v", [f"row:{text}" for text in texts])

    batcher: AdaptiveBatcher[str] = AdaptiveBatcher("m", run_batch, executor)

    async def scenario() -> list[str]:
        with pytest.raises(ModelNotReadyError, match="could not run"):
            await asyncio.wait_for(batcher.submit(["exit"]), WAIT_S)
        after = await batcher.submit(["after"])
        await batcher.close()
        return list(after.rows)

    assert run(scenario()) == ["row:after"]


def test_a_wrong_row_count_fails_the_batch_instead_of_misrouting_rows(executor: ThreadPoolExecutor) -> None:
    batcher: AdaptiveBatcher[str] = AdaptiveBatcher("m", lambda texts, pin: BatchOutput("v", ["only one"]), executor)

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="1 rows for 2 texts"):
            await batcher.submit(["a", "b"])
        await batcher.close()

    run(scenario())


def test_expired_calls_are_dropped_before_they_reach_the_model(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor)

    async def scenario() -> tuple[BaseException | None, BatchOutput[Any]]:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["first"]))
        await started(fake)
        expired = asyncio.create_task(batcher.submit(["late"], deadline=time.monotonic() - 1))
        live = asyncio.create_task(batcher.submit(["on time"], deadline=time.monotonic() + 3600))
        await settle()
        fake.release()
        await first
        error = await asyncio.gather(expired, return_exceptions=True)
        await batcher.close()
        return error[0], await live

    error, live = run(scenario())
    assert isinstance(error, DeadlineExceededError) and "were not run" in str(error)
    assert list(live.rows) == ["row:on time"]
    assert fake.batches == [["first"], ["on time"]]


def test_cancelled_calls_are_not_run(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor)

    async def scenario() -> None:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["first"]))
        await started(fake)
        gone = asyncio.create_task(batcher.submit(["gone"]))
        kept = asyncio.create_task(batcher.submit(["kept"]))
        await settle()
        gone.cancel()
        fake.release()
        await asyncio.gather(first, kept)
        await batcher.close()

    run(scenario())
    assert fake.batches == [["first"], ["kept"]]


def test_a_full_queue_refuses_calls_at_once(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_queue_texts=3))

    async def scenario() -> None:
        fake.hold()
        big = asyncio.create_task(batcher.submit(["a", "b", "c", "d", "e"]))  # over the limit, but the queue is empty
        await started(fake)
        queued = [asyncio.create_task(batcher.submit(texts)) for texts in (["q1", "q2"], ["q3"])]
        await settle()
        assert batcher.queued_texts == 3
        with pytest.raises(OverloadedError, match="max_queue_texts=3"):
            await batcher.submit(["refused"])
        fake.release()
        await asyncio.gather(big, *queued)
        await batcher.submit(["admitted again"])
        await batcher.close()

    run(scenario())
    assert "refused" not in [text for batch in fake.batches for text in batch]


def test_close_runs_what_is_queued_then_refuses_new_calls(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor)

    async def scenario() -> None:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["first"]))
        await started(fake)
        queued = asyncio.create_task(batcher.submit(["queued"]))
        await settle()
        closing = asyncio.create_task(batcher.close())
        await settle()
        with pytest.raises(ModelNotReadyError, match="shutting down"):
            await batcher.submit(["too late"])
        fake.release()
        await asyncio.gather(first, queued, closing)

    run(scenario())
    assert fake.batches == [["first"], ["queued"]]


def test_the_event_loop_keeps_running_while_a_batch_runs(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor)

    async def scenario() -> int:
        fake.hold()
        call = asyncio.create_task(batcher.submit(["slow"]))
        await started(fake)
        ticks = 0
        for _ in range(20):  # the run is held open all along: the loop must still serve other work
            await asyncio.sleep(0.001)
            ticks += 1
        fake.release()
        await call
        await batcher.close()
        return ticks

    assert run(scenario()) == 20


def test_the_event_loop_keeps_running_during_a_real_onnx_runtime_batch(
    artifacts: dict[str, Path], executor: ThreadPoolExecutor
) -> None:
    classifier = OnnxClassifier.load(artifacts["bert"])
    texts = [f"the weather report number {i} " * 12 for i in range(256)]
    batcher = AdaptiveBatcher(
        "bert",
        lambda batch, pin: BatchOutput("v", list(classifier.probabilities(batch, 32))),
        executor,
        BatchLimits(max_batch_size=256),
    )

    async def scenario() -> int:
        call = asyncio.create_task(batcher.submit(texts))
        ticks = 0
        while not call.done():
            await asyncio.sleep(0)
            ticks += 1
        await call
        await batcher.close()
        return ticks

    assert run(scenario()) > 10  # the loop went round many times while tokenization and the model ran


# --- length grouping ---------------------------------------------------------------------------------------------


def test_group_by_length_respects_size_and_token_limits() -> None:
    lengths = [100, 5, 7, 6, 120, 8, 99]
    groups = group_by_length(lengths, max_size=2, max_tokens=10_000, run_overhead_tokens=0)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    assert all(len(group) <= 2 for group in groups)
    assert group_by_length([50, 50, 50], max_tokens=100) == [[0, 1], [2]]
    assert group_by_length([500], max_tokens=100) == [[0]]  # one text longer than the bound still runs, alone
    assert group_by_length([]) == []


def test_group_by_length_separates_short_from_long_texts() -> None:
    lengths = [10, 120, 12, 118, 11, 119, 9, 121]
    groups = group_by_length(lengths, max_size=32, run_overhead_tokens=32)
    assert sorted(sorted(lengths[i] for i in group) for group in groups) == [[9, 10, 11, 12], [118, 119, 120, 121]]
    # Similar lengths stay together: splitting them would only add runs.
    assert group_by_length([20, 21, 22, 23], run_overhead_tokens=32) == [[0, 1, 2, 3]]


def test_mixed_lengths_run_with_little_padding_and_unchanged_results(artifacts: dict[str, Path]) -> None:
    classifier = OnnxClassifier.load(artifacts["bert"])
    rng = np.random.default_rng(0)
    texts = [" ".join(["the"] * int(n)) for n in rng.integers(3, 120, size=48)]
    padded: list[int] = []
    real_run = classifier.run

    def recording_run(batch: TokenizedBatch) -> np.ndarray:
        padded.append(batch.padded_tokens)
        return real_run(batch)

    classifier.run = recording_run  # type: ignore[method-assign]
    grouped = classifier.probabilities(texts, max_batch_size=32, max_batch_tokens=8192)
    real_tokens = sum(classifier.count_tokens(text) for text in texts)
    naive = len(texts) * max(classifier.count_tokens(text) for text in texts)
    one_by_one = np.concatenate([real_run(classifier.tokenize([text])) for text in texts])
    np.testing.assert_allclose(grouped, one_by_one, atol=1e-5)  # rows come back in input order
    assert naive > 1.5 * real_tokens  # padding everything to the longest would cost half as much again
    assert sum(padded) < 1.2 * real_tokens, (sum(padded), real_tokens, padded)


# --- status codes over gRPC, real server and real ONNX Runtime model ------------------------------------------------


@pytest.fixture
def gated_server(artifacts: dict[str, Path]) -> Iterator[tuple[RunningServer, GatedRun]]:
    """A server of the tiny `bert` model (queue limit 2 texts) whose model runs can be held open by the test."""
    with running_server(models=[f"bert={artifacts['bert']}"], max_queue_texts=2) as server:
        assert server.server is not None
        batcher = server.server.table.get("bert").batcher
        gate = GatedRun(wrapped=batcher._run_batch)  # the real run (tokenizer + ONNX Runtime) behind a gate
        batcher._run_batch = gate
        yield server, gate
        gate.release()


def _classify_in_thread(target: str, texts: Sequence[str], timeout: float = WAIT_S) -> dict[str, Any]:
    """Start a call in a thread; the returned dict gets "result" or "error" when it ends."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        with InferenceClient(target) as client:
            try:
                outcome["result"] = client.classify("bert", list(texts), timeout=timeout)
            except InferenceError as exc:
                outcome["error"] = exc

    outcome["thread"] = threading.Thread(target=call, daemon=True)
    outcome["thread"].start()
    return outcome


def _wait_until(condition: Any) -> None:
    end = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < end, "condition never became true"
        time.sleep(0.005)


def test_grpc_full_queue_is_resource_exhausted(gated_server: tuple[RunningServer, GatedRun]) -> None:
    server, gate = gated_server
    assert server.server is not None
    batcher = server.server.table.get("bert").batcher
    gate.hold()
    running = _classify_in_thread(server.target, ["the market rallied"])
    gate.wait_started()
    queued = _classify_in_thread(server.target, ["one", "two"])
    _wait_until(lambda: batcher.queued_texts == 2)
    with InferenceClient(server.target) as client, pytest.raises(InferenceError) as caught:
        client.classify("bert", ["one too many"])
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_queue_texts=2" in caught.value.details
    gate.release()
    for outcome in (running, queued):
        outcome["thread"].join(WAIT_S)
        assert "result" in outcome, outcome.get("error")
    assert len(queued["result"]) == 2


def test_grpc_expired_call_is_deadline_exceeded_and_never_runs(gated_server: tuple[RunningServer, GatedRun]) -> None:
    server, gate = gated_server
    gate.hold()
    running = _classify_in_thread(server.target, ["the market rallied"])
    gate.wait_started()
    late = _classify_in_thread(server.target, ["too late for this"], timeout=0.2)
    late["thread"].join(WAIT_S)
    assert late["error"].code == grpc.StatusCode.DEADLINE_EXCEEDED
    gate.release()
    running["thread"].join(WAIT_S)
    assert "result" in running
    with InferenceClient(server.target) as client:
        assert len(client.classify("bert", ["next call"])) == 1
    assert ["too late for this"] not in gate.batches
    assert gate.batches == [["the market rallied"], ["next call"]]


def test_grpc_failed_batch_fails_its_callers_with_internal_and_the_next_succeeds(
    gated_server: tuple[RunningServer, GatedRun],
) -> None:
    server, gate = gated_server
    with InferenceClient(server.target) as client:
        with pytest.raises(InferenceError) as caught:
            client.classify("bert", ["boom"])
        assert caught.value.code == grpc.StatusCode.INTERNAL
        assert "the model failed" not in caught.value.details  # internals stay in the server log
        (result,) = client.classify("bert", ["fine again"])
    assert len(result.labels) == 3


def test_runs_are_bounded_in_time_once_calibrated(executor: ThreadPoolExecutor) -> None:
    """Issue 25: with the cost model calibrated (10 µs a token here), two bulk calls of 500-token texts take turns in
    runs of `max_run_ms` (27 ms: 5 texts of 5 ms), not of whole token budgets (16 texts); uncalibrated, runs are not
    bounded in time (a rate learned from whatever ran first is no evidence)."""
    from ortserve.server.stage_timings import MeasuredRun

    limits = BatchLimits(max_batch_size=32, max_batch_tokens=8192, max_run_ms=27, concurrent_runs=1)
    sizes = {}
    for calibrated in (True, False):
        fake = GatedRun()
        # The held first call is short: its run, timed however long the hold lasted, corrects the factor of its own
        # width band only, so the bulk runs' estimate does not depend on how busy the machine was.
        batcher = AdaptiveBatcher("m", fake, executor, limits, text_cost=lambda text: 8 if text == "first" else 500)
        if calibrated:
            batcher.run_cost.calibrate(
                [MeasuredRun(1, 100, 0.001), MeasuredRun(4, 100, 0.004), MeasuredRun(1, 500, 0.005)]
            )

        async def scenario(fake: GatedRun, batcher: AdaptiveBatcher[str]) -> None:
            fake.hold()
            first = asyncio.create_task(batcher.submit(["first"]))
            await started(fake)
            bulk = [asyncio.create_task(batcher.submit([f"{c}{i}" for i in range(20)])) for c in "ab"]
            await settle()
            fake.release()
            await asyncio.gather(first, *bulk)
            await batcher.close()

        run(scenario(fake, batcher))
        sizes[calibrated] = [len(batch) for batch in fake.batches[1:]]
    assert sizes[True][0] == 5  # later runs grow as each run's measured time corrects the estimate (fake runs are fast)
    assert sizes[False][0] == 16


def calibrated_batcher(fake: GatedRun, executor: ThreadPoolExecutor, limits: BatchLimits) -> AdaptiveBatcher[str]:
    """A batcher whose cost model is calibrated at 10 µs a padded token; texts starting with "m" are estimated at 300
    tokens (a medium text), the others at 500."""
    from ortserve.server.stage_timings import MeasuredRun

    batcher = AdaptiveBatcher("m", fake, executor, limits, text_cost=lambda text: 300 if text[0] == "m" else 500)
    batcher.run_cost.calibrate([MeasuredRun(1, 100, 0.001), MeasuredRun(4, 100, 0.004), MeasuredRun(1, 500, 0.005)])
    return batcher


def test_a_lone_bulk_call_runs_whole_budgets_and_a_medium_call_starts_in_the_next_run(
    executor: ThreadPoolExecutor,
) -> None:
    """Issue 25: a bulk call alone is not cut into short runs (nobody waits for it); a medium call that arrives while
    it runs leads the next run, alone (no bulk texts padded into it), and the bulk call's runs are bounded in time
    from then on (the medium caller may come back)."""
    limits = BatchLimits(max_batch_size=32, max_batch_tokens=8192, max_run_ms=27, concurrent_runs=2)
    fake = GatedRun()
    batcher = calibrated_batcher(fake, executor, limits)

    async def scenario() -> None:
        fake.hold()
        bulk = asyncio.create_task(batcher.submit([f"b{i}" for i in range(40)]))
        await started(fake)
        medium = asyncio.create_task(batcher.submit(["medium"]))
        await settle()
        fake.release()
        await asyncio.gather(bulk, medium)
        await batcher.close()

    run(scenario())
    assert len(fake.batches[0]) == 16  # 16 x 500 tokens: the whole token budget, not 27 ms of it
    assert fake.batches[1] == ["medium"]
    assert all(text.startswith("b") for text in fake.batches[2]) and len(fake.batches[2]) < 16


def test_the_last_texts_of_a_pinned_call_share_the_next_run_with_fresh_calls(executor: ThreadPoolExecutor) -> None:
    """Issue 25: a bulk call whose last text did not fit its first run is pinned to the version that run took; fresh
    calls (unpinned) lead every run while bulk callers keep sending, and a pinned call could share none of them, so
    one of two bulk callers waited for good. Pinned to the serving version, it joins the next run."""

    def pinned(texts: list[str], pin: object) -> BatchOutput[str]:
        return BatchOutput("v1", [f"row:{text}" for text in texts], pin="v1")

    fake = GatedRun(wrapped=pinned)
    limits = BatchLimits(max_batch_size=16, concurrent_runs=1, max_run_ms=0)
    batcher = AdaptiveBatcher("m", fake, executor, limits, current_pin=lambda: "v1")

    async def scenario() -> None:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["first"]))
        await started(fake)
        calls = [
            asyncio.create_task(batcher.submit([f"{name}{i}" for i in range(count)]))
            for name, count in [("a", 17), ("b", 8)]
        ]
        await settle()
        fake.release()
        await asyncio.gather(first, *calls)
        await batcher.close()

    run(scenario())
    assert fake.batches[1] == [f"a{i}" for i in range(16)]
    assert fake.batches[2] == ["a16", *[f"b{i}" for i in range(8)]]  # beside the fresh call b, not after it
