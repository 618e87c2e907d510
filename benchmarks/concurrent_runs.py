"""Concurrent runs per model: one run at a time against two side by side, with and without splitting the threads,
and with ONNX Runtime's threads spinning between ops.

    python -m benchmarks.concurrent_runs [--work benchmarks/work] [--models minilm,bert-base] [--rounds 4]

For each model, four `ortserve serve` processes on the same artifact (`--concurrent-runs 1`; `--concurrent-runs 2`,
the default on 2+ cores, where the runs share the session's intra-op pool; `--concurrent-runs 2 --intra-op-threads
1`, the thread budget split into one thread per run; `--allow-spinning`, the latency-first setting) and raw ONNX
Runtime in this process (default `SessionConfig`: no spinning) are measured in alternating rounds: one blocking
caller (the project's client), and 32 single-text callers against raw ONNX Runtime's batch-of-32 throughput. Ratios
are of the same round, then their median. Writes concurrent-runs.{json,md} to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from ortserve.server.runtime import SessionConfig

from .baselines import RawOrt, batch_rate, latencies_ms
from .load import blocking_caller, grpc_load
from .models import BenchModel, build_models
from .paths import RESULTS, WORK
from .processes import ortserve_process
from .runtime_report import concurrent_runs_table
from .texts import make_texts

log = logging.getLogger(__name__)

#: label -> `ortserve serve` arguments.
VARIANTS = {
    "one run at a time": ["--concurrent-runs", "1"],
    "2 runs, shared pool (default)": ["--concurrent-runs", "2"],
    "2 runs, 1 thread each": ["--concurrent-runs", "2", "--intra-op-threads", "1"],
    "2 runs, spinning": ["--concurrent-runs", "2", "--allow-spinning"],
}


def measure_model(model: BenchModel, logs: Path, rounds: int, seconds: float) -> dict[str, Any]:
    """Paired rounds of raw ONNX Runtime and every variant on one model."""
    texts = make_texts(model.artifact / "tokenizer.json", 512, mixed=False)
    raw = RawOrt(model.artifact, SessionConfig())
    raw(texts[:32])
    figures: dict[str, dict[str, list[float]]] = {
        name: {"p50_ms": [], "texts_per_s": []} for name in ["raw ONNX Runtime", *VARIANTS]
    }
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                ortserve_process({model.name: model.artifact}, logs / f"ortserve-runs-{index}.log", args)
            )
            for index, (name, args) in enumerate(VARIANTS.items())
        }
        for round_ in range(rounds):
            log.info("%s: concurrent runs, round %d of %d", model.name, round_ + 1, rounds)
            figures["raw ONNX Runtime"]["p50_ms"].append(statistics.median(latencies_ms(raw, texts, 100)))
            figures["raw ONNX Runtime"]["texts_per_s"].append(batch_rate(raw, texts, 8))
            for name, server in servers.items():
                one = blocking_caller(server.port, model.name, texts, max_calls=150, max_seconds=seconds)
                many = grpc_load(server.port, model.name, texts, 32, max_calls=4000, max_seconds=seconds)
                figures[name]["p50_ms"].append(one.p50)
                figures[name]["texts_per_s"].append(many.texts_per_s)
    raw_figures = figures["raw ONNX Runtime"]
    summary = {}
    for name, values in figures.items():
        summary[name] = {
            "p50_ms": statistics.median(values["p50_ms"]),
            "texts_per_s": statistics.median(values["texts_per_s"]),
            "p50_over_raw_ms": statistics.median(
                a - b for a, b in zip(values["p50_ms"], raw_figures["p50_ms"], strict=True)
            ),
            "vs_raw_batch32": statistics.median(
                a / b for a, b in zip(values["texts_per_s"], raw_figures["texts_per_s"], strict=True)
            ),
            "rounds": values,
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--models", default="minilm,bert-base")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="bound of each measurement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    models, _ = build_models(args.work)
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    wanted = args.models.split(",")
    results: dict[str, Any] = {"rounds": args.rounds, "models": {}}
    for model in (m for m in models if m.name in wanted):
        results["models"][model.name] = measure_model(model, logs, args.rounds, args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrent-runs.json").write_text(json.dumps(results, indent=2) + "\n")
    text = concurrent_runs_table(results)
    (args.out / "concurrent-runs.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
