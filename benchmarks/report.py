"""Turns one benchmark run (bench.json) into bench.md (tables and the issue's targets) and bench.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BASE = "bert-base"  # the targets that name one model name the BERT-base-sized one


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _ortserve(entry: dict[str, Any], kind: str, callers: int, per_call: int = 1) -> dict[str, Any]:
    return next(
        r
        for r in entry["ortserve"]
        if r["texts"] == kind and r["callers"] == callers and r["texts_per_call"] == per_call
    )


def results_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | texts | system | callers × texts per call | texts/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for name, entry in results["models"].items():
        for kind in ("fixed", "mixed"):
            torch, raw = entry["torch"][kind], entry["raw_ort"][kind]
            lines.append(
                f"| {name} | {kind} | PyTorch pipeline, in process | 1 × 1 | {_fmt(1000 / torch['p50_ms'])} "
                f"| {_fmt(torch['p50_ms'])} | {_fmt(torch['p99_ms'])} | |"
            )
            lines.append(
                f"| {name} | {kind} | PyTorch pipeline, in process | batch_size=32 "
                f"| {_fmt(torch['batch32_texts_per_s'])} | | | |"
            )
            lines.append(
                f"| {name} | {kind} | raw ONNX Runtime, in process | 1 × 1 | {_fmt(1000 / raw['p50_ms'])} "
                f"| {_fmt(raw['p50_ms'])} | {_fmt(raw['p99_ms'])} | |"
            )
            lines.append(
                f"| {name} | {kind} | raw ONNX Runtime, in process | batch of 32 "
                f"| {_fmt(raw['batch32_texts_per_s'])} | | | |"
            )
            for row in entry["ortserve"]:
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


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for every target of issue 5, from one run."""
    rows: list[tuple[str, str, bool]] = []
    models = results["models"]
    for name, entry in models.items():
        served, raw = _ortserve(entry, "fixed", 1)["p50_ms"], entry["raw_ort"]["fixed"]["p50_ms"]
        rows.append(
            (
                f"{name}: one caller, ortserve p50 ≤ raw ORT p50 + 1 ms",
                f"{_fmt(served, 2)} vs {_fmt(raw, 2)} + 1 ms (Δ {_fmt(served - raw, 2)} ms)",
                served <= raw + 1,
            )
        )
    for name, entry in models.items():
        served, raw = _ortserve(entry, "fixed", 32)["texts_per_s"], entry["raw_ort"]["fixed"]["batch32_texts_per_s"]
        rows.append(
            (
                f"{name}: 32 single-text callers ≥ 0.8 × raw ORT batch-32 throughput",
                f"{_fmt(served)} / {_fmt(raw)} texts/s = {served / raw:.2f}×",
                served >= 0.8 * raw,
            )
        )
    base = models[BASE]
    served = _ortserve(base, "fixed", 32)["texts_per_s"]
    torch_rate = base["torch"]["fixed"]["batch32_texts_per_s"]
    rows.append(
        (
            f"{BASE}: 32 callers ≥ 3 × PyTorch pipeline batch_size=32 throughput",
            f"{_fmt(served)} / {_fmt(torch_rate)} texts/s = {served / torch_rate:.2f}×",
            served >= 3 * torch_rate,
        )
    )
    served_p50, torch_p50 = _ortserve(base, "fixed", 1)["p50_ms"], base["torch"]["fixed"]["p50_ms"]
    rows.append(
        (
            f"{BASE}: single-text p50 ≥ 2.5 × lower than the PyTorch pipeline",
            f"{_fmt(torch_p50)} / {_fmt(served_p50)} ms = {torch_p50 / served_p50:.2f}×",
            torch_p50 >= 2.5 * served_p50,
        )
    )
    for name, entry in models.items():
        if "mlflow" not in entry:
            continue
        mlflow_rate = next(r for r in entry["mlflow"] if r["callers"] == 32)["texts_per_s"]
        served = _ortserve(entry, "fixed", 32)["texts_per_s"]
        rows.append(
            (
                f"{name}: 32 callers ≥ 20 × `mlflow models serve` at 32 callers",
                f"{_fmt(served)} / {_fmt(mlflow_rate)} texts/s = {served / mlflow_rate:.1f}×",
                served >= 20 * mlflow_rate,
            )
        )
    server_mb, torch_mb = results["ortserve_rss_mb_loaded"], results["torch_process"]["rss_mb"]
    rows.append(
        (
            "server RSS with both models ≤ 0.35 × PyTorch process holding both: loaded, after one short call",
            f"{_fmt(server_mb, 0)} / {_fmt(torch_mb, 0)} MB = {server_mb / torch_mb:.2f}×",
            server_mb <= 0.35 * torch_mb,
        )
    )
    server_mb, torch_mb = results["ortserve_rss_mb_after_load"], results["torch_process"]["rss_mb_after_batch"]
    rows.append(
        (
            "… and after the heaviest batches (server: after all loads; PyTorch: after 32 long texts per model)",
            f"{_fmt(server_mb, 0)} / {_fmt(torch_mb, 0)} MB = {server_mb / torch_mb:.2f}×",
            server_mb <= 0.35 * torch_mb,
        )
    )
    starts = results["ortserve_start_to_serving_s"]
    median = results["ortserve_start_to_serving_median_s"]
    rows.append(
        (
            "process start to health SERVING ≤ 2 s (cached artifacts, both models)",
            f"median {median:.2f} s of {', '.join(f'{s:.2f}' for s in starts)} s",
            median <= 2.0,
        )
    )
    return rows


