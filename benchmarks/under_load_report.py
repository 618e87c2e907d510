"""Issue 10's scenarios (benchmarks.under_load) as a report: the targets met or not, the Markdown section of
bench.md and under-load.md, and the plot. Reads a run's results only; imports nothing that measures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .plots import finish_caller_plot

#: 32 single-text callers, fixed texts, texts/s in BENCHMARKS.md before issue 10 (`make bench`, 2026-11-27): the
#: throughput that fair batching must not lower.
BEFORE_32_CALLERS = {"minilm": 269.4, "bert-base": 106.0}
#: The sweep's deadline in runs that did not record it (results written before it was recorded).
SWEEP_DEADLINE_S = 0.5


def targets(results: dict[str, Any], baseline_32: float | None = None) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the targets of issue 10, from one run."""
    rows = []
    noisy = results["noisy_neighbour"]
    bound = noisy["idle_p50_ms"] + noisy["full_budget_run_ms"]
    rows.append(
        (
            "interactive p50 beside two bulk callers ≤ idle p50 + one full-budget run",
            f"{noisy['interactive_p50_ms']:,.1f} ms vs {noisy['idle_p50_ms']:,.1f} + "
            f"{noisy['full_budget_run_ms']:,.1f} = {bound:,.1f} ms",
            noisy["interactive_p50_ms"] <= bound,
        )
    )
    rows.append(
        (
            "… the same caller with no think time (arrives as a bulk run starts; for comparison)",
            f"{noisy['back_to_back_p50_ms']:,.1f} ms vs {bound:,.1f} ms",
            noisy["back_to_back_p50_ms"] <= bound,
        )
    )
    sweep = results["sweep"]
    best = max(level["goodput_per_s"] for level in sweep)
    last = sweep[-1]
    rows.append(
        (
            f"goodput at {last['callers']} callers ≥ 0.8 × the best of the sweep",
            f"{last['goodput_per_s']:,.1f} / {best:,.1f} answers/s = {last['goodput_per_s'] / best:.2f}×",
            last["goodput_per_s"] >= 0.8 * best,
        )
    )
    baseline_32 = baseline_32 or BEFORE_32_CALLERS.get(results["model"])
    if baseline_32:
        rate = results["throughput_32_callers"]
        rows.append(
            (
                "32 single-text callers: throughput not lower than BENCHMARKS.md before this change",
                f"{rate:,.1f} vs {baseline_32:,.1f} texts/s ({rate / baseline_32:.2f}×)",
                rate >= baseline_32,
            )
        )
    restart = results["rolling_restart"]
    rows.append(
        (
            f"rolling restart of one of two replicas under {restart['callers']} callers: 0 failed calls",
            f"{restart['failed']} failed of {restart['answered'] + restart['failed']} "
            f"{restart['failed_by_code'] or ''}".strip(),
            restart["failed"] == 0,
        )
    )
    return rows


