"""Concurrent runs of one model (`concurrent_runs`): runs side by side, when a second run starts, one version per call,
and a clean close. Driven with the gated fake model of test_batcher (no sleeping, no timing asserts)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ortserve.server.batcher import AdaptiveBatcher, BatchLimits, BatchOutput
from ortserve.server.settings import ServerSettings, available_cores

from .test_batcher import WAIT_S, GatedRun, run, settle, started
from .test_load_batching import holding_long_runs, tokens_of


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def test_two_runs_of_one_model_run_at_the_same_time(executor: ThreadPoolExecutor) -> None:
    # Each run waits at a barrier for the other: with one run at a time the barrier breaks and both calls fail.
    barrier = threading.Barrier(2, timeout=WAIT_S)

    def meet(texts: list[str], pin: object) -> BatchOutput[str]:
        barrier.wait()
        return BatchOutput("v1", [f"row:{text}" for text in texts])

    fake = GatedRun(wrapped=meet)
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=2, concurrent_runs=2))

    async def scenario() -> list[BatchOutput[Any]]:
        first = asyncio.create_task(batcher.submit(["a", "b"]))
        await started(fake)
        second = asyncio.create_task(batcher.submit(["c", "d"]))  # a full share of a batch: runs beside the first
        outputs = list(await asyncio.gather(first, second))
        await batcher.close()
        return outputs

    first, second = run(scenario())
    assert list(first.rows) == ["row:a", "row:b"] and list(second.rows) == ["row:c", "row:d"]
    assert fake.batches == [["a", "b"], ["c", "d"]]


def test_a_free_slot_waits_for_a_share_of_a_batch_while_another_run_is_in_progress(
    executor: ThreadPoolExecutor,
) -> None:
    fake = GatedRun()
    # A share is max_batch_size / concurrent_runs = 2 texts.
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=4, concurrent_runs=2))

    async def scenario() -> None:
        fake.hold()
        first = asyncio.create_task(batcher.submit(["a"]))
        await started(fake)  # an idle model runs a lone text at once
        second = asyncio.create_task(batcher.submit(["b"]))
        await settle()
        assert fake.batches == [["a"]]  # one text is not worth a run of its own beside the run in progress
        third = asyncio.create_task(batcher.submit(["c"]))
        await started(fake)  # two texts are: the free slot takes them while the first run is still held
        assert fake.batches == [["a"], ["b", "c"]]
        fake.release()
        await asyncio.gather(first, second, third)
        await batcher.close()

    run(scenario())


def test_a_call_is_answered_by_one_version_when_its_texts_could_run_side_by_side(executor: ThreadPoolExecutor) -> None:
    current = {"version": "1"}

    def versioned_run(texts: list[str], pin: object) -> BatchOutput[str]:
        version = str(pin) if pin is not None else current["version"]
        current["version"] = "2"  # a new version is swapped in as soon as the first run has taken version 1
        return BatchOutput(version, [f"{text}@v{version}" for text in texts], pin=version)

    fake = GatedRun(wrapped=versioned_run)
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=2, concurrent_runs=3))
    bulk_texts = [f"bulk{i}" for i in range(6)]

    async def scenario() -> BatchOutput[Any]:
        fake.hold()
        bulk = asyncio.create_task(batcher.submit(bulk_texts))
        await started(fake)
        await settle()
        # Free slots, but until a run has answered, the call's version is unknown: its other texts wait for it.
        assert fake.batches == [["bulk0", "bulk1"]]
        fake.release()
        output = await bulk
        await batcher.close()
        return output

    bulk = run(scenario())
    assert bulk.version == "1" and list(bulk.rows) == [f"{text}@v1" for text in bulk_texts]
    assert len(fake.batches) == 3


def test_close_waits_for_every_run_in_progress(executor: ThreadPoolExecutor) -> None:
    fake = GatedRun()
    batcher = AdaptiveBatcher("m", fake, executor, BatchLimits(max_batch_size=2, concurrent_runs=2))

    async def scenario() -> list[BatchOutput[Any]]:
        fake.hold()
        calls = [asyncio.create_task(batcher.submit([f"{name}1", f"{name}2"])) for name in "ab"]
        await started(fake)
        await started(fake)
        closing = asyncio.create_task(batcher.close())
        await settle()
        assert not closing.done()  # both runs are still held
        fake.release()
        await closing
        return await asyncio.gather(*calls)

    outputs = run(scenario())
    assert [list(o.rows) for o in outputs] == [["row:a1", "row:a2"], ["row:b1", "row:b2"]]


def test_concurrent_runs_default_to_two_where_there_are_two_cores() -> None:
    expected = 2 if available_cores() >= 2 else 1
    assert ServerSettings().runs_per_model() == expected
    assert ServerSettings(concurrent_runs=3).runs_per_model() == 3
    with pytest.raises(ValueError, match="concurrent_runs"):
        BatchLimits(concurrent_runs=0)


def test_beside_a_long_run_no_second_long_run_starts_and_a_short_call_takes_the_express_lane(
    executor: ThreadPoolExecutor,
) -> None:
    # A long run keeps every core busy: two bulk calls must not hold both slots, or a short call that arrives then
    # would share the cores with two long runs.
    release_long = threading.Event()
    batches: list[list[str]] = []
    run_batch = holding_long_runs(release_long, batches)
    limits = BatchLimits(max_batch_tokens=8192, concurrent_runs=2)
    batcher = AdaptiveBatcher("m", run_batch, executor, limits, text_cost=tokens_of)

    async def scenario() -> None:
        first = asyncio.create_task(batcher.submit([f"t1000-a{i}" for i in range(8)]))
        while not batches:
            await asyncio.sleep(0.001)
        second = asyncio.create_task(batcher.submit([f"t1000-b{i}" for i in range(8)]))
        await settle()
        assert len(batches) == 1  # the second bulk call waits for the long run, although a slot is free
        short = await asyncio.wait_for(batcher.submit(["t5-short"]), WAIT_S)  # answered while the long run is held
        assert list(short.rows) == ["row:t5-short"] and not first.done()
        release_long.set()
        await asyncio.gather(first, second)
        await batcher.close()

    try:
        run(scenario())
    finally:
        release_long.set()
    assert batches[:2] == [[f"t1000-a{i}" for i in range(8)], ["t5-short"]]
