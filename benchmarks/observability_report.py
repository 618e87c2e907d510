"""benchmarks.observability_cost's results as observability-cost.md, written beside observability-cost.json. Reads the
results only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The target: metrics and tracing cost at most 3 % of the throughput with both off.
TARGET_RATIO = 0.97


def write_report(result: dict[str, Any], out: Path) -> str:
    (out / "observability-cost.json").write_text(json.dumps(result, indent=2) + "\n")
    compared = list(result["ratio_per_round"])  # every mode but `off`
    lines = [
        "# Observability cost: metrics and tracing on vs off",
        "",
        f"Model `{result['model']}`, {result['callers']} callers × 1 text, {result['rounds']} rounds of "
        f"{result['seconds_per_round']:.0f} s per mode, modes interleaved; four server processes side by side: "
        "`off`, `metrics` (`--metrics-port`, scraped every second), `on` (metrics, and `--tracing` of every call "
        "exporting over OTLP/gRPC to a local sink) and `on-sampled` (as `on`, "
        "`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.1`).",
        "",
        "| mode | median texts/s | vs off (median of rounds) | vs off (pooled) | server CPU ms/text "
        "| off CPU / mode CPU (median of rounds) | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in result["median_texts_per_s"]:  # the modes, in the order measured, `off` first
        median_ratio = f"{result['ratio_median'][mode]:.3f}" if mode != "off" else "1"
        pooled_ratio = f"{result['ratio_pooled'][mode]:.3f}" if mode != "off" else "1"
        cpu_ratio = f"{result['cpu_ratio_median'][mode]:.3f}" if mode != "off" else "1"
        lines.append(
            f"| {mode} | {result['median_texts_per_s'][mode]:.1f} | {median_ratio} | {pooled_ratio} | "
            f"{result['median_server_cpu_ms_per_text'][mode]:.2f} | {cpu_ratio} | "
            f"{result['p50_ms'][mode]:.1f} | {result['p99_ms'][mode]:.1f} | {result['errors'][mode]} |"
        )
    rounds = "; ".join(f"{mode}: {', '.join(f'{r:.3f}' for r in result['ratio_per_round'][mode])}" for mode in compared)
    verdicts = ", ".join(
        f"{mode} {'met' if result['ratio_median'][mode] >= TARGET_RATIO else 'NOT met'}" for mode in compared
    )
    lines += [
        "",
        "Server CPU per text is the steadier figure on a shared machine: throughput moves with whatever else runs, "
        "CPU time spent per answered text much less. `off CPU / mode CPU` is the throughput ratio to expect when "
        "the server is CPU-bound.",
        "",
        f"Target: ≥ {TARGET_RATIO} of the `off` throughput ({verdicts}). Per-round ratios: {rounds}. "
        f"Spans exported (`on` and `on-sampled`): {result['spans_exported']}; OK calls counted by the metrics at "
        "the last scrape: "
        + ", ".join(f"{mode} {value:.0f}" for mode, value in result["requests_counted_by_metrics"].items())
        + ".",
        "",
    ]
    text = "\n".join(lines)
    (out / "observability-cost.md").write_text(text)
    return text
