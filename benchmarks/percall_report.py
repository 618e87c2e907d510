"""benchmarks.percall's results as percall.md, written beside percall.json. Reads the results only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The issue's target: one caller with the project's client, ortserve p50 ≤ raw ONNX Runtime p50 + this.
TARGET_DELTA_MS = 1.0


def target_met(result: dict[str, Any]) -> bool:
    return bool(result["delta_ms"]["ortserve"] <= TARGET_DELTA_MS)


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
        "| system | p50 ms | p90 ms | Δ p50 vs raw ORT ms | client CPU ms/call | server CPU ms/call "
        "| … of it, event-loop thread |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in result["p50_ms"]:  # the systems, in the order measured
        delta = f"{result['delta_ms'][name]:+.2f}" if name != "raw_ort" else "0"
        cpu = result["cpu_ms_per_call"][name]
        server_cpu = f"{cpu['server']:.2f} | {cpu['server_loop']:.2f}" if name != "raw_ort" else "— | —"
        lines.append(
            f"| {name} | {result['p50_ms'][name]:.2f} | {result['p90_ms'][name]:.2f} | {delta} | "
            f"{cpu['client']:.2f} | {server_cpu} |"
        )
    lines += [
        "",
        f"Target (ortserve p50 ≤ raw ORT p50 + {TARGET_DELTA_MS} ms): "
        f"Δ {result['delta_ms']['ortserve']:+.2f} ms, {'met' if target_met(result) else 'missed'}.",
        "",
    ]
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