def write_report(results: dict[str, Any], out: Path) -> None:
    m = results["machine"]
    model_lines = [
        f"- {name}: {e['shape']['layers']} layers, hidden {e['shape']['hidden']}, {e['shape']['heads']} heads, "
        f"vocab 30522, {e['quantization']}, {e['model_mb']:.0f} MB"
        for name, e in results["models"].items()
    ]
    target_lines = ["| target | measured (same run) | met |", "|---|---|---|"]
    target_lines += [f"| {t} | {measured} | {'yes' if met else '**no**'} |" for t, measured, met in targets(results)]
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa']) or 'no AVX2'}); Python {m['python']}, "
            f"onnxruntime {m['onnxruntime']}, torch {m['torch']}, transformers {m['transformers']}. Load average "
            f"{m['load_average_at_start'][0]:.1f} at start, {m['load_average_at_end'][0]:.1f} at end (a shared machine "
            "when above ~2: ratios from the same run are the figures to read).",
            f"Tokenizer: {results['tokenizer']}. Run took {results['seconds']:.0f} s.",
            "",
            *model_lines,
            "- fixed: 21-token texts; mixed: 5–120 tokens, uniform. ortserve runs as its own process with its "
            "defaults. One caller is the project's blocking `InferenceClient`; N callers are N closed-loop callers on "
            "one asyncio gRPC client in the benchmark process. PyTorch, raw ONNX Runtime and ortserve alternate in "
            f"{results.get('rounds', '?')} rounds for the figures the targets compare.",
            "",
            "## Targets",
            "",
            *target_lines,
            "",
            "## All figures",
            "",
            results_table(results),
            f"Memory: ortserve serving both models {results['ortserve_rss_mb_loaded']:.0f} MB RSS after start, "
            f"{results['ortserve_rss_mb_after_load']:.0f} MB after the load, peak {results['ortserve_hwm_mb']:.0f} MB; "
            f"PyTorch process holding both pipelines {results['torch_process']['rss_mb']:.0f} MB after one short call "
            f"each, {results['torch_process']['rss_mb_after_batch']:.0f} MB after 32 long texts each "
            f"(ready after {results['torch_process']['ready_s']:.1f} s).",
            "",
        ]
    )
    if "under_load" in results:  # issue 10's scenarios, with their own plot (goodput and p99 against callers)
        from .under_load import plot as plot_under_load
        from .under_load import report as report_under_load

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
        for axis in (throughput, latency):
            axis.set_xscale("log", base=2)
            axis.set_xticks([1, 8, 32, 64], ["1", "8", "32", "64"])
            axis.set_xlabel("concurrent callers")
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
