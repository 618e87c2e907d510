"""Bounded closed-loop load: N concurrent callers, each sending its next request when the last one answered.

Every load is bounded twice, by a request count and by a duration, and stops by itself. Only loopback targets.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LoadResult:
    """What one load level measured."""

    callers: int
    texts_per_call: int
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def texts_per_s(self) -> float:
        return (self.calls - self.errors) * self.texts_per_call / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99(self) -> float:
        return self.percentile(99)


def merge(results: Sequence[LoadResult]) -> LoadResult:
    """One result from several rounds of the same load level: pooled latencies, summed calls and time."""
    first = results[0]
    return LoadResult(
        first.callers,
        first.texts_per_call,
        sum(r.calls for r in results),
        sum(r.errors for r in results),
        sum(r.seconds for r in results),
        [ms for r in results for ms in r.latencies_ms],
    )


def _text_batches(texts: Sequence[str], size: int, count: int) -> list[list[str]]:
    return [[texts[(i * size + j) % len(texts)] for j in range(size)] for i in range(count)]


async def _closed_loop(
    call: Callable[[list[str]], Awaitable[object]],
    texts: Sequence[str],
    callers: int,
    texts_per_call: int,
    max_calls: int,
    max_seconds: float,
    warmup_calls: int,
) -> LoadResult:
    requests = _text_batches(texts, texts_per_call, max_calls + warmup_calls)
    for request in requests[:warmup_calls]:
        await call(request)
    next_request = warmup_calls
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + max_seconds

    async def caller() -> None:
        nonlocal next_request, errors
        while next_request < len(requests) and time.monotonic() < stop_at:
            request = requests[next_request]
            next_request += 1
            start = time.perf_counter()
            try:
                await call(request)
            except Exception:  # counted, not fatal: a benchmark reports failures next to its figures
                errors += 1
                continue
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    seconds = time.perf_counter() - start
    return LoadResult(callers, texts_per_call, len(latencies) + errors, errors, seconds, latencies)


def grpc_load(
    port: int,
    model: str,
    texts: Sequence[str],
    callers: int,
    texts_per_call: int = 1,
    max_calls: int = 2000,
    max_seconds: float = 8.0,
) -> LoadResult:
    """Closed-loop Classify calls to ortserve on 127.0.0.1:`port` from one asyncio client (own event loop)."""

    async def main() -> LoadResult:
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
            stub = pb_grpc.InferenceStub(channel)

            async def call(batch: list[str]) -> object:
                return await stub.Classify(pb.ClassifyRequest(model=model, texts=batch), timeout=120)

            return await _closed_loop(call, texts, callers, texts_per_call, max_calls, max_seconds, warmup_calls=4)

    return asyncio.run(main())


def blocking_caller(
    port: int, model: str, texts: Sequence[str], max_calls: int = 200, max_seconds: float = 8.0
) -> LoadResult:
    """One blocking caller using the project's own client (`InferenceClient`): what a script or a Spark task does.

    The one-caller figures use it rather than the asyncio generator, whose event loop adds its own latency.
    """
    from ortserve.client import InferenceClient

    requests = _text_batches(texts, 1, max_calls + 4)
    latencies: list[float] = []
    errors = 0
    with InferenceClient(f"{LOOPBACK}:{port}", timeout=120) as client:
        for request in requests[:4]:
            client.classify(model, request)
        stop_at = time.monotonic() + max_seconds
        start = time.perf_counter()
        for request in requests[4:]:
            if time.monotonic() >= stop_at:
                break
            begin = time.perf_counter()
            try:
                client.classify(model, request)
            except Exception:  # counted, not fatal
                errors += 1
                continue
            latencies.append((time.perf_counter() - begin) * 1000)
        seconds = time.perf_counter() - start
    return LoadResult(1, 1, len(latencies) + errors, errors, seconds, latencies)


def http_load(
    url: str,
    texts: Sequence[str],
    callers: int,
    texts_per_call: int = 1,
    max_calls: int = 200,
    max_seconds: float = 15.0,
) -> LoadResult:
    """Closed-loop POSTs to an `mlflow models serve` /invocations endpoint on loopback, one thread per caller."""
    assert url.startswith(f"http://{LOOPBACK}:"), "benchmarks only talk to loopback"
    requests = _text_batches(texts, texts_per_call, max_calls + 2)

    def post(batch: list[str]) -> None:
        body = json.dumps({"inputs": batch}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()

    for batch in requests[:2]:
        post(batch)
    lock = threading.Lock()
    position = 2
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + max_seconds

    def caller() -> None:
        nonlocal position, errors
        while time.monotonic() < stop_at:
            with lock:
                if position >= len(requests):
                    return
                batch = requests[position]
                position += 1
            start = time.perf_counter()
            try:
                post(batch)
            except Exception:
                with lock:
                    errors += 1
                continue
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return LoadResult(callers, texts_per_call, len(latencies) + errors, errors, seconds, latencies)
