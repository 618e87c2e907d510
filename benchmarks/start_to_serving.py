"""Start-to-SERVING of one model from a local directory, a SQLite registry and a real `mlflow server` (issue 26).

The same artifact (the 6-layer BERT-base-sized int8 benchmark model unless `--artifact` names another) is served as
`--model m=DIR`, as `models:/bench-start@production` from a SQLite store, and from a real `mlflow server` on
127.0.0.1 (proxied artifacts). Each registry starts from an empty cache (a new `--cache-dir`), then again from the
cache that start filled (warm: verified, not downloaded); the local directory is started in both slots too. Every
round runs the six starts one after the other, so the systems alternate; the seconds from `Popen` to health SERVING
and the server's VmRSS right then are reported as medians over the rounds, next to issue 26's targets:

- empty cache: HTTP registry ≤ local + 0.5 s, SQLite registry ≤ local + 1.5 s;
- warm cache: either registry ≤ local + 0.5 s.

    .venv/bin/python -m benchmarks.start_to_serving [--rounds 3] [--artifact DIR] [--ortserve PATH ...]

`make bench` (benchmarks.run) calls `measure` and puts the figures in bench.json as `start_to_serving`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ortserve.server.healthcheck import wait_until_serving

from .load import LOOPBACK
from .processes import _stop, free_port, rss_mb, serve_command
from .registry_memory import register
from .start_to_serving_report import CACHES, SYSTEMS

log = logging.getLogger(__name__)

REGISTERED = "bench-start"


def start_once(ortserve: str, model_uri: str, extra: list[str], log_file: Path) -> dict[str, float]:
    """One `ortserve serve` of `model_uri`: seconds from Popen to health SERVING, and VmRSS (MB) right then."""
    port = free_port()
    executable, *flags = shlex.split(ortserve)
    command = serve_command(port, *flags, "--poll-interval", "0", "--model", f"m={model_uri}", *extra)
    command[0:1] = [executable]
    with log_file.open("ab") as log_handle:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log_handle, stderr=log_handle)
        try:
            wait_until_serving(f"{LOOPBACK}:{port}", process, timeout=300, poll_s=0.01)
            seconds = time.perf_counter() - start
            return {"start_to_serving_s": seconds, "rss_mb": rss_mb(process.pid)[0]}
        finally:
            _stop(process)


def measure(artifact: Path, work: Path, rounds: int = 3, executables: list[str] | None = None) -> dict[str, Any]:
    """Every (ortserve, system, cache) start in `rounds` alternating rounds; medians and per-round figures, JSON-able.

    `executables`: ortserve commands, e.g. main's and this branch's (default: the `ortserve` beside this Python);
    within a round each runs the same start in turn, so they share the machine's load."""
    repository = str(Path(__file__).resolve().parent.parent)
    if repository not in sys.path:  # tests.mlflow_server starts the real `mlflow server`
        sys.path.insert(0, repository)
    from tests.mlflow_server import MlflowServer

    executables = executables or [str(Path(sys.executable).with_name("ortserve"))]
    root = work / "start-to-serving"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    sqlite_uri = f"sqlite:///{root / 'mlflow.db'}"
    http = MlflowServer(root / "mlflow-http").start()
    per_round: dict[str, list[dict[str, float]]] = {}
    started = time.perf_counter()
    try:
        import mlflow

        # The SQLite store's artifacts under `root`, not in ./mlruns (register() uses this experiment).
        mlflow.MlflowClient(sqlite_uri).create_experiment("registry-memory", (root / "sqlite-artifacts").as_uri())
        for uri in (sqlite_uri, http.tracking_uri):
            register(uri, REGISTERED, artifact)
        registries = {"sqlite": sqlite_uri, "http": http.tracking_uri}
        for index in range(rounds):
            for cache_state in CACHES:
                for system in SYSTEMS:
                    for number, ortserve in enumerate(executables):
                        cache = root / f"cache-{index}-{number}-{system}"  # filled by the empty start, reused warm
                        if system == "local":
                            figures = start_once(ortserve, str(artifact), [], root / "ortserve.log")
                        else:
                            extra = ["--tracking-uri", registries[system], "--cache-dir", str(cache)]
                            uri = f"models:/{REGISTERED}@production"
                            figures = start_once(ortserve, uri, extra, root / "ortserve.log")
                        per_round.setdefault(f"{ortserve} | {system} | {cache_state}", []).append(figures)
                        log.info(
                            "round %d, %s, %s, %s cache: %s",
                            index + 1,
                            ortserve,
                            system,
                            cache_state,
                            _rounded(figures),
                        )
    finally:
        http.stop()
    medians = {
        key: {field: statistics.median(r[field] for r in runs) for field in runs[0]} for key, runs in per_round.items()
    }
    return {
        "artifact": artifact.name,
        "model_mb": (artifact / "model.onnx").stat().st_size / 1e6,
        "rounds": rounds,
        "executables": executables,
        "medians": medians,
        "per_round": per_round,
        "seconds": time.perf_counter() - started,
    }


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 2) for key, value in figures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"), help="models, registries, caches, logs")
    parser.add_argument("--artifact", type=Path, help="an ortserve artifact directory (default: the bert-base model)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the six starts")
    parser.add_argument(
        "--ortserve",
        action="append",
        default=[],
        help="an ortserve executable to start, optionally with serve flags (repeatable; default: this environment's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    artifact = args.artifact
    if artifact is None:
        from .models import build_models

        models, _ = build_models(args.work)
        artifact = next(m.artifact for m in models if m.name == "bert-base")
    results = measure(artifact, args.work, args.rounds, args.ortserve or None)
    from .start_to_serving_report import start_to_serving_section

    print(start_to_serving_section(results))
    (args.work / "start-to-serving" / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
