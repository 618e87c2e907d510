"""Issue 25, item 2: overload is shed in the gRPC core before any Python runs (`max_concurrent_rpcs`, sized from the
batchers by default), an overloaded model's RESOURCE_EXHAUSTED carries a retry pushback, and the project's client
retries RESOURCE_EXHAUSTED after that pushback, or after a jittered back-off, a bounded number of times: never a
hot loop."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from ortserve.client import InferenceClient, InferenceError, RetryPolicy
from ortserve.server.batcher import BatchLimits
from ortserve.server.interceptors.error_status import PUSHBACK_MS, PUSHBACK_TRAILER
from ortserve.server.settings import RPC_HEADROOM, ServerSettings
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import running_server
from .test_batcher import WAIT_S, GatedRun


def test_the_default_rpc_limit_is_sized_from_the_batchers(artifacts: dict[str, Path]) -> None:
    settings = ServerSettings(
        models=[f"a={artifacts['bert']}", f"b={artifacts['bert']}?max_batch_size=8&concurrent_runs=1"],
        concurrent_runs=2,
    )
    assert settings.concurrent_rpc_limit() == RPC_HEADROOM + 2 * (3 * 32 + 2 * 8)
    assert ServerSettings(models=[], max_concurrent_rpcs=7).concurrent_rpc_limit() == 7


@pytest.fixture
def held_server(artifacts: dict[str, Path]) -> Iterator[tuple[object, GatedRun]]:
    """A server whose model's runs wait for `gate.release()`, with one call held in a run."""
    with running_server(models=[f"bert={artifacts['bert']}"], max_concurrent_rpcs=3) as server:
        assert server.server is not None
        batcher = server.server.table.get("bert").batcher
        gate = GatedRun(wrapped=batcher._run_batch)
        batcher._run_batch = gate  # type: ignore[assignment]
        gate.hold()
        held = asyncio.run_coroutine_threadsafe(batcher.submit(["the market rallied"]), server.loop)
        gate.wait_started()
        try:
            yield server, gate
        finally:
            gate.release()
            held.result(WAIT_S)


def test_calls_past_the_rpc_limit_are_refused_by_the_grpc_core(held_server) -> None:  # type: ignore[no-untyped-def]
    server, gate = held_server
    no_retries = [("grpc.enable_retries", 0)]
    with grpc.insecure_channel(server.target, options=no_retries) as channel:
        stub = pb_grpc.InferenceStub(channel)
        in_progress = [
            stub.Classify.future(pb.ClassifyRequest(model="bert", texts=[f"t{i}"]), timeout=60) for i in (1, 2, 3)
        ]
        batcher = server.server.table.get("bert").batcher
        end = time.monotonic() + WAIT_S
        while batcher.calls_in_flight < 4:  # the held call and the three RPCs, all in progress
            assert time.monotonic() < end
            time.sleep(0.005)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Classify(pb.ClassifyRequest(model="bert", texts=["one too many"]), timeout=WAIT_S)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The core's own refusal: no request id, so none of ortserve's interceptors ran for it.
        assert "request id" not in refused.value.details()
        gate.release()
        assert all(len(call.result(WAIT_S).results) == 1 for call in in_progress)


def test_an_overloaded_model_sends_a_jittered_retry_pushback(held_server) -> None:  # type: ignore[no-untyped-def]
    server, gate = held_server
    batcher = server.server.table.get("bert").batcher
    batcher.limits = BatchLimits(max_queue_tokens=20)
    queued = asyncio.run_coroutine_threadsafe(batcher.submit(["stocks fell"]), server.loop)
    end = time.monotonic() + WAIT_S
    while batcher.queued_texts < 1:
        assert time.monotonic() < end
        time.sleep(0.005)
    pushbacks = set()
    with grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)]) as channel:
        stub = pb_grpc.InferenceStub(channel)
        for _ in range(8):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Classify(pb.ClassifyRequest(model="bert", texts=["a long text " * 20]), timeout=30)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_queue_tokens=20" in refused.value.details()
            pushbacks.add(int(dict(refused.value.trailing_metadata())[PUSHBACK_TRAILER]))
    gate.release()
    queued.result(WAIT_S)
    assert all(PUSHBACK_MS[0] <= value <= PUSHBACK_MS[1] for value in pushbacks)
    assert len(pushbacks) > 1  # drawn at random: refused callers do not come back together


