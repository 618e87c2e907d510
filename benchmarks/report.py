"""Turns one benchmark run (bench.json) into bench.md (tables and the issues' targets) and bench.png.

Every target row has a stable id (e.g. `callers32_vs_raw.minilm`) and one comparable figure, so that the previous
round's figures in `previous_round.json` can stand next to this run's, with a "worse?" verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plots import finish_caller_plot

BASE = "bert-base"  # the targets that name one model name the BERT-base-sized one
PREVIOUS_ROUND = Path(__file__).with_name("previous_round.json")
#: A figure is "worse" than the previous round's only if it moved the wrong way by more than this fraction of it:
#: the same-run ratios scatter by a few percent between runs on this shared machine.
NOISE_MARGIN = 0.05


@dataclass(frozen=True)
class Figure:
    """One figure of a run that is compared with the previous round's."""

    id: str  # stable key across runs (previous_round.json uses it); never the display text
    text: str
    value: float  # in `unit`
    unit: str  # "×" (a ratio), "Δ ms" / "Δ MB" (a difference), "ms", "s", "texts/s" or "calls"
    higher_is_better: bool


@dataclass(frozen=True)
class Target(Figure):
    """One target of one run: what it asks (`text`), what was measured, whether it was met; `value` is its figure."""

    issue: str
    measured: str
    met: bool


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _figure(value: float, unit: str) -> str:
    """A compared figure as the targets table shows it, e.g. `0.85×`, `+2.59 ms` (a difference), `1.05 s`."""
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "Δ ms":
        return f"{value:+,.2f} ms"
    if unit == "Δ MB":
        return f"{value:+,.0f} MB"
    if unit in ("texts/s", "calls"):
        return f"{value:,.{1 if unit == 'texts/s' else 0}f} {unit}"
    return f"{value:,.2f} {unit}"


def worse(value: float, previous: float, higher_is_better: bool, margin: float = NOISE_MARGIN) -> bool:
    """Whether `value` is worse than `previous` by more than `margin` of the previous figure (0 allows no change)."""
    allowed = abs(previous) * margin
    return value < previous - allowed if higher_is_better else value > previous + allowed


def _ortserve(entry: dict[str, Any], kind: str, callers: int, per_call: int = 1) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in entry.get("ortserve", [])
            if r["texts"] == kind and r["callers"] == callers and r["texts_per_call"] == per_call
        ),
        None,
    )


