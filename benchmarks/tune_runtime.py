"""ONNX Runtime session settings measured side by side: `python -m benchmarks.tune_runtime` (also run by `make bench`).

Part 1 varies one setting at a time from a baseline (intra-op threads, spinning, memory arena, graph optimization
level) and measures single-text latency and batch-of-32 throughput; configurations are interleaved round by round so
that load from other processes on a shared machine falls on all of them alike. Part 2 runs two models in one process,
both busy at once, with per-session thread pools and with one global pool (each variant in its own process, since a
global pool must be set up before the first session of a process).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ortserve.server.runtime import OnnxClassifier, SessionConfig, use_global_thread_pool

from .models import BenchModel, build_models
from .paths import RESULTS, WORK
from .runtime_report import runtime_tuning_table
from .texts import make_texts

log = logging.getLogger("benchmarks.tune")

#: Part 1: label -> settings changed from the chosen defaults (`SessionConfig()`).
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults: threads per core (2), no spinning, arena, opt all": {},
    "spinning": {"allow_spinning": True},
    "1 thread": {"intra_op_threads": 1},
    "1 thread, spinning": {"intra_op_threads": 1, "allow_spinning": True},
    "no memory arena": {"enable_cpu_mem_arena": False},
    "opt extended": {"graph_optimization_level": "extended"},
    "opt basic": {"graph_optimization_level": "basic"},
    "opt disable": {"graph_optimization_level": "disable"},
}

#: Part 2: how two models in one process share the cores.
PER_SESSION_2 = "per-session pools, 2 threads each, no spinning"
GLOBAL_POOL = "one global pool, 2 threads (its spinning cannot be turned off from Python)"
PER_SESSION_1 = "per-session pools, 1 thread each, no spinning"
TWO_MODEL_MODES = (PER_SESSION_2, GLOBAL_POOL, PER_SESSION_1)


def _latency_ms(classifier: OnnxClassifier, text: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.probabilities([text])
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _throughput(classifier: OnnxClassifier, texts: list[str], runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        classifier.probabilities(texts)
    return runs * len(texts) / (time.perf_counter() - start)


def sweep(model: BenchModel, rounds: int) -> list[dict[str, Any]]:
    """Part 1 for one model: median single-text p50 and batch-32 texts/s per variant over `rounds` rounds."""
    texts = make_texts(model.artifact / "tokenizer.json", 32, mixed=False)
    loaded = {}
    for label, change in VARIANTS.items():
        start = time.perf_counter()
        classifier = OnnxClassifier.load(model.artifact, SessionConfig(**change))
        load_s = time.perf_counter() - start
        classifier.probabilities(texts)  # warm-up: first runs allocate and plan
        loaded[label] = (classifier, load_s)
    latencies: dict[str, list[float]] = {label: [] for label in VARIANTS}
    rates: dict[str, list[float]] = {label: [] for label in VARIANTS}
    for _ in range(rounds):
        for label, (classifier, _) in loaded.items():
            latencies[label].append(statistics.median(_latency_ms(classifier, texts[0], 15)))
            rates[label].append(_throughput(classifier, texts, 2))
    return [
        {
            "model": model.name,
            "variant": label,
            "p50_ms": statistics.median(latencies[label]),
            "texts_per_s": statistics.median(rates[label]),
            "load_s": loaded[label][1],
        }
        for label in VARIANTS
    ]


def two_models(models: list[BenchModel], mode: str, seconds: float) -> dict[str, Any]:
    """Part 2 in this process: both models run batches of 32 at once for `seconds`; total texts/s, and p50 of one text
    on the smaller model while the larger is busy."""
    if mode == GLOBAL_POOL:
        use_global_thread_pool(2)  # before any session of this process, or ONNX Runtime ignores it
        config = SessionConfig(use_global_thread_pool=True)
    elif mode == PER_SESSION_2:
        config = SessionConfig(intra_op_threads=2)
    else:
        config = SessionConfig(intra_op_threads=1)
    classifiers = [OnnxClassifier.load(m.artifact, config) for m in models]
    texts = [make_texts(m.artifact / "tokenizer.json", 32, mixed=False) for m in models]
    for classifier, batch in zip(classifiers, texts, strict=True):
        classifier.probabilities(batch)
    done = [0 for _ in models]

    def busy(index: int, stop: threading.Event) -> None:
        while not stop.is_set():
            classifiers[index].probabilities(texts[index])
            done[index] += len(texts[index])

    stop = threading.Event()
    threads = [threading.Thread(target=busy, args=(i, stop)) for i in range(len(models))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    total = sum(done) / (time.perf_counter() - start)
    # Latency of one text on the small model while the big one keeps running batches of 32.
    stop = threading.Event()
    background = threading.Thread(target=busy, args=(1, stop))
    background.start()
    samples = _latency_ms(classifiers[0], texts[0][0], 40)
    stop.set()
    background.join()
    return {"mode": mode, "texts_per_s_both_busy": total, "small_p50_ms_while_big_busy": float(np.median(samples))}


def run(work: Path, rounds: int = 3, seconds: float = 6.0) -> dict[str, Any]:
    """Both parts; each part-2 variant runs in a fresh process."""
    models, _ = build_models(work)
    part1 = [row for model in models for row in sweep(model, rounds)]
    part2 = []
    for _ in range(2):  # two passes, interleaved, for the same reason as the rounds of part 1
        for mode in TWO_MODEL_MODES:
            output = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.tune_runtime",
                    "--work",
                    str(work),
                    "--two-models",
                    mode,
                    "--seconds",
                    str(seconds),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            part2.append(json.loads(output.strip().splitlines()[-1]))
    merged = []
    for mode in TWO_MODEL_MODES:
        rows = [r for r in part2 if r["mode"] == mode]
        merged.append(
            {
                "mode": mode,
                "texts_per_s_both_busy": statistics.median(r["texts_per_s_both_busy"] for r in rows),
                "small_p50_ms_while_big_busy": statistics.median(r["small_p50_ms_while_big_busy"] for r in rows),
            }
        )
    return {"sessions": part1, "two_models": merged}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--two-models", choices=TWO_MODEL_MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.two_models:
        models, _ = build_models(args.work)
        print(json.dumps(two_models(models, args.two_models, args.seconds)))
        return 0
    results = run(args.work, args.rounds, args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime-tuning.json").write_text(json.dumps(results, indent=2) + "\n")
    table = runtime_tuning_table(results)
    (args.out / "runtime-tuning.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
