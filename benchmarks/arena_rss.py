"""Resident memory after max-length bursts, by ONNX Runtime memory option (issue 25): does RSS come back near its idle
level once the long texts are gone?

    python -m benchmarks.arena_rss [--model minilm] [--bursts 5] [--batch 16] [--length 512]

Each option runs in a fresh process (ONNX Runtime's environment, and the shared arena, are process-wide): load the
model with the server's session options (`SessionConfig`), note RSS (idle), run `--bursts` batches of `--batch` texts
of `--length` tokens (the most `--max-batch-tokens` 8192 lets through at 512 tokens), then 50 one-text calls of 16
tokens (the traffic after the burst), and note RSS again (after) and its peak (VmHWM), with the p50 of the small
calls and of the bursts. Options: the per-session arena (ONNX Runtime's default), the arena shared by every session
(the server's default, `--shared-arena`), each with arena shrinkage after every run (run option
`memory.enable_memory_arena_shrinkage`), and no arena (`enable_cpu_mem_arena` off). Writes
benchmarks/work/results/arena_rss.json.

    python -m benchmarks.arena_rss --shrink-cost [--calls 1000]

measures what shrinkage costs a short call, in one session, calls with and without the run option alternating (so
that both see the same machine load): p50 of each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Any

from .models import build_models
from .paths import RESULTS, WORK
from .processes import rss_mb

#: name -> (arena on, shared arena registered, shrink after every run)
OPTIONS = {
    "per-session arena": (True, False, False),
    "per-session arena + shrinkage": (True, False, True),
    "shared arena (server default)": (True, True, False),
    "shared arena + shrinkage": (True, True, True),
    "no arena": (False, False, False),
}
SMALL_CALLS = 50


def measure(model_path: str, arena: bool, shared: bool, shrink: bool, bursts: int, batch: int, length: int) -> dict:
    """In this (fresh) process: RSS idle, after the bursts and the small calls, peak; p50 of both kinds of run."""
    import os

    import numpy as np
    import onnxruntime as ort

    from ortserve.server.runtime import SessionConfig

    if shared:  # what the server's `--shared-arena` registers (server/memory.py), before the first session
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 0, -1, -1))
    options = SessionConfig(enable_cpu_mem_arena=arena).session_options()
    if shared:
        options.add_session_config_entry("session.use_env_allocators", "1")
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    run_options = ort.RunOptions()
    if shrink:
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    rng = np.random.default_rng(0)

    def inputs(rows: int, tokens: int) -> dict[str, Any]:
        ids = rng.integers(1000, 20000, size=(rows, tokens), dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    def timed(feed: dict[str, Any]) -> float:
        start = time.perf_counter()
        session.run(None, feed, run_options)
        return (time.perf_counter() - start) * 1000

    for _ in range(5):
        timed(inputs(1, 16))
    idle, _ = rss_mb(os.getpid())
    burst_ms = [timed(inputs(batch, length)) for _ in range(bursts)]
    small_ms = [timed(inputs(1, 16)) for _ in range(SMALL_CALLS)]
    time.sleep(1.0)
    after, peak = rss_mb(os.getpid())
    return {
        "idle_mb": round(idle),
        "peak_mb": round(peak),
        "after_mb": round(after),
        "after_minus_idle_mb": round(after - idle),
        "burst_p50_ms": round(statistics.median(burst_ms), 1),
        "small_p50_ms": round(statistics.median(small_ms), 2),
    }


def shrink_cost(model_path: str, calls: int) -> dict[str, float]:
    """p50 ms of one-text runs (16 tokens) with and without arena shrinkage, alternating in one session."""
    import numpy as np
    import onnxruntime as ort

    from ortserve.server.runtime import SessionConfig

    session = ort.InferenceSession(model_path, SessionConfig().session_options(), providers=["CPUExecutionProvider"])
    shrinking = ort.RunOptions()
    shrinking.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    plain = ort.RunOptions()
    ids = np.random.default_rng(0).integers(1000, 20000, size=(1, 16), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    seconds: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(20):
        session.run(None, feed, plain)
    for _ in range(calls):
        for name, options in (("without", plain), ("with", shrinking)):
            start = time.perf_counter()
            session.run(None, feed, options)
            seconds[name].append((time.perf_counter() - start) * 1000)
    return {f"{name}_shrinkage_p50_ms": round(statistics.median(ms), 3) for name, ms in seconds.items()}


def _child(queue: Any, *args: Any) -> None:
    queue.put(measure(*args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", choices=["minilm", "bert-base"])
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--shrink-cost", action="store_true", help="measure what shrinkage costs a short call")
    parser.add_argument("--calls", type=int, default=1000, help="calls of each kind, with --shrink-cost")
    parser.add_argument("--out", type=Path, default=RESULTS / "arena_rss.json")
    args = parser.parse_args()

    models, _ = build_models(WORK)
    model = next(m for m in models if m.name == args.model)
    if args.shrink_cost:
        print(args.model, shrink_cost(str(model.artifact / "model.onnx"), args.calls))
        return
    context = multiprocessing.get_context("spawn")
    results = {}
    for name, (arena, shared, shrink) in OPTIONS.items():
        queue = context.Queue()
        shape = (args.bursts, args.batch, args.length)
        child = context.Process(
            target=_child, args=(queue, str(model.artifact / "model.onnx"), arena, shared, shrink, *shape)
        )
        child.start()
        results[name] = queue.get(timeout=1800)
        child.join(60)
        figures = results[name]
        memory = f"idle {figures['idle_mb']:>5} MB  peak {figures['peak_mb']:>5} MB  after {figures['after_mb']:>5} MB"
        timing = f"burst p50 {figures['burst_p50_ms']} ms  1-text p50 {figures['small_p50_ms']} ms"
        print(f"{name:<32} {memory} (+{figures['after_minus_idle_mb']})  {timing}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model, "batch": args.batch, "length": args.length, "options": results}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
