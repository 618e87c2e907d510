"""The runtime tables: benchmarks.tune_runtime's session settings and benchmarks.concurrent_runs' concurrent runs per
model, as Markdown. Reads the results only."""

from __future__ import annotations

from typing import Any


def runtime_tuning_table(results: dict[str, Any]) -> str:
    """runtime-tuning.md: session settings per model, and two models sharing the process."""
    lines = ["| model | variant | 1-text p50 (ms) | batch-32 texts/s | session load (s) |", "|---|---|---:|---:|---:|"]
    for row in results["sessions"]:
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['p50_ms']:.1f} | {row['texts_per_s']:.0f} "
            f"| {row['load_s']:.2f} |"
        )
    lines += [
        "",
        "| two models in one process, both running batches of 32 | texts/s (both) | minilm 1-text p50 "
        "while bert-base busy (ms) |",
        "|---|---:|---:|",
    ]
    for row in results["two_models"]:
        lines.append(
            f"| {row['mode']} | {row['texts_per_s_both_busy']:.0f} | {row['small_p50_ms_while_big_busy']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def concurrent_runs_table(results: dict[str, Any]) -> str:
    """concurrent-runs.md: each model's concurrent-run variants against raw ONNX Runtime."""
    lines = [
        "| model | system | 1 caller p50 ms | Δ vs raw ms | 32 callers texts/s | × raw batch-32 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model, systems in results["models"].items():
        for name, s in systems.items():
            delta = "" if name == "raw ONNX Runtime" else f"{s['p50_over_raw_ms']:+.2f}"
            ratio = "" if name == "raw ONNX Runtime" else f"{s['vs_raw_batch32']:.2f}×"
            rate = s["texts_per_s"]
            label = "raw ONNX Runtime (batch of 32)" if name == "raw ONNX Runtime" else f"ortserve, {name}"
            lines.append(f"| {model} | {label} | {s['p50_ms']:.2f} | {delta} | {rate:,.0f} | {ratio} |")
    return "\n".join(lines) + "\n"
