"""benchmarks.hostile_load's report: every figure of both trees side by side, and only the scenarios that ran (a run
of `--scenarios overload` once crashed on the missing amplification figures)."""

from __future__ import annotations

from typing import Any

from benchmarks.hostile_load_report import markdown


def _overload(goodput: float) -> dict[str, Any]:
    level = {"goodput_per_s": goodput, "refused_p50_ms": {"RESOURCE_EXHAUSTED": 20.0, "DEADLINE_EXCEEDED": 40.0}}
    return {name: level for name in ("50x100ms", "500x100ms", "50x500ms", "500x500ms")}


def _results(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "minilm",
        "baseline_ref": "main",
        "head": "0123456789abcdef",
        "rounds": 1,
        "load_average": (0.5, 0.4, 0.3),
        "runs": {"main": [run], "this tree": [run]},
    }


def test_a_run_of_some_scenarios_reports_only_theirs() -> None:
    text = markdown(_results({"overload": _overload(123.0)}))
    assert "500 callers × 100 ms deadline: answers/s | 123.0 /s | 123.0 /s" in text
    assert "amplification" not in text
    assert "300-token" not in text


def test_a_full_run_reports_the_amplification_status() -> None:
    amplification = {
        "code": "INVALID_ARGUMENT",
        "answer_ms": 5.0,
        "rss_growth_mb": 0.0,
        "victim_quiet_p99_ms": 10.0,
        "victim_attacked_p99_ms": 11.0,
    }
    text = markdown(_results({"overload": _overload(1.0), "amplification": amplification}))
    assert "time to its status | 5.0 ms | 5.0 ms" in text
    assert "main: INVALID_ARGUMENT, this tree: INVALID_ARGUMENT" in text