def results_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | texts | system | callers × texts per call | texts/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for name, entry in results["models"].items():
        for kind in ("fixed", "mixed"):
            if kind in entry.get("torch", {}):
                torch = entry["torch"][kind]
                lines.append(
                    f"| {name} | {kind} | PyTorch pipeline, in process | 1 × 1 | {_fmt(1000 / torch['p50_ms'])} "
                    f"| {_fmt(torch['p50_ms'])} | {_fmt(torch['p99_ms'])} | |"
                )
                lines.append(
                    f"| {name} | {kind} | PyTorch pipeline, in process | batch_size=32 "
                    f"| {_fmt(torch['batch32_texts_per_s'])} | | | |"
                )
            if kind in entry.get("raw_ort", {}):
                raw = entry["raw_ort"][kind]
                lines.append(
                    f"| {name} | {kind} | raw ONNX Runtime, in process | 1 × 1 | {_fmt(1000 / raw['p50_ms'])} "
                    f"| {_fmt(raw['p50_ms'])} | {_fmt(raw['p99_ms'])} | |"
                )
                lines.append(
                    f"| {name} | {kind} | raw ONNX Runtime, in process | batch of 32 "
                    f"| {_fmt(raw['batch32_texts_per_s'])} | | | |"
                )
            for row in entry.get("ortserve", []):
                if row["texts"] == kind:
                    lines.append(
                        f"| {name} | {kind} | ortserve, gRPC | {row['callers']} × {row['texts_per_call']} "
                        f"| {_fmt(row['texts_per_s'])} | {_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} "
                        f"| {row['errors']} |"
                    )
            for row in entry.get("mlflow", []):
                if row["texts"] == kind:
                    lines.append(
                        f"| {name} | {kind} | mlflow models serve, HTTP | {row['callers']} × 1 "
                        f"| {_fmt(row['texts_per_s'])} | {_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} "
                        f"| {row['errors']} |"
                    )
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> list[Target]:
    """Every target of issues 5 and 15 that this run has the figures for; rows whose section is missing are skipped
    (e.g. a run with `--models minilm` has no bert-base rows)."""
    rows: list[Target] = []
    models = results.get("models", {})
    for name, entry in models.items():
        one, raw_fixed = _ortserve(entry, "fixed", 1), entry.get("raw_ort", {}).get("fixed")
        if one is None or raw_fixed is None:
            continue
        served, raw = one["p50_ms"], raw_fixed["p50_ms"]
        rows.append(
            Target(
                id=f"one_caller_over_raw.{name}",
                issue="5, 15",
                text=f"{name}: one caller (the project's client), ortserve p50 ≤ raw ORT p50 + 1 ms",
                measured=f"{_fmt(served, 2)} vs {_fmt(raw, 2)} + 1 ms (Δ {_fmt(served - raw, 2)} ms)",
                met=served <= raw + 1,
                value=served - raw,
                unit="Δ ms",
                higher_is_better=False,
            )
        )
    for name, entry in models.items():
        many, raw_fixed = _ortserve(entry, "fixed", 32), entry.get("raw_ort", {}).get("fixed")
        if many is None or raw_fixed is None:
            continue
        served, raw = many["texts_per_s"], raw_fixed["batch32_texts_per_s"]
        rows.append(
            Target(
                id=f"callers32_vs_raw.{name}",
                issue="15 (5: 0.8×)",
                text=f"{name}: 32 single-text callers ≥ 0.95 × raw ORT batch-32 throughput",
                measured=f"{_fmt(served)} / {_fmt(raw)} texts/s = {served / raw:.2f}×",
                met=served >= 0.95 * raw,
                value=served / raw,
                unit="×",
                higher_is_better=True,
            )
        )
    base = models.get(BASE, {})
    many, torch_fixed = _ortserve(base, "fixed", 32), base.get("torch", {}).get("fixed")
    if many is not None and torch_fixed is not None:
        served, torch_rate = many["texts_per_s"], torch_fixed["batch32_texts_per_s"]
        rows.append(
            Target(
                id=f"callers32_vs_torch.{BASE}",
                issue="5",
                text=f"{BASE}: 32 callers ≥ 3 × PyTorch pipeline batch_size=32 throughput",
                measured=f"{_fmt(served)} / {_fmt(torch_rate)} texts/s = {served / torch_rate:.2f}×",
                met=served >= 3 * torch_rate,
                value=served / torch_rate,
                unit="×",
                higher_is_better=True,
            )
        )
    one = _ortserve(base, "fixed", 1)
    if one is not None and torch_fixed is not None:
        served_p50, torch_p50 = one["p50_ms"], torch_fixed["p50_ms"]
        rows.append(
            Target(
                id=f"one_caller_vs_torch.{BASE}",
                issue="5",
                text=f"{BASE}: single-text p50 ≥ 2.5 × lower than the PyTorch pipeline",
                measured=f"{_fmt(torch_p50)} / {_fmt(served_p50)} ms = {torch_p50 / served_p50:.2f}×",
                met=torch_p50 >= 2.5 * served_p50,
                value=torch_p50 / served_p50,
                unit="×",
                higher_is_better=True,
            )
        )
    for name, entry in models.items():
        mlflow32 = next((r for r in entry.get("mlflow", []) if r["callers"] == 32), None)
        many = _ortserve(entry, "fixed", 32)
        if mlflow32 is None or many is None:
            continue
        served, mlflow_rate = many["texts_per_s"], mlflow32["texts_per_s"]
        rows.append(
            Target(
                id=f"callers32_vs_mlflow.{name}",
                issue="5",
                text=f"{name}: 32 callers ≥ 20 × `mlflow models serve` at 32 callers",
                measured=f"{_fmt(served)} / {_fmt(mlflow_rate)} texts/s = {served / mlflow_rate:.1f}×",
                met=served >= 20 * mlflow_rate,
                value=served / mlflow_rate,
                unit="×",
                higher_is_better=True,
            )
        )
    torch_process = results.get("torch_process")
    both = "both models" if len(models) == 2 else ", ".join(models)
    if torch_process is not None and "ortserve_rss_mb_loaded" in results:
        server_mb, torch_mb = results["ortserve_rss_mb_loaded"], torch_process["rss_mb"]
        rows.append(
            Target(
                id="rss_vs_torch.loaded",
                issue="5",
                text=f"server RSS with {both} ≤ 0.35 × PyTorch process holding the same: loaded, after one short call",
                measured=f"{_fmt(server_mb, 0)} / {_fmt(torch_mb, 0)} MB = {server_mb / torch_mb:.2f}×",
                met=server_mb <= 0.35 * torch_mb,
                value=server_mb / torch_mb,
                unit="×",
                higher_is_better=False,
            )
        )
    if torch_process is not None and "ortserve_rss_mb_after_load" in results:
        server_mb, torch_mb = results["ortserve_rss_mb_after_load"], torch_process["rss_mb_after_batch"]
        rows.append(
            Target(
                id="rss_vs_torch.after_batches",
                issue="5",
                text="… and after the heaviest batches (server: after all loads; PyTorch: after 32 long texts per "
                "model)",
                measured=f"{_fmt(server_mb, 0)} / {_fmt(torch_mb, 0)} MB = {server_mb / torch_mb:.2f}×",
                met=server_mb <= 0.35 * torch_mb,
                value=server_mb / torch_mb,
                unit="×",
                higher_is_better=False,
            )
        )
    if "ortserve_start_to_serving_median_s" in results:
        starts = results.get("ortserve_start_to_serving_s", [])
        median = results["ortserve_start_to_serving_median_s"]
        rows.append(
            Target(
                id="start_to_serving",
                issue="5",
                text=f"process start to health SERVING ≤ 2 s (cached artifacts, {both})",
                measured=f"median {median:.2f} s of {', '.join(f'{s:.2f}' for s in starts)} s",
                met=median <= 2.0,
                value=median,
                unit="s",
                higher_is_better=False,
            )
        )
    rows += registry_memory_targets(results.get("registry_memory"))
    for cache in results.get("result_cache", []):
        rounds = len(cache["rounds"]["on"])
        rows.append(
            Target(
                id=f"result_cache.{cache['model']}",
                issue="15",
                text=f"{cache['model']}: result cache on, {cache['repeat_fraction']:.0%} of the texts repeating, "
                f"{cache['callers']} callers: ≥ 1.8 × the throughput without it",
                measured=f"{_fmt(cache['texts_per_s_on'])} vs {_fmt(cache['texts_per_s_off'])} texts/s (medians); "
                f"median of {rounds} paired round ratios {cache['ratio']:.2f}×"
                + (
                    f"; at most {cache['bound_at_grpc_floor']:.2f}× with hits as cheap as a bare gRPC round trip"
                    if "bound_at_grpc_floor" in cache
                    else ""
                ),
                met=cache["ratio"] >= 1.8,
                value=cache["ratio"],
                unit="×",
                higher_is_better=True,
            )
        )
    return rows


