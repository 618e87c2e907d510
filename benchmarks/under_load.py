"""Behaviour under load (issue 10): cost per text, a noisy neighbour, an overload sweep, and a rolling restart.

    python -m benchmarks.under_load [--work benchmarks/work] [--out benchmarks/work/results] [--quick] [--model minilm]

Part of `make bench` (benchmarks/run.py calls `measure`); alone it writes under-load.json, under-load.md and
under-load.png to --out. Every server runs as its own process on 127.0.0.1; every load is bounded by a duration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from ortserve.client.errors import retry_pushback_s
from ortserve.contract.artifact import TOKENIZER_FILE
from ortserve.server.healthcheck import wait_until_serving
from ortserve.server.runtime import OnnxClassifier, SessionConfig
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .load import LOOPBACK
from .models import BenchModel, build_models
from .paths import RESULTS, WORK
from .processes import free_port, ortserve_process, serve_command
from .texts import make_texts
from .under_load_report import write

log = logging.getLogger("benchmarks.under_load")

SWEEP_CALLERS = (1, 8, 32, 64, 128, 256, 500)
SWEEP_DEADLINE_S = 0.5
SWEEP_ROUNDS = 3
BULK_TEXTS, BULK_CHARS = 256, 10_000
#: The server's default max_batch_tokens: a call of this many max-length texts is one full-budget run.
BUDGET_TOKENS = 8192
REFUSED = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def long_text(words: Sequence[str], chars: int, seed: int) -> str:
    rng = random.Random(seed)
    text = ""
    while len(text) < chars:
        text += rng.choice(words) + " "
    return text[:chars]


# --- cost per text -------------------------------------------------------------------------------------------------


def cost_per_text(model: BenchModel, fixed: Sequence[str], rounds: int = 20) -> dict[str, Any]:
    """In process: one 10,000-character text against one text of exactly max-length tokens, through the runtime
    (cut before tokenizing), and what tokenizing the whole 10,000 characters costs (the old path)."""
    from tokenizers import Tokenizer

    classifier = OnnxClassifier.load(model.artifact, SessionConfig())
    # The old path: the artifact's tokenizer truncating at max_length, given the whole text (no cut first).
    tokenizer = Tokenizer.from_file(str(model.artifact / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=classifier.max_length)
    words = " ".join(fixed).split()
    huge = long_text(words, BULK_CHARS, 1)
    # The longest prefix of `huge` (whole words) that still fits in max_length tokens: a max-length text.
    encoding = tokenizer.encode(huge)
    fitting = (
        huge[: encoding.offsets[classifier.max_length - 2][1]] if len(encoding.ids) >= classifier.max_length else huge
    )

    def timed(action: Any, repeats: int = rounds) -> float:
        action()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            action()
            samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    return {
        "max_length": classifier.max_length,
        "max_length_text_chars": len(fitting),
        "tokenize_10k_ms": timed(lambda: classifier.tokenize([huge])),
        "tokenize_max_length_ms": timed(lambda: classifier.tokenize([fitting])),
        "tokenize_10k_whole_ms": timed(lambda: tokenizer.encode_batch_fast([huge])),
        "classify_10k_ms": timed(lambda: classifier.probabilities([huge])),
        "classify_max_length_ms": timed(lambda: classifier.probabilities([fitting])),
        "tokenize_256x10k_ms": timed(lambda: classifier.tokenize([huge] * BULK_TEXTS), repeats=3),
        "tokenize_256x10k_whole_ms": timed(lambda: tokenizer.encode_batch_fast([huge] * BULK_TEXTS), repeats=3),
    }


# --- noisy neighbour -----------------------------------------------------------------------------------------------


async def _interactive(
    stub: Any, model: str, texts: Sequence[str], seconds: float, max_calls: int, think_s: float = 0.0
) -> list[float]:
    """One short text per call; between calls a random think time (exponential, mean `think_s`; 0: back to back)."""
    latencies: list[float] = []
    end = time.monotonic() + seconds
    index = 0
    rng = random.Random(3)
    while time.monotonic() < end and len(latencies) < max_calls:
        start = time.perf_counter()
        await stub.Classify(pb.ClassifyRequest(model=model, texts=[texts[index % len(texts)]]), timeout=60)
        latencies.append((time.perf_counter() - start) * 1000)
        index += 1
        if think_s:
            await asyncio.sleep(rng.expovariate(1 / think_s))
    return latencies


def noisy_neighbour(
    port: int, model: str, fixed: Sequence[str], bulk_text: str, seconds: float, think_s: float = 1.0
) -> dict[str, Any]:
    """An interactive caller (one short text per call, a think time of `think_s` on average between calls) alone,
    then beside two bulk callers that send 256 texts of 10,000 characters back to back; and one full-budget run
    (8,192 tokens) on the idle server, in the same run. Then the same caller with no think time, for comparison: a
    caller that sends its next call the moment the last is answered arrives just as the next bulk run starts, and
    so waits for about one whole run every time."""

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            await _interactive(stub, model, fixed, 5, 5)  # warm-up
            idle = await _interactive(stub, model, fixed, seconds / 2, 60, think_s=0.05)
            budget_texts = [bulk_text] * (BUDGET_TOKENS // 512)
            full_runs = []
            for _ in range(5):
                start = time.perf_counter()
                await stub.Classify(pb.ClassifyRequest(model=model, texts=budget_texts), timeout=120)
                full_runs.append((time.perf_counter() - start) * 1000)
            stop = asyncio.Event()
            bulk_latencies: list[float] = []
            bulk_errors: list[str] = []

            async def bulk() -> None:
                while not stop.is_set():
                    start = time.perf_counter()
                    try:
                        await stub.Classify(
                            pb.ClassifyRequest(model=model, texts=[bulk_text] * BULK_TEXTS), timeout=300
                        )
                        bulk_latencies.append((time.perf_counter() - start) * 1000)
                    except grpc.aio.AioRpcError as error:
                        bulk_errors.append(error.code().name)
                        await asyncio.sleep(0.1)

            bulk_tasks = [asyncio.create_task(bulk()) for _ in range(2)]
            await asyncio.sleep(1.0)  # both bulk callers are queued and running
            loaded = await _interactive(stub, model, fixed, seconds, 10_000, think_s=think_s)
            back_to_back = await _interactive(stub, model, fixed, seconds / 2, 10_000)
            stop.set()
            for task in bulk_tasks:  # a bulk call takes minutes: cancel it (the server drops its queued texts)
                task.cancel()
            await asyncio.gather(*bulk_tasks, return_exceptions=True)
            return {
                "idle_p50_ms": statistics.median(idle),
                "idle_calls": len(idle),
                "full_budget_run_ms": statistics.median(full_runs),
                "interactive_p50_ms": statistics.median(loaded),
                "interactive_p99_ms": _percentile(loaded, 99),
                "interactive_calls": len(loaded),
                "seconds": seconds,
                "think_s": think_s,
                "back_to_back_p50_ms": statistics.median(back_to_back),
                "back_to_back_calls": len(back_to_back),
                "bulk_calls": len(bulk_latencies),
                "bulk_p50_ms": statistics.median(bulk_latencies) if bulk_latencies else float("nan"),
                "bulk_errors": bulk_errors,
            }

    return asyncio.run(main())


# --- overload sweep ------------------------------------------------------------------------------------------------


def overload_level(
    port: int,
    model: str,
    texts: Sequence[str],
    callers: int,
    seconds: float,
    deadline_s: float = SWEEP_DEADLINE_S,
    warmup_s: float = 1.0,
) -> dict[str, Any]:
    """`callers` closed-loop callers, one text per call, each call with a `deadline_s` timeout. A caller told
    RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED waits as the project's client tells its callers to: the server's retry
    pushback (`grpc-retry-pushback-ms`, read as `ortserve.client` reads it) when the refusal carries one, else its own
    back-off (exponential, jittered, 50 ms to 2 s, reset by an answer). A baseline server that sends no pushback for a
    refusal gets the back-off, so both trees are measured with the same callers."""

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            measure_from = time.monotonic() + warmup_s
            end = measure_from + seconds
            ok: list[float] = []
            refused: dict[str, list[float]] = {}
            by_reason: dict[str, list[float]] = {}
            other: list[str] = []
            pushbacks: list[float] = []

            async def caller(offset: int) -> None:
                backoff = 0.05
                index = offset
                while time.monotonic() < end:
                    index += 1
                    started = time.monotonic()
                    try:
                        await stub.Classify(
                            pb.ClassifyRequest(model=model, texts=[texts[index % len(texts)]]), timeout=deadline_s
                        )
                        if started >= measure_from:
                            ok.append((time.monotonic() - started) * 1000)
                        backoff = 0.05
                    except grpc.aio.AioRpcError as error:
                        if started >= measure_from:
                            if error.code() in REFUSED:
                                elapsed_ms = (time.monotonic() - started) * 1000
                                refused.setdefault(error.code().name, []).append(elapsed_ms)
                                by_reason.setdefault(refusal_reason(error), []).append(elapsed_ms)
                            else:
                                other.append(error.code().name)
                        pushback_s = retry_pushback_s(error)
                        if pushback_s is not None:  # the server said when: as the project's client does
                            if started >= measure_from:
                                pushbacks.append(pushback_s * 1000)
                            await asyncio.sleep(pushback_s)
                        else:
                            await asyncio.sleep(random.uniform(0, backoff))
                            backoff = min(2.0, backoff * 2)

            await asyncio.gather(*(caller(i * 7) for i in range(callers)))
            return {
                "callers": callers,
                "deadline_ms": deadline_s * 1000,
                "seconds": seconds,
                "answered": len(ok),
                "goodput_per_s": len(ok) / seconds,
                "p50_ms": statistics.median(ok) if ok else float("nan"),
                "p99_ms": _percentile(ok, 99),
                "refused": {code: len(values) for code, values in refused.items()},
                "refused_p50_ms": {code: statistics.median(values) for code, values in refused.items()},
                "refused_by_reason": {reason: len(values) for reason, values in by_reason.items()},
                "refused_by_reason_p50_ms": {reason: statistics.median(values) for reason, values in by_reason.items()},
                "other_errors": len(other),
                "pushbacks": len(pushbacks),
                "pushback_p50_ms": statistics.median(pushbacks) if pushbacks else float("nan"),
            }

    return asyncio.run(main())


def refusal_reason(error: grpc.aio.AioRpcError) -> str:
    """Who refused a call, from its status and message: ortserve at admission, ortserve while forming a run (after
    queueing), the gRPC core's concurrency limit, an overloaded queue, or the client's own deadline."""
    details = error.details() or ""
    if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "rpc limit (gRPC core)" if "request id" not in details else "queue bounds"
    if "ms of work ahead" in details:
        return "admission"
    if "its next run takes" in details or "the deadline passed after" in details:
        return "while queued"
    return "client deadline"


def _median_level(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median goodput of one level, with every round's goodput beside it."""
    ordered = sorted(levels, key=lambda level: level["goodput_per_s"])
    median = dict(ordered[len(ordered) // 2])
    median["goodput_rounds"] = [level["goodput_per_s"] for level in levels]
    return median


def closed_loop_throughput(port: int, model: str, texts: Sequence[str], callers: int, seconds: float) -> float:
    """Texts/s of `callers` single-text callers with no deadline: the figure BENCHMARKS.md reports at 32 callers."""
    from .load import grpc_load

    return grpc_load(port, model, texts, callers, max_calls=int(400 * seconds), max_seconds=seconds).texts_per_s


# --- rolling restart -----------------------------------------------------------------------------------------------


def _start_replica(artifact: Path, model: str, port: int, log_file: Path, drain_s: float) -> subprocess.Popen[bytes]:
    command = serve_command(port, "--model", f"{model}={artifact}", "--drain-period-s", str(drain_s))
    with log_file.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=output)
    wait_until_serving(f"{LOOPBACK}:{port}", process, timeout=120, poll_s=0.02)
    return process


def rolling_restart(
    artifact: Path,
    model: str,
    texts: Sequence[str],
    log_file: Path,
    callers: int = 32,
    drain_s: float = 2.0,
    steady_s: float = 3.0,
) -> dict[str, Any]:
    """Two replicas behind the client's round-robin (`ipv4:A,B`), `callers` closed-loop callers; replica A gets
    SIGTERM (drain, then stop), is started again on the same port, and calls go on. Every failed call is counted."""
    from ortserve.client import AsyncInferenceClient, InferenceError

    ports = [free_port(), free_port()]
    replicas = [_start_replica(artifact, model, port, log_file, drain_s) for port in ports]
    target = "ipv4:" + ",".join(f"{LOOPBACK}:{port}" for port in ports)
    events: dict[str, float] = {}

    async def main() -> dict[str, Any]:
        codes: dict[str, int] = {}
        answered = 0
        stop = asyncio.Event()
        async with AsyncInferenceClient(target, timeout=30) as client:

            async def caller(offset: int) -> None:
                nonlocal answered
                index = offset
                while not stop.is_set():
                    index += 1
                    try:
                        await client.classify(model, [texts[index % len(texts)]])
                        answered += 1
                    except InferenceError as error:
                        codes[error.code.name] = codes.get(error.code.name, 0) + 1

            tasks = [asyncio.create_task(caller(i * 13)) for i in range(callers)]
            started = time.monotonic()
            await asyncio.sleep(steady_s)
            events["sigterm"] = time.monotonic() - started
            replicas[0].send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(replicas[0].wait, 60)
            events["stopped"] = time.monotonic() - started
            replicas[0] = await asyncio.to_thread(_start_replica, artifact, model, ports[0], log_file, drain_s)
            events["serving_again"] = time.monotonic() - started
            await asyncio.sleep(steady_s)
            stop.set()
            await asyncio.gather(*tasks)
            seconds = time.monotonic() - started
        return {
            "callers": callers,
            "drain_s": drain_s,
            "answered": answered,
            "failed": sum(codes.values()),
            "failed_by_code": codes,
            "exit_code": exit_code,
            "seconds": seconds,
            "events_s": dict(events),
            "texts_per_s": answered / seconds,
        }

    try:
        return asyncio.run(main())
    finally:
        for process in replicas:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


# --- all of it -----------------------------------------------------------------------------------------------------


def measure(models: Sequence[BenchModel], work: Path, quick: bool = False, only: str = "minilm") -> dict[str, Any]:
    """Every scenario on the model named `only` (the fastest: its overload sweep reaches saturation soonest)."""
    model = next(m for m in models if m.name == only)
    scale = 0.5 if quick else 1.0
    fixed = make_texts(model.artifact / "tokenizer.json", 512, mixed=False)
    words = " ".join(fixed).split()
    bulk_text = long_text(words, BULK_CHARS, 2)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "model": model.name,
        "load_average_at_start": os.getloadavg(),
        "sweep_deadline_s": SWEEP_DEADLINE_S,
        "sweep_rounds": SWEEP_ROUNDS,
    }
    log.info("%s: cost per text", model.name)
    results["cost_per_text"] = cost_per_text(model, fixed)
    with ortserve_process({model.name: model.artifact}, logs / "under-load.log", ["--drain-period-s", "0"]) as server:
        log.info("%s: noisy neighbour", model.name)
        results["noisy_neighbour"] = noisy_neighbour(server.port, model.name, fixed, bulk_text, 30 * scale)
        log.info("%s: 32 single-text callers, no deadline", model.name)
        results["throughput_32_callers"] = closed_loop_throughput(server.port, model.name, fixed, 32, 8 * scale)
        rounds: dict[int, list[dict[str, Any]]] = {callers: [] for callers in SWEEP_CALLERS}
        for round_ in range(SWEEP_ROUNDS):  # levels alternate round by round: background load falls on all alike
            for callers in SWEEP_CALLERS:
                log.info("%s: overload sweep, round %d, %d callers", model.name, round_ + 1, callers)
                rounds[callers].append(overload_level(server.port, model.name, fixed, callers, 3 * scale))
                log.info("  %s", rounds[callers][-1])
        results["sweep"] = [_median_level(levels) for levels in rounds.values()]
    log.info("%s: rolling restart of one of two replicas under 32 callers", model.name)
    results["rolling_restart"] = rolling_restart(
        model.artifact, model.name, fixed, logs / "under-load.log", steady_s=3 * scale
    )
    results["load_average_at_end"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="minilm")
    parser.add_argument(
        "--baseline-32",
        type=float,
        default=None,
        help="texts/s of 32 single-text callers before this change (default: under_load_report.BEFORE_32_CALLERS)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    models, _ = build_models(args.work)
    results = measure(models, args.work, args.quick, args.model)
    print(write(results, args.out, args.baseline_32))  # the one import of reporting: measuring never needs it
    return 0


if __name__ == "__main__":
    sys.exit(main())
