"""bench.md's targets (issue 15): each target next to its measured figure and the previous round's, from a synthetic
run; a run that lacks a section (a model, the registry memory, the result cache) leaves those rows out."""

from __future__ import annotations

import copy
import json
from typing import Any

from benchmarks.report import PREVIOUS_ROUND, Target, render, targets, targets_section, under_load_figures, worse


def _model(p50_ms: float, raw_p50_ms: float, texts_per_s_32: float, raw_batch32: float) -> dict[str, Any]:
    def row(callers: int, texts_per_s: float, p50_ms: float) -> dict[str, Any]:
        return {"texts": "fixed", "callers": callers, "texts_per_call": 1, "calls": 100, "errors": 0} | {
            "texts_per_s": texts_per_s,
            "p50_ms": p50_ms,
            "p99_ms": 2 * p50_ms,
        }

    figures = {"p50_ms": raw_p50_ms, "p99_ms": 2 * raw_p50_ms, "batch32_texts_per_s": raw_batch32}
    torch = {"p50_ms": 40.0, "p99_ms": 60.0, "batch32_texts_per_s": 60.0}
    return {
        "shape": {"hidden": 384, "layers": 6, "heads": 12},
        "quantization": "dynamic-int8",
        "model_mb": 23.0,
        "torch": {"fixed": torch, "mixed": torch},
        "raw_ort": {"fixed": figures, "mixed": figures},
        "ortserve": [row(1, 1000 / p50_ms, p50_ms), row(32, texts_per_s_32, 100.0)],
        "mlflow": [row(1, 20.0, 50.0), row(32, 20.0, 1500.0)],
    }


def synthetic_run() -> dict[str, Any]:
    """One run's results as benchmarks.run writes them; minilm meets the issue-15 targets, bert-base misses them."""
    return {
        "machine": {
            "cpu": "test CPU",
            "cores": 2,
            "isa": ["avx2"],
            "python": "3.11",
            "onnxruntime": "1",
            "torch": "2",
            "transformers": "4",
            "load_average_at_start": [1.0, 1.0, 1.0],
            "load_average_at_end": [2.0, 2.0, 2.0],
        },
        "rounds": 5,
        "tokenizer": "test WordPiece",
        "seconds": 600.0,
        "models": {
            "minilm": _model(p50_ms=6.5, raw_p50_ms=6.0, texts_per_s_32=96.0, raw_batch32=100.0),  # +0.5 ms, 0.96×
            "bert-base": _model(p50_ms=9.0, raw_p50_ms=6.0, texts_per_s_32=94.0, raw_batch32=100.0),  # +3 ms, 0.94×
        },
        "ortserve_start_to_serving_s": [1.0, 1.2, 1.1],
        "ortserve_start_to_serving_median_s": 1.1,
        "ortserve_rss_mb_loaded": 220.0,
        "ortserve_rss_mb_after_load": 310.0,
        "ortserve_hwm_mb": 320.0,
        "torch_process": {"rss_mb": 700.0, "rss_mb_after_batch": 900.0, "hwm_mb": 1000.0, "ready_s": 8.0},
        "result_cache": [
            {
                "model": "minilm",
                "callers": 32,
                "repeat_fraction": 0.5,
                "cache_bytes": 64 << 20,
                "texts_per_s_off": 150.0,
                "texts_per_s_on": 290.0,
                "ratio": 1.9,
                "rounds": {"off": [150.0, 160.0], "on": [290.0, 300.0]},
                "errors": {"off": 0, "on": 0},
            }
        ],
        "registry_memory": {
            "models": ["minilm", "bert-base"],
            "batches": 20,
            "batch_texts": 32,
            "text_tokens": 120,
            "rounds": 2,
            "raw_ort": {"rss_mb": 600.0, "hwm_mb": 610.0},
            "servers": [
                {"ortserve": ".venv/bin/ortserve", "store": "sqlite", "rss_mb": 750.0, "hwm_mb": 800.0},  # +150 MB
                {"ortserve": ".venv/bin/ortserve", "store": "http", "rss_mb": 650.0, "hwm_mb": 700.0},  # +50 MB
            ],
            "per_round": {},
            "seconds": 400.0,
        },
        "under_load": {
            "noisy_neighbour": {"interactive_p50_ms": 14.0, "back_to_back_p50_ms": 5.0},
            "sweep": [{"callers": 32, "goodput_per_s": 500.0}, {"callers": 500, "goodput_per_s": 350.0}],
            "throughput_32_callers": 430.0,
            "rolling_restart": {"failed": 1},
        },
    }