REGISTRY_STORES = {"sqlite": "SQLite store", "http": "`mlflow server` over HTTP"}


def registry_memory_targets(memory: dict[str, Any] | None) -> list[Target]:
    """Issue 15's memory target, one row per registry kind (and per ortserve executable when several were run)."""
    if not memory or "rss_mb" not in memory.get("raw_ort", {}):  # not run, or failed (the section says why)
        return []
    rows = []
    executables = list(dict.fromkeys(server["ortserve"] for server in memory["servers"]))
    floor = memory["raw_ort"]["rss_mb"]
    for server in memory["servers"]:
        if math.isnan(server.get("rss_mb", math.nan)):
            continue
        store = server["store"]
        which = f", {server['ortserve']}" if len(executables) > 1 else ""
        suffix = f"@{executables.index(server['ortserve'])}" if len(executables) > 1 else ""
        rss = server["rss_mb"]
        rows.append(
            Target(
                id=f"registry_rss_over_raw.{store}{suffix}",
                issue="15",
                text=f"server RSS, {' and '.join(memory['models'])} from the registry "
                f"({REGISTRY_STORES.get(store, store)}{which}), after the heaviest batches ({memory['batches']} × "
                f"{memory['batch_texts']} texts of {memory['text_tokens']} tokens per model) ≤ raw ORT's RSS, same "
                "models, + 100 MB",
                measured=f"{_fmt(rss, 0)} vs {_fmt(floor, 0)} + 100 MB (Δ {rss - floor:+,.0f} MB)",
                met=rss <= floor + 100,
                value=rss - floor,
                unit="Δ MB",
                higher_is_better=False,
            )
        )
    return rows


