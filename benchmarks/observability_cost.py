"""Cost of observability: throughput of 32 callers with metrics and tracing on vs off, in the same run.

    python -m benchmarks.observability_cost [--work benchmarks/work] [--out benchmarks/results] [--quick]

Two `ortserve serve` processes serve the same model side by side: one plain, one with `--metrics-port` and
`--tracing`, its spans exported over OTLP/gRPC to a sink in this process (so spans are really built, batched,
serialized and sent) and its /metrics scraped once a second, as Prometheus would. Rounds alternate between the two
(and swap which goes first), so load from other processes on a shared machine falls on both alike. Writes
observability-cost.json and observability-cost.md to --out; target: on/off ≥ 0.97.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from .load import LOOPBACK, LoadResult, grpc_load, merge
from .models import BenchModel, build_models
from .processes import free_port, ortserve_process
from .texts import make_texts

log = logging.getLogger("benchmarks.observability")

CALLERS = 32
TARGET_RATIO = 0.97


@contextmanager
def otlp_sink() -> Iterator[tuple[int, list[int]]]:
    """An OTLP/gRPC trace receiver on loopback that counts the spans it gets and drops them."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

    received = [0]

    class Sink(otlp_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the OTLP method name
            received[0] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            return otlp.ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    server.start()
    try:
        yield port, received
    finally:
        server.stop(1)


@contextmanager
def scraping(port: int, interval_s: float = 1.0) -> Iterator[list[str]]:
    """Fetch http://127.0.0.1:port/metrics every `interval_s` while the block runs; yields the last page."""
    last: list[str] = [""]
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
                last[0] = response.read().decode()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield last
    finally:
        stop.set()
        thread.join()


def measure(model: BenchModel, work: Path, quick: bool) -> dict[str, Any]:
    rounds, seconds = (3, 4.0) if quick else (6, 8.0)
    texts = make_texts(model.artifact / "tokenizer.json", 512, mixed=False)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[LoadResult]] = {"off": [], "on": []}
    metrics_port = free_port()
    with otlp_sink() as (sink_port, spans), \
            ortserve_process({model.name: model.artifact}, logs / "observability-off.log") as off, \
            ortserve_process({model.name: model.artifact}, logs / "observability-on.log", extra_args=[
                "--metrics-port", str(metrics_port), "--tracing", "--otlp-endpoint", f"http://{LOOPBACK}:{sink_port}",
            ]) as on:
        ports = {"off": off.port, "on": on.port}
        for mode in ("off", "on"):  # warm both up outside the measured rounds
            grpc_load(ports[mode], model.name, texts, CALLERS, max_calls=200, max_seconds=2)
        with scraping(metrics_port) as page:
            for round_ in range(rounds):
                order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
                for mode in order:
                    result = grpc_load(ports[mode], model.name, texts, CALLERS, max_calls=100_000, max_seconds=seconds)
                    results[mode].append(result)
                    log.info("round %d/%d, observability %s: %.1f texts/s", round_ + 1, rounds, mode,
                             result.texts_per_s)
        scraped_requests = sum(
            float(line.rsplit(" ", 1)[1]) for line in page[0].splitlines()
            if line.startswith("ortserve_requests_total{") and 'code="OK"' in line
        )
    rates = {mode: [r.texts_per_s for r in runs] for mode, runs in results.items()}
    ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    pooled = {mode: merge(runs) for mode, runs in results.items()}
    return {
        "model": model.name, "callers": CALLERS, "rounds": rounds, "seconds_per_round": seconds,
        "texts_per_s": rates,
        "median_texts_per_s": {mode: statistics.median(values) for mode, values in rates.items()},
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "ratio_pooled": pooled["on"].texts_per_s / pooled["off"].texts_per_s,
        "p50_ms": {mode: r.p50 for mode, r in pooled.items()},
        "p99_ms": {mode: r.p99 for mode, r in pooled.items()},
        "errors": {mode: r.errors for mode, r in pooled.items()},
        "spans_exported": spans[0],
        "requests_counted_by_metrics": scraped_requests,
        "target_ratio": TARGET_RATIO,
    }


def write_report(result: dict[str, Any], out: Path) -> str:
    (out / "observability-cost.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = "met" if result["ratio_median"] >= TARGET_RATIO else "NOT met"
    lines = [
        "# Observability cost: metrics + tracing on vs off",
        "",
        f"Model `{result['model']}`, {result['callers']} callers × 1 text, {result['rounds']} interleaved rounds of "
        f"{result['seconds_per_round']:.0f} s per mode; two server processes side by side, the `on` one with "
        "`--metrics-port` (scraped every second) and `--tracing` exporting over OTLP/gRPC to a local sink.",
        "",
        "| mode | median texts/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|",
    ]
    for mode in ("off", "on"):
        lines.append(f"| {mode} | {result['median_texts_per_s'][mode]:.1f} | {result['p50_ms'][mode]:.1f} | "
                     f"{result['p99_ms'][mode]:.1f} | {result['errors'][mode]} |")
    lines += [
        "",
        f"on/off throughput: median of per-round ratios **{result['ratio_median']:.3f}** (pooled "
        f"{result['ratio_pooled']:.3f}; per round {', '.join(f'{r:.3f}' for r in result['ratio_per_round'])}); "
        f"target ≥ {TARGET_RATIO} {verdict}. Spans exported: {result['spans_exported']}; OK calls counted by the "
        f"metrics: {result['requests_counted_by_metrics']:.0f}.",
        "",
    ]
    text = "\n".join(lines)
    (out / "observability-cost.md").write_text(text)
    return text


def run(models: list[BenchModel], work: Path, out: Path, quick: bool = False) -> dict[str, Any]:
    """The `make bench` hook: measure on the smaller model, where a per-call cost weighs most, and write the report."""
    model = min(models, key=lambda m: m.hidden_size)
    result = measure(model, work, quick)
    print(write_report(result, out))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    models, _ = build_models(args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    run(models, args.work, args.out, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
