"""benchmarks.percall's results as percall.md, written beside percall.json. Reads the results only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The issue's target: one caller with the project's client, ortserve p50 ≤ raw ONNX Runtime p50 + this.
TARGET_DELTA_MS = 1.0
#: Issue 25: server CPU per single-text call outside ONNX Runtime at most this many ms.
TARGET_CPU_OUTSIDE_ORT_MS = 0.35
#: Issue 25: N single-text callers at least this share of raw ONNX Runtime's batch-of-N throughput.
TARGET_CALLERS_RATIO = 0.9


def target_met(result: dict[str, Any]) -> bool:
    return bool(result["delta_ms"]["ortserve"] <= TARGET_DELTA_MS)


def _load(result: dict[str, Any], key: str) -> str:
    return ", ".join(f"{value:.2f}" for value in result.get(key) or ()) or "not recorded"


def target_lines(result: dict[str, Any]) -> list[str]:
    """Each server against each target, beside every raw ONNX Runtime reference."""
    servers = [name for name in result["p50_ms"] if name.startswith("ortserve") and name != "ortserve_stub"]
    lines = [
        "| server | Δ p50 vs raw_ort | vs raw_ort_spin_in_runs | vs raw_ort_ort_defaults | CPU outside ORT ms/call "
        "(vs raw_ort / spin_in_runs) | callers vs raw batch (raw_ort / spin_in_runs) |",
        "|---|---|---|---|---|---|",
    ]
    for name in servers:
        deltas = [f"{result['delta_ms_vs'][reference][name]:+.2f}" for reference in result["delta_ms_vs"]]
        outside = result["server_cpu_outside_ort_ms"][name]
        ratios = result.get("callers_vs_raw_batch", {}).get(name)
        ratio = f"{ratios['raw_ort']:.2f}× / {ratios['raw_ort_spin_in_runs']:.2f}×" if ratios else "—"
        cpu = f"{outside['raw_ort']:.2f} / {outside['raw_ort_spin_in_runs']:.2f}"
        lines.append(f"| {name} | {' | '.join(deltas)} | {cpu} | {ratio} |")
    if "callers_texts_per_s" in result:
        rates = ", ".join(f"{name} {rate:.0f}" for name, rate in result["callers_texts_per_s"].items())
        lines += ["", f"Texts/s with {result['callers']} single-text callers (raw: batches of as many): {rates}."]
    bound = result.get("callers_bound")
    if bound:
        lines += [
            "",
            f"Bound for {result['callers']} callers on this machine (`callers_bound`): raw ONNX Runtime's CPU per text "
            f"at batch {result['callers']} {bound['raw_cpu_ms_per_text']:.2f} ms + the gRPC floor's CPU per call "
            f"(server and callers, {bound['floor_calls_per_s']:.0f} calls/s) {bound['floor_cpu_ms_per_call']:.2f} ms: "
            f"at most {bound['bound_texts_per_s']:.0f} texts/s, {bound['bound_vs_raw_batch']:.2f}× raw batch "
            "(a server with no cost of its own beyond the floor).",
        ]
    mine = result["server_cpu_outside_ort_ms"]["ortserve"]["raw_ort"]
    floor_cpu = result["cpu_ms_per_call"]["grpc_floor"]["server"]
    lines += [
        "",
        f"Targets (this tree's `ortserve` against `raw_ort`): p50 ≤ raw + {TARGET_DELTA_MS} ms: "
        f"Δ {result['delta_ms']['ortserve']:+.2f} ms, {'met' if target_met(result) else 'missed'}; server CPU "
        f"outside ONNX Runtime ≤ {TARGET_CPU_OUTSIDE_ORT_MS} ms: {mine:.2f} ms, "
        f"{'met' if mine <= TARGET_CPU_OUTSIDE_ORT_MS else 'missed'} (the gRPC floor server's own CPU per call: "
        f"{floor_cpu:.2f} ms)",
    ]
    ratios = result.get("callers_vs_raw_batch", {}).get("ortserve")
    if ratios:
        met = "met" if ratios["raw_ort"] >= TARGET_CALLERS_RATIO else "missed"
        lines[-1] += f"; {result['callers']} callers ≥ {TARGET_CALLERS_RATIO}× raw: {ratios['raw_ort']:.2f}×, {met}"
    lines[-1] += "."
    return lines


def write_report(result: dict[str, Any], out: Path, command: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "percall.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Per-call overhead: one caller, one text per call",
        "",
        f"`{command}`; model `{result['model']}`, {result['rounds']} interleaved rounds of "
        f"{result['calls_per_round']} calls per system. Medians over rounds of each round's p50 (and p90); Δ is the "
        "median of the per-round differences to raw ONNX Runtime of the same round.",
        "",
        f"Load average (1, 5, 15 min) at the start {_load(result, 'load_average_start')}, at the end "
        f"{_load(result, 'load_average_end')}. `raw_ort` has the server's default session settings (like for like).",
        "",
        "| system | p50 ms | p90 ms | Δ p50 vs raw ORT ms | client CPU ms/call | server CPU ms/call "
        "| … of it, event-loop thread |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in result["p50_ms"]:  # the systems, in the order measured
        cpu = result["cpu_ms_per_call"][name]
        raw = name.startswith("raw_ort")
        delta = "0" if name == "raw_ort" else f"{result['delta_ms'][name]:+.2f}"
        server_cpu = f"{cpu['server']:.2f} | {cpu['server_loop']:.2f}" if not raw else "— | —"
        lines.append(
            f"| {name} | {result['p50_ms'][name]:.2f} | {result['p90_ms'][name]:.2f} | {delta} | "
            f"{cpu['client']:.2f} | {server_cpu} |"
        )
    lines += ["", *target_lines(result), ""]
    for profile_result in (result.get("profile"), result.get("profile_floor")):
        if not profile_result:
            continue
        lines += [
            f"## Profile of {profile_result['system']} (py-spy {'--native ' if profile_result['native'] else ''}"
            f"{'--gil ' if profile_result['gil'] else ''}at {profile_result['rate_hz']} Hz, "
            f"{profile_result['calls']} calls, p50 {profile_result['p50_ms']:.2f} ms while sampled)",
            "",
            (
                "Time holding the GIL per call by component, µs (Python, and C code that keeps the GIL)."
                if profile_result["gil"]
                else "Active (running, not idle) time per call by component, µs, summed over threads; "
                "idle waits are not sampled."
            ),
            "",
        ]
        for side in ("server", "client"):
            summary = profile_result[side]
            lines += [f"### {side}", "", "| component | µs per call |", "|---|---|"]
            lines += [f"| {name} | {us:.0f} |" for name, us in summary["us_per_call"].items()]
            lines += ["", "Innermost frames:", ""]
            lines += [f"- {us:.0f} µs `{frame}`" for frame, us in summary["top_frames"]]
            lines.append("")
    text = "\n".join(lines)
    (out / "percall.md").write_text(text)
    return text