def under_load_figures(under_load: dict[str, Any] | None) -> list[Figure]:
    """The figures behind issue 10's targets (its met/not-met rows are in the "Behaviour under load" section)."""
    if not under_load:
        return []
    figures = []
    noisy = under_load.get("noisy_neighbour")
    if noisy is not None:
        figures.append(
            Figure(
                "under_load.interactive_p50",
                "interactive p50 beside two bulk callers",
                noisy["interactive_p50_ms"],
                "ms",
                higher_is_better=False,
            )
        )
        figures.append(
            Figure(
                "under_load.back_to_back_p50",
                "… the same caller with no think time",
                noisy["back_to_back_p50_ms"],
                "ms",
                higher_is_better=False,
            )
        )
    sweep = under_load.get("sweep")
    if sweep:
        best = max(level["goodput_per_s"] for level in sweep)
        figures.append(
            Figure(
                "under_load.goodput_at_most_callers_vs_best",
                f"goodput at {sweep[-1]['callers']} callers / the best of the sweep",
                sweep[-1]["goodput_per_s"] / best,
                "×",
                higher_is_better=True,
            )
        )
    if "throughput_32_callers" in under_load:
        figures.append(
            Figure(
                "under_load.callers32",
                "32 single-text callers",
                under_load["throughput_32_callers"],
                "texts/s",
                higher_is_better=True,
            )
        )
    restart = under_load.get("rolling_restart")
    if restart is not None:
        figures.append(
            Figure(
                "under_load.rolling_restart_failed",
                "rolling restart of one of two replicas: failed calls",
                restart["failed"],
                "calls",
                higher_is_better=False,
            )
        )
    return figures


def load_previous_round(path: Path = PREVIOUS_ROUND) -> dict[str, float]:
    """The previous round's figure of every target row, by row id (empty when the file is absent)."""
    if not path.is_file():
        return {}
    figures: dict[str, float] = json.loads(path.read_text())["figures"]
    return figures


def _against_previous(figure: Figure, previous: dict[str, float]) -> str:
    """The "previous round" and "worse?" cells of a row."""
    if figure.id not in previous:
        return "— | "
    before = previous[figure.id]
    verdict = "**yes**" if worse(figure.value, before, figure.higher_is_better) else "no"
    return f"{_figure(before, figure.unit)} | {verdict}"


