"""Cost of observability: throughput of 32 callers with metrics and tracing on vs off, in the same run.

    python -m benchmarks.observability_cost [--work benchmarks/work] [--out benchmarks/work/results] [--quick]

Four `ortserve serve` processes serve the same model side by side: `off` (plain), `metrics` (`--metrics-port`,
scraped once a second as Prometheus would), `on` (metrics and `--tracing`, every call traced, its spans exported
over OTLP/gRPC to a sink in this process, so spans are really built, batched, serialized and sent) and `on-sampled`
(as `on`, one trace in ten kept). Rounds alternate between them (the order rotates every round), so load from other
processes on a shared machine falls on all alike. Writes observability-cost.json and observability-cost.md to
--out; target: ≥ 0.97 of `off`.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc

from .load import LOOPBACK, LoadResult, grpc_load, merge
from .models import BenchModel, build_models
from .observability_report import write_report
from .paths import RESULTS, WORK
from .processes import cpu_seconds, free_port, ortserve_process
from .texts import make_texts

log = logging.getLogger("benchmarks.observability")

CALLERS = 32
MODES = ("off", "metrics", "on", "on-sampled")
#: `on-sampled`: as `on`, with OpenTelemetry's standard sampler variables keeping one trace in ten.
SAMPLED_ENV = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
COMPARED = MODES[1:]


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
def scraping(ports: list[int], interval_s: float = 1.0) -> Iterator[dict[int, str]]:
    """Fetch http://127.0.0.1:port/metrics of each port every `interval_s` while the block runs; yields the last
    page of each."""
    last: dict[int, str] = {}
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            for port in ports:
                with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
                    last[port] = response.read().decode()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield last
    finally:
        stop.set()
        thread.join()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure(model: BenchModel, work: Path, quick: bool) -> dict[str, Any]:
    rounds, seconds = (3, 4.0) if quick else (6, 8.0)
    texts = make_texts(model.artifact / "tokenizer.json", 512, mixed=False)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[LoadResult]] = {mode: [] for mode in MODES}
    cpu_ms: dict[str, list[float]] = {mode: [] for mode in MODES}
    metrics_ports = {mode: free_port() for mode in COMPARED}
    with otlp_sink() as (sink_port, spans), ExitStack() as servers:
        tracing = ["--tracing", "--otlp-endpoint", f"http://{LOOPBACK}:{sink_port}"]
        ports, pids = {}, {}
        for mode in MODES:
            extra = [] if mode == "off" else ["--metrics-port", str(metrics_ports[mode])]
            extra += tracing if mode.startswith("on") else []
            with _environment(SAMPLED_ENV if mode == "on-sampled" else {}):  # read by the child at its start
                process = servers.enter_context(
                    ortserve_process({model.name: model.artifact}, logs / f"observability-{mode}.log", extra_args=extra)
                )
                ports[mode], pids[mode] = process.port, process.process.pid
        for mode in MODES:  # warm every server up outside the measured rounds
            grpc_load(ports[mode], model.name, texts, CALLERS, max_calls=200, max_seconds=2)
        with scraping(list(metrics_ports.values())) as pages:
            for round_ in range(rounds):
                order = MODES[round_ % len(MODES) :] + MODES[: round_ % len(MODES)]
                for mode in order:
                    cpu_before = cpu_seconds(pids[mode])
                    result = grpc_load(ports[mode], model.name, texts, CALLERS, max_calls=100_000, max_seconds=seconds)
                    results[mode].append(result)
                    texts_done = result.calls - result.errors
                    cpu_ms[mode].append((cpu_seconds(pids[mode]) - cpu_before) * 1000 / max(1, texts_done))
                    log.info(
                        "round %d/%d, %s: %.1f texts/s, %.2f server CPU ms per text",
                        round_ + 1,
                        rounds,
                        mode,
                        result.texts_per_s,
                        cpu_ms[mode][-1],
                    )
        counted = {
            mode: sum(
                float(line.rsplit(" ", 1)[1])
                for line in pages.get(port, "").splitlines()
                if line.startswith("ortserve_requests_total{") and 'code="OK"' in line
            )
            for mode, port in metrics_ports.items()
        }
    rates = {mode: [r.texts_per_s for r in runs] for mode, runs in results.items()}
    ratios = {mode: [value / off for value, off in zip(rates[mode], rates["off"], strict=True)] for mode in COMPARED}
    pooled = {mode: merge(runs) for mode, runs in results.items()}
    return {
        "model": model.name,
        "callers": CALLERS,
        "rounds": rounds,
        "seconds_per_round": seconds,
        "texts_per_s": rates,
        "median_texts_per_s": {mode: statistics.median(values) for mode, values in rates.items()},
        "ratio_per_round": ratios,
        "ratio_median": {mode: statistics.median(values) for mode, values in ratios.items()},
        "ratio_pooled": {mode: pooled[mode].texts_per_s / pooled["off"].texts_per_s for mode in COMPARED},
        "server_cpu_ms_per_text": cpu_ms,
        "median_server_cpu_ms_per_text": {mode: statistics.median(values) for mode, values in cpu_ms.items()},
        "cpu_ratio_median": {
            mode: statistics.median(
                [off / value for value, off in zip(cpu_ms[mode], cpu_ms["off"], strict=True) if value > 0]
            )
            for mode in COMPARED
        },
        "p50_ms": {mode: r.p50 for mode, r in pooled.items()},
        "p99_ms": {mode: r.p99 for mode, r in pooled.items()},
        "errors": {mode: r.errors for mode, r in pooled.items()},
        "spans_exported": spans[0],
        "requests_counted_by_metrics": counted,
    }


def run(models: list[BenchModel], work: Path, out: Path, quick: bool = False) -> dict[str, Any]:
    """The `make bench` hook: measure on the smaller model, where a per-call cost weighs most, and write the report."""
    model = min(models, key=lambda m: m.hidden_size)
    result = measure(model, work, quick)
    print(write_report(result, out))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    models, _ = build_models(args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    run(models, args.work, args.out, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
