"""Renders `hostile_load`'s results: each figure of the baseline tree and of this tree side by side, the median over
rounds, next to issue 25's target."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

#: (label, how to read the figure from one tree's run, unit, target in words)
ROWS: list[tuple[str, Callable[[dict[str, Any]], float], str, str]] = [
    ("V2 amplification request: time to its status", lambda r: r["amplification"]["answer_ms"], "ms", "≤ 10 ms"),
    ("… the first one (cold method and connection)", lambda r: r["amplification"]["first_answer_ms"], "ms", ""),
    ("… server RSS growth (after a first small ModelInfer)", lambda r: r["amplification"]["rss_growth_mb"], "MB", ""),
    (
        "… server RSS growth after every request and the attack loop",
        lambda r: r["amplification"].get("rss_growth_after_attack_mb", math.nan),
        "MB",
        "+0 MB",
    ),
    ("… victim p99, quiet", lambda r: r["amplification"]["victim_quiet_p99_ms"], "ms", ""),
    ("… victim p99, two attackers looping", lambda r: r["amplification"]["victim_attacked_p99_ms"], "ms", "unchanged"),
    ("50 callers × 100 ms deadline: answers/s", lambda r: r["overload"]["50x100ms"]["goodput_per_s"], "/s", ""),
    (
        "500 callers × 100 ms deadline: answers/s",
        lambda r: r["overload"]["500x100ms"]["goodput_per_s"],
        "/s",
        "≥ 0.5× the 50-caller figure",
    ),
    ("50 callers × 500 ms deadline: answers/s", lambda r: r["overload"]["50x500ms"]["goodput_per_s"], "/s", ""),
    (
        "500 callers × 500 ms deadline: answers/s",
        lambda r: r["overload"]["500x500ms"]["goodput_per_s"],
        "/s",
        "≥ 0.8× the best",
    ),
    (
        "500 callers × 100 ms: refusal p50 (RESOURCE_EXHAUSTED)",
        lambda r: r["overload"]["500x100ms"]["refused_p50_ms"].get("RESOURCE_EXHAUSTED", float("nan")),
        "ms",
        "≤ 50 ms",
    ),
    (
        "500 callers × 100 ms: refusal p50 (DEADLINE_EXCEEDED)",
        lambda r: r["overload"]["500x100ms"]["refused_p50_ms"].get("DEADLINE_EXCEEDED", float("nan")),
        "ms",
        "≤ 50 ms",
    ),
    ("~300-token caller beside two bulk callers: p50", lambda r: r["fair_runs"]["medium_p50_ms"], "ms", "≤ 150 ms"),
    ("… its p99", lambda r: r["fair_runs"]["medium_p99_ms"], "ms", ""),
    ("… bulk throughput", lambda r: r["fair_runs"]["bulk_texts_per_s"], "texts/s", "≥ 0.9× before"),
    ("one caller, single-text Classify: p50", lambda r: r["one_caller_p50_ms"], "ms", ""),
]


def _median(runs: list[dict[str, Any]], read: Callable[[dict[str, Any]], float]) -> float:
    values = []
    for run in runs:
        try:
            values.append(float(read(run)))
        except (KeyError, TypeError):
            continue
    return statistics.median(values) if values else float("nan")


def markdown(results: dict[str, Any]) -> str:
    names = list(results["runs"])
    baseline, this = names[0], names[-1]
    lines = [
        f"Model `{results['model']}`, {results['rounds']} round(s), {baseline} against this tree "
        f"(`{results['head'][:10]}`), load average {', '.join(f'{v:.1f}' for v in results['load_average'])}.",
        "",
        f"| figure | {baseline} | this tree | target |",
        "|---|---:|---:|---|",
    ]
    for label, read, unit, target in ROWS:
        before = _median(results["runs"][baseline], read)
        after = _median(results["runs"][this], read)
        if math.isnan(before) and math.isnan(after):
            continue  # a scenario left out by --scenarios
        lines.append(f"| {label} | {before:,.1f} {unit} | {after:,.1f} {unit} | {target} |")
    # A run of some --scenarios only has no amplification figures: say nothing about them.
    codes = [
        (name, run["amplification"]["code"])
        for name, runs in results["runs"].items()
        for run in runs[:1]
        if "amplification" in run
    ]
    if codes:
        lines += ["", "Status of the amplification request: " + ", ".join(f"{name}: {code}" for name, code in codes)]
    return "\n".join(lines) + "\n"
