"""Behaviour under load: fair runs by a token budget, admission by cost, deadlines refused before running, and one
model version per call. Batcher-level tests use the gated fake model of test_batcher (no sleeping); the status codes
are checked over gRPC against a real server and a real ONNX Runtime model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from ortserve.client import InferenceClient, InferenceError
from ortserve.server.batcher import AdaptiveBatcher, BatchLimits, BatchOutput, RunBatch
from ortserve.server.errors import DeadlineExceededError, OverloadedError
from ortserve.server.stage_timings import MeasuredRun

from .helpers import running_server
from .test_batcher import WAIT_S, GatedRun, run, settle, started


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def tokens_of(text: str) -> int:
    """Test cost model: a text "tN-..." costs N tokens."""
    return int(text.split("-")[0][1:])


def test_a_short_call_behind_a_bulk_call_runs_in_the_next_run_and_completes_first(
    executor: ThreadPoolExecutor,
) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher(
        "m", fake, executor, BatchLimits(max_batch_size=32, max_batch_tokens=400), text_cost=tokens_of
    )
    bulk_texts = [f"t100-{i}" for i in range(12)]  # 1,200 tokens: three runs of four texts at a budget of 400
    finished: list[str] = []

    async def scenario() -> None:
        fake.hold()
        bulk = asyncio.create_task(batcher.submit(bulk_texts))
        bulk.add_done_callback(lambda _: finished.append("bulk"))
        await started(fake)  # the first run of the bulk call is in progress
        short = asyncio.create_task(batcher.submit(["t5-short"]))
        short.add_done_callback(lambda _: finished.append("short"))
        await settle()
        fake.release()
        outputs = await asyncio.gather(bulk, short)
        assert list(outputs[0].rows) == [f"row:{text}" for text in bulk_texts]  # answered whole, in order
        await batcher.close()

    run(scenario())
    assert fake.batches == [bulk_texts[0:4], ["t5-short"], bulk_texts[4:8], bulk_texts[8:12]]
    assert finished == ["short", "bulk"]


def test_runs_keep_to_the_token_budget_and_least_served_calls_go_first(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher(
        "m", fake, executor, BatchLimits(max_batch_size=32, max_batch_tokens=300), text_cost=tokens_of
    )
    a = [f"t50-a{i}" for i in range(8)]
    b = [f"t50-b{i}" for i in range(8)]

    async def scenario() -> None:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["t50-first"]))
        await started(fake)
        calls = [asyncio.create_task(batcher.submit(texts)) for texts in (a, b)]
        await settle()
        fake.release()
        await asyncio.gather(first, *calls)
        await batcher.close()

    run(scenario())
    assert all(len(batch) * 50 <= 300 for batch in fake.batches)
    # Two bulk calls share every run instead of one waiting for the other to finish.
    assert fake.batches[1] == a[:6]
    assert fake.batches[2] == b[:6]
    assert sorted(fake.batches[3]) == sorted(a[6:] + b[6:])


def test_texts_of_very_different_lengths_do_not_share_a_run(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_tokens=10_000), text_cost=tokens_of)

    async def scenario() -> None:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["t10-first"]))
        await started(fake)
        calls = [asyncio.create_task(batcher.submit([text])) for text in ("t10-a", "t500-long", "t12-b")]
        await settle()
        fake.release()
        await asyncio.gather(first, *calls)
        await batcher.close()

    run(scenario())
    assert fake.batches[1:] == [["t10-a", "t12-b"], ["t500-long"]]


def test_a_queue_full_of_tokens_or_calls_refuses_at_once(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    limits = BatchLimits(max_queue_tokens=350, max_calls_in_flight=4)
    batcher = AdaptiveBatcher("m", fake, executor, limits, text_cost=tokens_of)

    async def scenario() -> None:
        fake.hold()
        running = asyncio.create_task(batcher.submit(["t1000-big"]))  # over the budget, but the queue was empty
        await started(fake)
        # Over an express run's tokens: it waits beside the wide run in progress, in the queue.
        queued = asyncio.create_task(batcher.submit(["t300-queued"]))
        await settle()
        assert batcher.queued_tokens == 300
        with pytest.raises(OverloadedError, match="max_queue_tokens=350"):
            await batcher.submit(["t100-refused"])
        small = [asyncio.create_task(batcher.submit([f"t10-{i}"])) for i in range(2)]
        await settle()
        assert batcher.calls_in_flight == 4
        with pytest.raises(OverloadedError, match="max_calls_in_flight=4"):
            await batcher.submit(["t1-refused"])
        fake.release()
        await asyncio.gather(running, queued, *small)
        await batcher.submit(["t100-admitted-again"])
        await batcher.close()

    run(scenario())
    assert not [text for batch in fake.batches for text in batch if "refused" in text]


def test_a_call_that_cannot_meet_its_deadline_is_refused_before_it_runs(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor, text_cost=tokens_of)
    batcher.run_cost.observe(tokens=1000, seconds=10.0)  # measured: 10 ms per token

    async def scenario() -> None:
        fake.hold()
        running = asyncio.create_task(batcher.submit(["t1-running"]))
        await started(fake)
        queued = asyncio.create_task(batcher.submit(["t100-queued"]))
        await settle()
        # 50 tokens (0.5 s) of its own work plus 50 of the queued call's, with 0.3 s left: hopeless.
        with pytest.raises(DeadlineExceededError, match="cannot finish this call before its deadline"):
            await batcher.submit(["t50-hopeless"], deadline=time.monotonic() + 0.3)
        fake.release()
        await asyncio.gather(running, queued)
        await batcher.close()

    run(scenario())
    assert "t50-hopeless" not in [text for batch in fake.batches for text in batch]


def test_a_call_spread_over_runs_is_answered_by_one_version_across_a_swap(executor: ThreadPoolExecutor) -> None:
    current = {"version": "1"}
    pins: list[object] = []

    def versioned_run(texts: list[str], pin: object) -> BatchOutput[str]:
        pins.append(pin)
        version = str(pin) if pin is not None else current["version"]
        current["version"] = "2"  # a new version is swapped in as soon as the first run has taken version 1
        return BatchOutput(version, [f"{text}@v{version}" for text in texts], pin=version)

    fake = GatedRun(wrapped=versioned_run)
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=2))
    bulk_texts = [f"bulk{i}" for i in range(6)]

    async def scenario() -> tuple[BatchOutput[Any], BatchOutput[Any]]:
        fake.hold()
        bulk = asyncio.create_task(batcher.submit(bulk_texts))
        await started(fake)
        fresh = asyncio.create_task(batcher.submit(["fresh"]))
        await settle()
        fake.release()
        outputs = await asyncio.gather(bulk, fresh)
        await batcher.close()
        return outputs[0], outputs[1]

    bulk, fresh = run(scenario())
    assert bulk.version == "1" and list(bulk.rows) == [f"{text}@v1" for text in bulk_texts]
    assert fresh.version == "2" and list(fresh.rows) == ["fresh@v2"]
    assert ["fresh"] in fake.batches  # the fresh call ran on its own, not in a run pinned to version 1


# --- over gRPC, real server and real ONNX Runtime model ------------------------------------------------------------


def test_grpc_admission_refusals_are_immediate_and_carry_their_codes(artifacts: dict[str, Path]) -> None:
    with running_server(models=[f"bert={artifacts['bert']}"], drain_period_s=0) as server:
        assert server.server is not None
        batcher = server.server.table.get("bert").batcher
        gate = GatedRun(wrapped=batcher._run_batch)
        batcher._run_batch = gate  # type: ignore[assignment]
        batcher.limits = BatchLimits(max_queue_tokens=20)
        # As if the warm-up had measured one second per token: a short deadline is hopeless.
        batcher.run_cost.calibrate([MeasuredRun(1, 1, 1.0), MeasuredRun(1, 100, 100.0), MeasuredRun(4, 10, 40.0)])
        gate.hold()
        with InferenceClient(server.target) as client:
            held = asyncio.run_coroutine_threadsafe(batcher.submit(["the market rallied"]), server.loop)
            gate.wait_started()
            queued = asyncio.run_coroutine_threadsafe(batcher.submit(["stocks fell"]), server.loop)
            end = time.monotonic() + WAIT_S
            while batcher.queued_texts < 1:
                assert time.monotonic() < end
                time.sleep(0.005)
            with pytest.raises(InferenceError) as exhausted:
                client.classify("bert", ["a long text " * 20])
            assert exhausted.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_queue_tokens=20" in exhausted.value.details
            with pytest.raises(InferenceError) as hopeless:
                client.classify("bert", ["short"], timeout=5)
            assert hopeless.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "cannot finish this call before its deadline" in hopeless.value.details
            gate.release()
            assert len(held.result(WAIT_S).rows) == 1 and len(queued.result(WAIT_S).rows) == 1
        assert gate.batches == [["the market rallied"], ["stocks fell"]]


def holding_long_runs(release_long: threading.Event, batches: list[list[str]]) -> RunBatch[str]:
    """A fake `run_batch` that records every run and holds runs with a "t1000-..." text until `release_long`."""

    def run_batch(texts: list[str], pin: object) -> BatchOutput[str]:
        batches.append(list(texts))
        if any(text.startswith("t1000") for text in texts):
            assert release_long.wait(WAIT_S), "the test never released the long run"
        return BatchOutput("v1", [f"row:{text}" for text in texts])

    return run_batch


def test_a_short_call_runs_beside_a_long_run_instead_of_waiting_for_it(executor: ThreadPoolExecutor) -> None:
    release_long = threading.Event()
    batches: list[list[str]] = []
    run_batch = holding_long_runs(release_long, batches)
    batcher = AdaptiveBatcher("m", run_batch, executor, BatchLimits(max_batch_tokens=8192), text_cost=tokens_of)

    async def scenario() -> None:
        bulk = asyncio.create_task(batcher.submit([f"t1000-{i}" for i in range(8)]))
        while not batches:
            await asyncio.sleep(0.001)
        short = await asyncio.wait_for(batcher.submit(["t5-short"]), WAIT_S)  # answered while the long run is held
        assert list(short.rows) == ["row:t5-short"] and not bulk.done()
        release_long.set()
        await bulk
        await batcher.close()

    try:
        run(scenario())
    finally:
        release_long.set()
    assert batches == [[f"t1000-{i}" for i in range(8)], ["t5-short"]]