def targets_section(results: dict[str, Any], previous: dict[str, float]) -> str:
    """The targets table (each row next to the previous round's figure) and issue 10's figures against theirs."""
    lines = [
        "| issue | target | measured (same run) | met | compared figure | previous round | worse? |",
        "|---|---|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {t.issue} | {t.text} | {t.measured} | {'yes' if t.met else '**no**'} | {_figure(t.value, t.unit)} "
        f"| {_against_previous(t, previous)} |"
        for t in targets(results)
    ]
    figures = under_load_figures(results.get("under_load"))
    if figures:
        lines += [
            "",
            "Issue 10's figures against the previous round (its targets, met or not, are under "
            '"Behaviour under load" below):',
            "",
            "| figure | this run | previous round | worse? |",
            "|---|---:|---:|---|",
        ]
        lines += [f"| {f.text} | {_figure(f.value, f.unit)} | {_against_previous(f, previous)} |" for f in figures]
    lines += [
        "",
        f'"worse?": the compared figure moved the wrong way (a ratio or rate lower, a latency, difference, memory '
        f"ratio or count higher) by more than {NOISE_MARGIN:.0%} of the previous round's figure "
        f'({PREVIOUS_ROUND.name}); "—": no figure from the previous round (a new target).',
    ]
    return "\n".join(lines) + "\n"


def registry_memory_section(results: dict[str, Any]) -> str:
    """A Markdown table of `registry_memory.measure`'s medians: each server's margin over raw ONNX Runtime."""
    floor = results["raw_ort"]
    lines = [
        f"{', '.join(results['models'])} served as `models:/bench-NAME@production`; VmRSS and VmHWM after "
        f"{results['batches']} batches of {results['batch_texts']} texts of {results['text_tokens']} tokens per "
        f"model; medians of {results['rounds']} interleaved round(s). Raw ONNX Runtime: a plain Python process "
        "holding the same artifacts, the same batches.",
        "",
        f"| system | VmRSS after {results['batches']}×{results['batch_texts']} long texts per model (MB) | VmHWM (MB) "
        "| − raw ORT (MB) | RSS loaded (MB) | start from verified cache (s) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| raw ONNX Runtime, same artifacts | {floor['rss_mb']:.0f} | {floor['hwm_mb']:.0f} | | | |",
    ]
    for server in results["servers"]:
        nan = float("nan")
        rss = server.get("rss_mb", nan)
        store = REGISTRY_STORES.get(server["store"], server["store"])
        lines.append(
            f"| {server['ortserve']}, {store} | {rss:.0f} | {server.get('hwm_mb', nan):.0f} "
            f"| {rss - floor['rss_mb']:+.0f} | {server.get('rss_mb_loaded', nan):.0f} "
            f"| {server.get('start_from_verified_cache_s', nan):.2f} |"
        )
    return "\n".join(lines) + "\n"


def render(results: dict[str, Any], previous: dict[str, float] | None = None) -> str:
    """bench.md's text (without writing the plots)."""
    previous = load_previous_round() if previous is None else previous
    m = results["machine"]
    model_lines = [
        f"- {name}: {e['shape']['layers']} layers, hidden {e['shape']['hidden']}, {e['shape']['heads']} heads, "
        f"vocab 30522, {e['quantization']}, {e['model_mb']:.0f} MB"
        for name, e in results["models"].items()
    ]
    end_load = m.get("load_average_at_end", [math.nan])[0]
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa']) or 'no AVX2'}); Python {m['python']}, "
            f"onnxruntime {m['onnxruntime']}, torch {m['torch']}, transformers {m['transformers']}. Load average "
            f"{m['load_average_at_start'][0]:.1f} at start, {end_load:.1f} at end (a shared machine "
            "when above ~2: ratios from the same run are the figures to read).",
            f"Tokenizer: {results.get('tokenizer', '?')}. Run took {results.get('seconds', math.nan):.0f} s.",
            "",
            *model_lines,
            "- fixed: 21-token texts; mixed: 5–120 tokens, uniform. ortserve runs as its own process with its "
            "defaults. One caller is the project's blocking `InferenceClient`; N callers are N closed-loop callers on "
            "one asyncio gRPC client in the benchmark process. PyTorch, raw ONNX Runtime and ortserve alternate in "
            f"{results.get('rounds', '?')} rounds for the figures the targets compare.",
            "",
            "## Targets",
            "",
            targets_section(results, previous),
            "## All figures",
            "",
            results_table(results),
            "",
        ]
    )
    if "torch_process" in results and "ortserve_rss_mb_loaded" in results:
        text += (
            f"Memory: ortserve serving both models {results['ortserve_rss_mb_loaded']:.0f} MB RSS after start, "
            f"{results['ortserve_rss_mb_after_load']:.0f} MB after the load, peak {results['ortserve_hwm_mb']:.0f} "
            f"MB; PyTorch process holding both pipelines {results['torch_process']['rss_mb']:.0f} MB after one short "
            f"call each, {results['torch_process']['rss_mb_after_batch']:.0f} MB after 32 long texts each "
            f"(ready after {results['torch_process']['ready_s']:.1f} s).\n"
        )
    if "registry_memory" in results:  # issue 15: server memory with the models from the registry
        memory = results["registry_memory"]
        section = f"Not measured: {memory['error']}\n" if "error" in memory else registry_memory_section(memory)
        text += "\n## Server memory with models from the registry\n\n" + section
    if "start_to_serving" in results:  # issue 26: cold and warm starts from a directory and both registry kinds
        from .start_to_serving_report import start_to_serving_section as report_start_to_serving

        starts = results["start_to_serving"]
        section = f"Not measured: {starts['error']}\n" if "error" in starts else report_start_to_serving(starts)
        text += "\n## Start to SERVING: local directory, SQLite registry, mlflow server\n\n" + section
    return text


