"""Renders `http_side_by_side`'s results as Markdown (measuring and reporting are kept apart)."""

from __future__ import annotations

from typing import Any


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# HTTP vs gRPC vs mlflow models serve ({report['model']}, {report['quantization']}, one run)",
        "",
        "| path | p50 ms, 1 caller | p99 ms, 1 caller | texts/s, 32 callers | p50 ms, 32 callers | server CPU ms/call "
        "(1 / 32 callers) | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["rows"].items():
        lines.append(
            f"| {name} | {r['p50_ms_1_caller']} | {r['p99_ms_1_caller']} | {r['texts_per_s_32_callers']} | "
            f"{r['p50_ms_32_callers']} | {r['server_cpu_ms_per_call_1_caller']} / "
            f"{r['server_cpu_ms_per_call_32_callers']} | {r['errors']} |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |" for t in report["targets"]]
    return "\n".join(lines) + "\n"
