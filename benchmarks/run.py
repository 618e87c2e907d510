"""`make bench`: every system of issue 5 measured side by side in one run, on this machine.

    python -m benchmarks.run [--work benchmarks/work] [--out benchmarks/work/results] [--quick]

Builds (or reuses) the two benchmark models with random weights and the demo's two fine-tuned MiniLM-L6 models
(`demo/`, trained on first use, shared with `make demo`; `--models` picks a subset), then measures in order: (a) the
PyTorch pipeline in process, (b) raw ONNX Runtime in process, (c, d) `ortserve serve` as a separate process over
gRPC on 127.0.0.1, (e) `mlflow models serve` of the same models saved with `mlflow.transformers`, (f) resident
memory and start-to-SERVING time; then issue 10's scenarios under load, issue 25's data-plane targets next to main's
(`hostile_load`, in hostile-load.md), issue 15's result cache (off vs on) and
issue 15's server memory with the two benchmark models served from the registry (SQLite and `mlflow server`) next to
raw ONNX Runtime. Writes bench.json, bench.md (tables, and every target next to the previous round's figure from
previous_round.json) and bench.png (throughput and p99 against concurrency) to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ortserve.server.runtime import SessionConfig

from .baselines import RawOrt, TorchPipeline, batch_rate, latencies_ms, summarize
from .hostile_load import measure as measure_hostile_load
from .hostile_load_report import markdown as hostile_load_markdown
from .load import blocking_caller, grpc_load, http_load, merge
from .models import BenchModel, build_models, build_trained_models
from .observability_cost import run as measure_observability_cost
from .paths import RESULTS, WORK
from .processes import (
    mlflow_serve_process,
    ortserve_process,
    rss_mb,
    save_mlflow_transformers_model,
    torch_process_memory,
)
from .registry_memory import measure as measure_registry_memory
from .report import write_report
from .result_cache import measure_result_cache
from .start_to_serving import measure as measure_start_to_serving
from .texts import make_texts
from .under_load import measure as measure_under_load

log = logging.getLogger("benchmarks")

SINGLE_TEXT_CALLERS = (1, 8, 32, 64)
BATCH_CALLERS = (1, 8)  # callers sending 32 texts per call
KINDS = ("fixed", "mixed")
ROUNDS = 5  # rounds of the paired measurements (raw ONNX Runtime next to ortserve)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    flags = Path("/proc/cpuinfo").read_text()
    isa = [name for name in ("avx512_vnni", "avx512f", "avx_vnni", "avx2") if f" {name}" in flags]
    import onnxruntime
    import torch
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "isa": isa,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def measure(models: list[BenchModel], work: Path, quick: bool, partial: Path) -> dict[str, Any]:
    """Every measurement of the issue, in one run; `partial` gets the figures so far after each stage."""
    scale = 0.5 if quick else 1.0
    seconds = 8.0 * scale
    texts = {
        m.name: {kind: make_texts(m.artifact / "tokenizer.json", 512, mixed=kind == "mixed") for kind in KINDS}
        for m in models
    }
    results: dict[str, Any] = {"models": {}, "machine": machine(), "rounds": ROUNDS}
    for model in models:
        results["models"][model.name] = {
            "shape": {"hidden": model.hidden_size, "layers": model.layers, "heads": model.heads},
            "quantization": model.quantization(),
            "model_mb": (model.artifact / "model.onnx").stat().st_size / 1e6,
        }
    # Per round (see ROUNDS); every loop is also bounded by `seconds`, so a slow system takes fewer samples.
    calls, batches = int(60 * scale), int(6 * scale) or 1

    def save() -> None:
        partial.write_text(json.dumps(results, indent=2) + "\n")

    # Saved first so that a problem with mlflow shows in seconds, not after the rest of the run.
    mlflow_dirs = {m.name: save_mlflow_transformers_model(m.hf_dir, work / "mlflow" / m.name) for m in models}

    # (a)-(d): the PyTorch pipeline and raw ONNX Runtime in this process, ortserve as its own process serving both
    # models. Every figure a target compares is measured in short alternating rounds, so that load from other
    # processes on a shared machine falls on all systems alike.
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    artifacts = {m.name: m.artifact for m in models}
    with ortserve_process(artifacts, logs / "ortserve.log") as server:
        results["ortserve_start_to_serving_s"] = [server.start_to_serving_s]
        results["ortserve_rss_mb_loaded"] = rss_mb(server.process.pid)[0]
        for model in models:
            entry = results["models"][model.name]
            fixed, mixed = texts[model.name]["fixed"], texts[model.name]["mixed"]
            systems = {"torch": TorchPipeline(model.hf_dir), "raw_ort": RawOrt(model.artifact, SessionConfig())}
            latencies: dict[str, list[float]] = {name: [] for name in systems}
            rates: dict[str, list[float]] = {name: [] for name in systems}
            for predict in systems.values():
                predict(fixed[:32])  # warm-up
            one_caller, many_callers = [], []
            for round_ in range(ROUNDS):
                log.info("%s: PyTorch, raw ONNX Runtime and ortserve, round %d of %d", model.name, round_ + 1, ROUNDS)
                for name, predict in systems.items():
                    latencies[name] += latencies_ms(predict, fixed, calls)
                one_caller.append(blocking_caller(server.port, model.name, fixed, max_calls=calls, max_seconds=seconds))
                for name, predict in systems.items():
                    rates[name].append(batch_rate(predict, fixed, batches))
                many_callers.append(
                    grpc_load(server.port, model.name, fixed, 32, max_calls=int(2000 * scale), max_seconds=seconds)
                )
            for name, predict in systems.items():
                log.info("%s: %s on mixed-length texts", model.name, name)
                mixed_figures = summarize(latencies_ms(predict, mixed, calls), [batch_rate(predict, mixed, batches)])
                entry[name] = {"fixed": asdict(summarize(latencies[name], rates[name])), "mixed": asdict(mixed_figures)}
            del systems, predict  # free the PyTorch model before the next one
            entry["ortserve"] = [_row("fixed", merge(one_caller)), _row("fixed", merge(many_callers))]
            save()
            for kind in KINDS:
                levels = [(c, 1) for c in SINGLE_TEXT_CALLERS] + [(c, 32) for c in BATCH_CALLERS]
                for callers, per_call in levels:
                    if kind == "fixed" and per_call == 1 and callers in (1, 32):
                        continue  # measured in the rounds above
                    if per_call == 1 and callers == 1:
                        result = blocking_caller(server.port, model.name, texts[model.name][kind], calls * 2, seconds)
                        entry["ortserve"].append(_row(kind, result))
                        continue
                    log.info("%s: ortserve, %d callers × %d %s texts", model.name, callers, per_call, kind)
                    max_calls = int((400 if per_call == 1 else 40) * max(1, callers // 8) * scale)
                    result = grpc_load(
                        server.port,
                        model.name,
                        texts[model.name][kind],
                        callers,
                        per_call,
                        max_calls=max_calls,
                        max_seconds=seconds,
                    )
                    entry["ortserve"].append(_row(kind, result))
                    save()
            entry["ortserve"].sort(key=lambda row: (row["texts"], row["texts_per_call"], row["callers"]))
        results["ortserve_rss_mb_after_load"], results["ortserve_hwm_mb"] = rss_mb(server.process.pid)
    for _ in range(2):  # start-up again, now that the OS file cache holds everything (the "cached artifacts" case)
        with ortserve_process(artifacts, logs / "ortserve.log") as server:
            results["ortserve_start_to_serving_s"].append(server.start_to_serving_s)

    # (e): mlflow models serve of the same models, logged with mlflow.transformers.
    for model in models:
        entry = results["models"][model.name]
        log.info("%s: mlflow models serve", model.name)
        entry["mlflow"] = []
        with mlflow_serve_process(mlflow_dirs[model.name], logs / f"mlflow-{model.name}.log") as url:
            for callers in (1, 32):
                result = http_load(
                    url,
                    texts[model.name]["fixed"],
                    callers,
                    1,
                    max_calls=int((60 if callers == 1 else 200) * scale),
                    max_seconds=2 * seconds,
                )
                entry["mlflow"].append(_row("fixed", result))
                save()

    # (f): a PyTorch process holding the same two models.
    log.info("PyTorch process memory")
    longest = sorted(texts[models[0].name]["mixed"], key=len)[-32:]  # as long as the server's heaviest batches
    results["torch_process"] = torch_process_memory([m.hf_dir for m in models], longest, work)
    return results


def _row(kind: str, result: Any) -> dict[str, Any]:
    return {
        "texts": kind,
        "callers": result.callers,
        "texts_per_call": result.texts_per_call,
        "calls": result.calls,
        "errors": result.errors,
        "texts_per_s": result.texts_per_s,
        "p50_ms": result.p50,
        "p99_ms": result.p99,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK, help="models, exports, logs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="half the requests and durations")
    parser.add_argument("--rebuild", action="store_true", help="build and export the models again")
    parser.add_argument(
        "--models",
        help="comma-separated subset to measure, e.g. bert-base,minilm-topic (default: "
        "all; the report leaves out the targets of models not measured)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    benchmark_models, tokenizer_note = build_models(args.work, args.rebuild)
    models = benchmark_models + build_trained_models(args.work, args.rebuild)  # the demo's, real weights
    if args.models:
        models = [m for m in models if m.name in args.models.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results = measure(models, args.work, args.quick, args.work / "bench.partial.json")
    # Issue 10's scenarios (noisy neighbour, overload sweep, rolling restart) on the fastest model.
    results["under_load"] = measure_under_load(models, args.work, args.quick)
    # Issue 25's data-plane targets (amplification, overload, fair runs), this tree next to main's in one run.
    try:
        results["hostile_load"] = measure_hostile_load(args.work, "main", "minilm", 1, args.quick)
        (args.out / "hostile-load.md").write_text(hostile_load_markdown(results["hostile_load"]), encoding="utf-8")
    except Exception as exc:  # no `main` ref (a shallow clone), or a failed server: the rest of the run goes on
        log.exception("hostile load: failed")
        results["hostile_load"] = {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"}
    # Issue 15's result cache, off vs on in paired rounds, on a workload where half the texts repeat: on the issue's
    # BERT-base-sized model and on the fastest, where gRPC's own cost per call bounds what a cache hit saves.
    rounds, seconds = (2, 4.0) if args.quick else (3, 8.0)
    results["result_cache"] = [
        measure_result_cache(model, args.work / "logs", rounds, seconds)
        for model in models
        if model.name in ("bert-base", "minilm")
    ]
    # Issue 15's memory target: this environment's ortserve serving the two benchmark models from a SQLite store and
    # from a real `mlflow server`, after the heaviest batches, next to raw ONNX Runtime holding the same two.
    in_registry = [m for m in models if m in benchmark_models] or models[:2]
    try:
        results["registry_memory"] = measure_registry_memory(in_registry, args.work, rounds=1 if args.quick else 2)
    except Exception as exc:  # keep the rest of the run: the report says this step failed (log: registry-memory/)
        log.exception("registry memory: failed")
        first_line = (str(exc).splitlines() or [""])[0]
        results["registry_memory"] = {"error": f"{type(exc).__name__}: {first_line}"}
    # Issue 26's start-to-SERVING: the BERT-base-sized model from a directory, a SQLite store and a real `mlflow
    # server`, from an empty and a warm cache, alternating.
    try:
        start_model = next((m for m in models if m.name == "bert-base"), models[0])
        results["start_to_serving"] = measure_start_to_serving(start_model.artifact, args.work, rounds=3)
    except Exception as exc:  # keep the rest of the run: the report says this step failed (log: start-to-serving/)
        log.exception("start to serving: failed")
        results["start_to_serving"] = {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"}
    results["tokenizer"] = tokenizer_note
    for model in models:
        if (model.hf_dir / "training.json").is_file():  # a trained model: how well it classifies, next to its speed
            training = json.loads((model.hf_dir / "training.json").read_text())
            results["models"][model.name]["heldout_accuracy_pytorch"] = training["metrics"]["heldout_accuracy"]
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["ortserve_start_to_serving_median_s"] = statistics.median(results["ortserve_start_to_serving_s"])
    (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, args.out)
    print((args.out / "bench.md").read_text())
    measure_observability_cost(models, args.work, args.out, args.quick)  # issue 11: metrics + tracing on vs off
    log.info("done in %.0f s", results["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