def report(results: dict[str, Any], baseline_32: float | None = None) -> str:
    """The markdown section of these scenarios."""
    cost, noisy = results["cost_per_text"], results["noisy_neighbour"]
    deadline_s = results.get("sweep_deadline_s", SWEEP_DEADLINE_S)
    lines = ["| target | measured (same run) | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets(results, baseline_32)]
    lines += [
        "",
        f"Model {results['model']}, max length {cost['max_length']} tokens. Load average "
        f"{results['load_average_at_start'][0]:.1f} at start, {results['load_average_at_end'][0]:.1f} at end.",
        "",
        "| cost per text (in process, median) | ms |",
        "|---|---:|",
        f"| tokenize one 10,000-character text (cut first) | {cost['tokenize_10k_ms']:.2f} |",
        f"| tokenize one max-length text ({cost['max_length_text_chars']:,} characters) | "
        f"{cost['tokenize_max_length_ms']:.2f} |",
        f"| tokenize the whole 10,000 characters (before this change) | {cost['tokenize_10k_whole_ms']:.2f} |",
        f"| classify one 10,000-character text | {cost['classify_10k_ms']:.2f} |",
        f"| classify one max-length text | {cost['classify_max_length_ms']:.2f} |",
        f"| tokenize 256 × 10,000 characters (cut first) | {cost['tokenize_256x10k_ms']:.1f} |",
        f"| tokenize 256 × 10,000 characters whole (before) | {cost['tokenize_256x10k_whole_ms']:.1f} |",
        "",
        f"Noisy neighbour: interactive caller alone p50 {noisy['idle_p50_ms']:.1f} ms ({noisy['idle_calls']} calls); "
        f"one full-budget run (16 × 512 tokens) {noisy['full_budget_run_ms']:.1f} ms; with a think time of "
        f"{noisy['think_s']:.1f} s on average (exponential) beside two bulk callers "
        f"(256 × 10,000 characters per call) p50 {noisy['interactive_p50_ms']:.1f} ms, p99 "
        f"{noisy['interactive_p99_ms']:.1f} ms ({noisy['interactive_calls']} calls in {noisy['seconds']:.0f} s); "
        f"with no think time p50 {noisy['back_to_back_p50_ms']:.1f} ms ({noisy['back_to_back_calls']} calls); bulk "
        f"calls answered {noisy['bulk_calls']} (p50 {noisy['bulk_p50_ms']:,.0f} ms), failed "
        f"{len(noisy['bulk_errors'])}.",
        "",
        f"Overload sweep: single-text callers, each call with a {deadline_s * 1000:.0f} ms deadline; a caller "
        "told RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED backs off (jittered, 50 ms doubling to 2 s).",
        "",
        f"Each level ran {results.get('sweep_rounds', 'several')} times ({results['sweep'][0]['seconds']:.0f} s "
        "each), levels alternating round by round; the row is the round with the median goodput, and every "
        "round's goodput is listed.",
        "",
        "| callers | answered/s (median) | every round | p50 ms | p99 ms | refused (code: count, p50 ms) | other |",
        "|---:|---:|---|---:|---:|---|---:|",
    ]
    for level in results["sweep"]:
        refused = (
            ", ".join(
                f"{code}: {count} ({level['refused_p50_ms'][code]:.1f})" for code, count in level["refused"].items()
            )
            or "none"
        )
        every = ", ".join(f"{rate:,.0f}" for rate in level.get("goodput_rounds", [level["goodput_per_s"]]))
        lines.append(
            f"| {level['callers']} | {level['goodput_per_s']:,.1f} | {every} | {level['p50_ms']:,.1f} | "
            f"{level['p99_ms']:,.1f} | {refused} | {level['other_errors']} |"
        )
    restart = results["rolling_restart"]
    lines += [
        "",
        f"Rolling restart: {restart['callers']} callers through the client's round-robin over two replicas "
        f"(drain {restart['drain_s']:.0f} s); SIGTERM to one at {restart['events_s']['sigterm']:.1f} s, it exited "
        f"{restart['exit_code']} at {restart['events_s']['stopped']:.1f} s, served again at "
        f"{restart['events_s']['serving_again']:.1f} s; {restart['answered']:,} calls answered "
        f"({restart['texts_per_s']:,.0f}/s), {restart['failed']} failed.",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = results["sweep"]
    callers = [level["callers"] for level in sweep]
    fig, (goodput, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    goodput.plot(callers, [level["goodput_per_s"] for level in sweep], "-o", label="answered within deadline")
    goodput.plot(
        callers,
        [sum(level["refused"].values()) / level["seconds"] for level in sweep],
        "--s",
        label="refused (RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED)",
    )
    goodput.set_ylabel("calls/s")
    goodput.set_title(f"{results['model']}: goodput against callers")
    latency.plot(callers, [level["p99_ms"] for level in sweep], "-o", label="p99 of answered calls")
    latency.plot(callers, [level["p50_ms"] for level in sweep], "--s", label="p50 of answered calls")
    latency.axhline(
        results.get("sweep_deadline_s", SWEEP_DEADLINE_S) * 1000, color="red", linestyle=":", label="deadline"
    )
    latency.set_ylabel("ms")
    latency.set_title(f"{results['model']}: latency against callers")
    finish_caller_plot(fig, (goodput, latency), callers, path)


def write(results: dict[str, Any], out: Path, baseline_32: float | None = None) -> str:
    """Write under-load.json, under-load.md and under-load.png to `out`; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "under-load.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report(results, baseline_32)
    (out / "under-load.md").write_text("# Behaviour under load\n\n" + text)
    plot(results, out / "under-load.png")
    return text