def _nice_by_thread() -> dict[int, int]:
    """The nice value of each thread of this process, by its native id (Linux /proc)."""
    values = {}
    for task in Path("/proc/self/task").iterdir():
        stat = (task / "stat").read_text()
        values[int(task.name)] = int(stat[stat.rindex(")") + 2 :].split()[16])
    return values


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have priorities of their own on Linux only")
def test_model_threads_run_below_the_event_loop(artifacts: dict[str, Path]) -> None:
    # 7: a value no other server of the test session uses, so the threads found are this server's.
    with running_server(models=[f"bert={artifacts['bert']}"], model_thread_nice=7, intra_op_threads=2) as server:
        assert server.server is not None
        base = os.getpriority(os.PRIO_PROCESS, 0)

        async def loop_priority() -> int:
            return os.getpriority(os.PRIO_PROCESS, 0)

        batcher = server.server.table.get("bert").batcher
        run_batch = batcher._run_batch
        run_priorities: list[int] = []

        def recording(texts: list[str], pin: object = None) -> object:
            run_priorities.append(os.getpriority(os.PRIO_PROCESS, 0))
            return run_batch(texts, pin)

        batcher._run_batch = recording  # type: ignore[assignment]
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            response = stub.Classify(pb.ClassifyRequest(model="bert", texts=["x"]), timeout=30)
        assert len(response.results) == 1
        assert server.call(loop_priority()) == base  # the loop, which takes and refuses calls, keeps its priority
        assert run_priorities == [min(19, base + 7)]
        # ONNX Runtime's own pool threads (not Python threads) were started by a lowered thread and inherit it.
        python_threads = {thread.native_id for thread in threading.enumerate()}
        lowered = {tid for tid, nice in _nice_by_thread().items() if nice == min(19, base + 7)}
        assert lowered - python_threads


class Refusing(pb_grpc.InferenceServicer):
    """Refuses the first `refusals` calls with RESOURCE_EXHAUSTED (with `pushback_ms` as the pushback trailer, or
    none, as the gRPC core's concurrency limit does), then answers; records when each attempt arrived."""

    def __init__(self, refusals: int, pushback_ms: int | None):
        self.refusals = refusals
        self.pushback_ms = pushback_ms
        self.arrivals: list[float] = []

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.refusals:
            if self.pushback_ms is not None:
                context.set_trailing_metadata(((PUSHBACK_TRAILER, str(self.pushback_ms)),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded")
        result = pb.Classification(labels=[pb.LabelScore(label="a", score=1.0)])
        return pb.ClassifyResponse(model=request.model, model_version="1", results=[result] * len(request.texts))


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, list[Refusing]]]:
    """A plain gRPC server on loopback whose Inference servicer is swapped per test (see `Refusing`)."""
    servicers: list[Refusing] = []

    class Delegate(pb_grpc.InferenceServicer):
        def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
            return servicers[-1].Classify(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_InferenceServicer_to_server(Delegate(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicers
    finally:
        server.stop(0)


def test_the_client_retries_after_the_servers_pushback(refusing_server) -> None:  # type: ignore[no-untyped-def]
    target, servicers = refusing_server
    servicers.append(Refusing(refusals=2, pushback_ms=300))
    with InferenceClient(target) as client:
        (result,) = client.classify("m", ["x"], timeout=30)
    assert result.labels[0].label == "a"
    arrivals = servicers[-1].arrivals
    assert len(arrivals) == 3
    # gRPC waited at least the pushback between attempts (a lower bound: a loaded machine only waits longer).
    assert all(later - earlier >= 0.29 for earlier, later in zip(arrivals, arrivals[1:], strict=False))


def test_without_pushback_the_client_backs_off_a_bounded_number_of_times(refusing_server) -> None:  # type: ignore[no-untyped-def]
    target, servicers = refusing_server
    servicers.append(Refusing(refusals=100, pushback_ms=None))
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.2, max_backoff_s=0.2)
    with InferenceClient(target, retry=policy) as client:
        with pytest.raises(InferenceError) as refused:
            client.classify("m", ["x"], timeout=30)
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    arrivals = servicers[-1].arrivals
    assert len(arrivals) == 4  # max_attempts, not a hot loop until the deadline
    assert arrivals[-1] - arrivals[0] > 0  # jittered waits between attempts


def test_a_caller_error_is_not_retried(refusing_server) -> None:  # type: ignore[no-untyped-def]
    target, servicers = refusing_server

    class Invalid(Refusing):
        def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
            self.arrivals.append(time.monotonic())
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")

    servicers.append(Invalid(0, None))
    with InferenceClient(target) as client, pytest.raises(InferenceError):
        client.classify("m", ["x"], timeout=30)
    assert len(servicers[-1].arrivals) == 1
