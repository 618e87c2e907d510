"""Renders `start_to_serving.measure`'s results as Markdown (measuring and reporting are kept apart)."""

from __future__ import annotations

import itertools
from typing import Any

SYSTEMS = ("local", "sqlite", "http")
CACHES = ("empty", "warm")
#: (system, cache) -> seconds over local's start in the same slot that issue 26 allows.
TARGETS = {("http", "empty"): 0.5, ("sqlite", "empty"): 1.5, ("http", "warm"): 0.5, ("sqlite", "warm"): 0.5}


def start_to_serving_section(results: dict[str, Any]) -> str:
    """A Markdown table: each start's median seconds and RSS, its margin over local in the same slot, the target."""
    medians = results["medians"]
    lines = [
        f"Start-to-SERVING of `{results['artifact']}` ({results['model_mb']:.0f} MB model.onnx), medians of "
        f"{results['rounds']} alternating rounds (`python -m benchmarks.start_to_serving`).",
        "",
        "| ortserve | source | cache | start to SERVING (s) | − local (s) | target | met | VmRSS after start (MB) |",
        "|---|---|---|---:|---:|---|---|---:|",
    ]
    for ortserve, cache_state, system in itertools.product(results["executables"], CACHES, SYSTEMS):
        local = medians[f"{ortserve} | local | {cache_state}"]["start_to_serving_s"]
        figures = medians[f"{ortserve} | {system} | {cache_state}"]
        seconds = figures["start_to_serving_s"]
        allowed = TARGETS.get((system, cache_state))
        target = f"≤ local + {allowed:.1f} s" if allowed is not None else "(reference)"
        met = "" if allowed is None else ("yes" if seconds - local <= allowed else "**no**")
        margin = "" if system == "local" else f"{seconds - local:+.2f}"
        lines.append(
            f"| {ortserve} | {system} | {cache_state} | {seconds:.2f} | {margin} | {target} | {met} "
            f"| {figures['rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"
