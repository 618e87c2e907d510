"""gRPC latency while `/metrics` is flooded with scrapes, next to the same calls on a quiet server (issue 25).

    python -m benchmarks.scrape_flood [--calls 400] [--scrapers 16] [--executable PATH/TO/ortserve]

Starts `ortserve serve` with the minilm benchmark model and a metrics port, then times one-text `Classify` calls one
after another: first quiet, then while another process opens connections to `/metrics` as fast as `--scrapers`
threads can (a new connection per scrape, as a flood does), then quiet again. Prints p50/p90 of each phase, the ratio
of flood p50 to quiet p50 (target: at most 1.5), and how many scrapes the flood completed; writes the figures to
benchmarks/work/results/scrape_flood.json. `--executable` runs another build's `ortserve` (an older checkout's venv)
for the figures before a change.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .load import LOOPBACK
from .models import build_models
from .paths import RESULTS, WORK
from .processes import free_port, ortserve_process

TEXT = "Shares rallied after a strong quarter."
#: The flood stops by itself after this long, whatever happens to the process that started it.
FLOOD_LIMIT_S = 300.0


def flood(url: str, threads: int, stop: Any, done: Any) -> None:
    """Scrape `url` from `threads` threads, a new connection each time, until `stop` is set; count into `done`."""
    deadline = time.monotonic() + FLOOD_LIMIT_S

    def scraper() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
                with done.get_lock():
                    done.value += 1
            except OSError:
                pass

    workers = [threading.Thread(target=scraper, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def timed_calls(target: str, model: str, calls: int) -> list[float]:
    """Milliseconds of `calls` one-text Classify calls, one after another."""
    request = pb.ClassifyRequest(model=model, texts=[TEXT], top_k=1)
    with grpc.insecure_channel(target) as channel:
        classify = pb_grpc.InferenceStub(channel).Classify
        for _ in range(20):  # warm-up: the connection, the first runs
            classify(request, timeout=10)
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            classify(request, timeout=10)
            seconds.append((time.perf_counter() - start) * 1000)
    return seconds


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"p50_ms": statistics.median(ordered), "p90_ms": ordered[int(0.9 * len(ordered))], "calls": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="calls per phase")
    parser.add_argument("--scrapers", type=int, default=16, help="threads of the flooding process")
    parser.add_argument("--executable", help="the `ortserve` to run (default: this venv's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scrape_flood.json")
    args = parser.parse_args()

    models, _ = build_models(WORK)
    model = next(m for m in models if m.name == "minilm")
    metrics_port = free_port()
    extra = ["--metrics-port", str(metrics_port), "--metrics-host", LOOPBACK]
    log_file = WORK / "scrape_flood.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    executable = [args.executable] if args.executable else []
    with ortserve_process({"minilm": model.artifact}, log_file, extra, executable=executable) as server:
        target = f"{LOOPBACK}:{server.port}"
        quiet = timed_calls(target, "minilm", args.calls)
        stop, done = multiprocessing.Event(), multiprocessing.Value("i", 0)
        flooder = multiprocessing.Process(
            target=flood, args=(f"http://{LOOPBACK}:{metrics_port}/metrics", args.scrapers, stop, done), daemon=True
        )
        flood_started = time.monotonic()
        flooder.start()
        time.sleep(1.0)  # the flood is on
        flooded = timed_calls(target, "minilm", args.calls)
        stop.set()
        flood_seconds = time.monotonic() - flood_started
        flooder.join(30)
        if flooder.is_alive():
            flooder.kill()
        quiet_after = timed_calls(target, "minilm", args.calls)
    results = {
        "quiet": summary(quiet),
        "flood": summary(flooded),
        "quiet_after": summary(quiet_after),
        "scrapes_per_s_during_flood": done.value / max(flood_seconds, 1e-9),
        "scrapers": args.scrapers,
        "executable": args.executable or "this venv's ortserve",
    }
    baseline = min(results["quiet"]["p50_ms"], results["quiet_after"]["p50_ms"])
    results["flood_p50_over_quiet"] = results["flood"]["p50_ms"] / baseline
    for phase in ("quiet", "flood", "quiet_after"):
        figures = results[phase]
        print(f"{phase:<12} p50 {figures['p50_ms']:.2f} ms  p90 {figures['p90_ms']:.2f} ms  ({figures['calls']} calls)")
    print(f"flood p50 / quiet p50: {results['flood_p50_over_quiet']:.2f} (target <= 1.5)")
    print(f"scrapes completed during the flood: {results['scrapes_per_s_during_flood']:.0f}/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