def write_report(results: dict[str, Any], out: Path, previous: dict[str, float] | None = None) -> None:
    """bench.md and bench.png (and under-load.png when the run has issue 10's scenarios) in `out`."""
    text = render(results, previous)
    if "under_load" in results:  # issue 10's scenarios, with their own plot (goodput and p99 against callers)
        from .under_load_report import plot as plot_under_load
        from .under_load_report import report as report_under_load

        text += "\n## Behaviour under load\n\n" + report_under_load(results["under_load"])
        text += "\n![goodput and p99 against callers](under-load.png)\n"
        plot_under_load(results["under_load"], out / "under-load.png")
    (out / "bench.md").write_text(text)
    plot(results, out / "bench.png")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["models"])
    fig, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 8), squeeze=False)
    for column, name in enumerate(names):
        entry = results["models"][name]
        throughput, latency = axes[0][column], axes[1][column]
        for kind, style in (("fixed", "-o"), ("mixed", "--s")):
            rows = [r for r in entry["ortserve"] if r["texts"] == kind and r["texts_per_call"] == 1]
            callers = [r["callers"] for r in rows]
            throughput.plot(callers, [r["texts_per_s"] for r in rows], style, label=f"ortserve ({kind})")
            latency.plot(callers, [r["p99_ms"] for r in rows], style, label=f"ortserve p99 ({kind})")
        throughput.axhline(
            entry["raw_ort"]["fixed"]["batch32_texts_per_s"],
            color="green",
            linestyle=":",
            label="raw ORT batch 32 (fixed)",
        )
        throughput.axhline(
            entry["raw_ort"]["mixed"]["batch32_texts_per_s"],
            color="green",
            linestyle="-.",
            alpha=0.6,
            label="raw ORT batch 32 (mixed, padded to longest)",
        )
        throughput.axhline(
            entry["torch"]["fixed"]["batch32_texts_per_s"],
            color="red",
            linestyle=":",
            label="PyTorch batch_size=32 (fixed)",
        )
        if entry.get("mlflow"):
            rows = entry["mlflow"]
            throughput.plot(
                [r["callers"] for r in rows],
                [r["texts_per_s"] for r in rows],
                "-^",
                color="gray",
                label="mlflow models serve",
            )
            latency.plot(
                [r["callers"] for r in rows],
                [r["p99_ms"] for r in rows],
                "-^",
                color="gray",
                label="mlflow models serve p99",
            )
        throughput.set_title(f"{name}: throughput, single-text callers")
        throughput.set_ylabel("texts/s")
        latency.set_title(f"{name}: p99 latency")
        latency.set_ylabel("ms")
        latency.set_yscale("log")
    finish_caller_plot(fig, [axis for column in axes for axis in column], [1, 8, 32, 64], path)