def _by_id(rows: list[Target]) -> dict[str, Target]:
    return {row.id: row for row in rows}


def test_each_issue_15_target_is_a_row_with_its_decision() -> None:
    rows = _by_id(targets(synthetic_run()))
    decisions = {
        "one_caller_over_raw.minilm": True,  # +0.5 ms ≤ +1 ms
        "one_caller_over_raw.bert-base": False,  # +3 ms
        "callers32_vs_raw.minilm": True,  # 0.96× ≥ 0.95×
        "callers32_vs_raw.bert-base": False,  # 0.94×: would have met issue 5's 0.8×, not issue 15's 0.95×
        "registry_rss_over_raw.sqlite": False,  # +150 MB > +100 MB
        "registry_rss_over_raw.http": True,  # +50 MB
        "result_cache.minilm": True,  # 1.9× ≥ 1.8×
    }
    assert {row_id: rows[row_id].met for row_id in decisions} == decisions
    assert "0.95 ×" in rows["callers32_vs_raw.minilm"].text
    assert rows["registry_rss_over_raw.sqlite"].value == 150.0 and "SQLite" in rows["registry_rss_over_raw.sqlite"].text
    assert "over HTTP" in rows["registry_rss_over_raw.http"].text

    slow_cache = synthetic_run()
    slow_cache["result_cache"][0]["ratio"] = 1.7
    assert not _by_id(targets(slow_cache))["result_cache.minilm"].met


def test_rows_next_to_the_previous_round_say_which_got_worse() -> None:
    previous = {
        "callers32_vs_raw.minilm": 0.8,
        "callers32_vs_raw.bert-base": 1.0,
        "under_load.rolling_restart_failed": 0,
    }
    section = targets_section(synthetic_run(), previous)

    def line(start: str) -> str:
        (found,) = [line for line in section.splitlines() if line.startswith(start)]
        return found

    assert line("| 15 (5: 0.8×) | minilm: 32 single-text callers ≥ 0.95 ×").endswith("| 0.96× | 0.80× | no |")
    assert line("| 15 (5: 0.8×) | bert-base: 32 single-text callers").endswith(
        "| 0.94× | 1.00× | **yes** |"  # more than 5 % below the previous round's 1.00×
    )
    assert line("| rolling restart of one of two replicas").endswith("| 1 calls | 0 calls | **yes** |")
    assert line("| 5, 15 | minilm: one caller").endswith("| +0.50 ms | — |  |")  # no previous figure given
    assert not worse(0.96, 1.0, higher_is_better=True) and worse(2.8, 2.59, higher_is_better=False)


def test_missing_sections_are_skipped() -> None:
    run = synthetic_run()
    del run["models"]["bert-base"], run["registry_memory"], run["result_cache"], run["under_load"]
    del run["torch_process"]
    ids = set(_by_id(targets(run)))
    assert ids == {"one_caller_over_raw.minilm", "callers32_vs_raw.minilm", "callers32_vs_mlflow.minilm"} | {
        "start_to_serving"
    }
    text = render(run, previous={})
    assert "bert-base" not in text and "## Behaviour under load" not in text

    failed = synthetic_run()
    failed["registry_memory"] = {"error": "RuntimeError: mlflow server did not start"}
    assert "Not measured: RuntimeError: mlflow server did not start" in render(failed, previous={})
    assert not any(row.id.startswith("registry_rss") for row in targets(failed))


def test_the_committed_previous_round_keys_rows_a_full_run_has() -> None:
    run = copy.deepcopy(synthetic_run())
    ids = set(_by_id(targets(run))) | {figure.id for figure in under_load_figures(run["under_load"])}
    previous = json.loads(PREVIOUS_ROUND.read_text())["figures"]
    assert set(previous) <= ids, set(previous) - ids
    assert {"one_caller_over_raw.bert-base", "callers32_vs_raw.minilm", "under_load.callers32"} <= set(previous)
