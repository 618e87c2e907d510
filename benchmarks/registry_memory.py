"""Server memory with two models served from the registry, next to raw ONNX Runtime, and start from a verified cache.

For each `ortserve` executable given (e.g. main's and this branch's) and each registry (a SQLite store, a real
`mlflow server` over HTTP), one fresh server serves both benchmark models as `models:/NAME@production`, runs
BATCHES batches of 32 long texts per model, and reports its VmRSS and VmHWM; then it is started again on the same
(now verified) cache and the seconds from `Popen` to health SERVING are reported. A plain Python process holding
the same two artifacts in raw ONNX Runtime runs the same batches for the floor. Systems are interleaved per round.

    .venv/bin/python -m benchmarks.registry_memory [--ortserve ../main-checkout/.venv/bin/ortserve \
        --ortserve ".venv/bin/ortserve --no-shared-arena" --ortserve .venv/bin/ortserve] [--rounds 2]

`make bench` (benchmarks.run) calls `measure` with this environment's ortserve and puts the figures in bench.json as
`registry_memory`; bench.md shows issue 15's target ("server RSS ≤ raw ONNX Runtime's + 100 MB") per registry kind.
This module only measures: benchmarks.report renders the figures (`registry_memory_section`).
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

from ortserve.client import InferenceClient
from ortserve.contract.artifact import TOKENIZER_FILE
from ortserve.server.healthcheck import wait_until_serving

from .load import LOOPBACK
from .models import BenchModel, build_models
from .paths import WORK
from .processes import _stop, free_port, memory_holder, rss_mb, serve_command
from .texts import _single_token_words

log = logging.getLogger(__name__)

BATCHES = 20
BATCH = 32
LONG_TOKENS = 120
RAW_ORT = "raw ONNX Runtime"  # the floor's key in the per-round figures

RAW_ORT_HOLDER = """
import json, sys
from pathlib import Path
from benchmarks.baselines import RawOrt
from ortserve.server.runtime import SessionConfig

texts = json.load(open(sys.argv[1]))
models = [RawOrt(Path(p), SessionConfig()) for p in sys.argv[2:]]
for model in models:
    model(["warm up the model once"])
for model in models:
    for i in range(0, len(texts), 32):
        model(texts[i : i + 32])
fields = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("VmRSS", "VmHWM"):
        fields[key] = int(value.split()[0]) / 1024
print(json.dumps({"rss_mb": fields["VmRSS"], "hwm_mb": fields["VmHWM"]}))
"""


def long_texts(tokenizer_file: Path, count: int, tokens: int = LONG_TOKENS, seed: int = 7) -> list[str]:
    """`count` texts of `tokens` tokens each (special tokens included): the largest tensors a batch of 32 makes."""
    import random

    from tokenizers import Tokenizer

    words = _single_token_words(Tokenizer.from_file(str(tokenizer_file)))
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(tokens - 2)) for _ in range(count)]


def register(tracking_uri: str, name: str, artifact: Path) -> None:
    """Log `artifact` the way export does (onnx model dir + extra files) and point alias `production` at it."""
    from tests.registry_helpers import register_run_artifacts  # the repository is on sys.path (see `measure`)

    register_run_artifacts(tracking_uri, name, artifact, alias="production", experiment="registry-memory")


def serve(
    ortserve: str, tracking_uri: str, cache: Path, models: list[BenchModel], log_file: Path, texts: list[str] | None
) -> dict[str, float]:
    """Start `ortserve` on the registry, optionally run the batches; return start seconds and memory figures."""
    port = free_port()
    executable, *extra = shlex.split(ortserve)
    command = serve_command(
        port,
        *extra,
        "--tracking-uri",
        tracking_uri,
        "--cache-dir",
        str(cache),
        "--poll-interval",
        "5",
        executable=[executable],
    )
    for model in models:
        command += ["--model", f"{model.name}=models:/bench-{model.name}@production"]
    with log_file.open("ab") as log_handle:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log_handle, stderr=log_handle)
        try:
            wait_until_serving(f"{LOOPBACK}:{port}", process, timeout=300, poll_s=0.01)
            figures = {"start_to_serving_s": time.perf_counter() - start}
            figures["rss_mb_loaded"] = rss_mb(process.pid)[0]
            if texts is not None:
                with InferenceClient(f"{LOOPBACK}:{port}", timeout=300) as client:
                    for model in models:
                        for i in range(0, len(texts), BATCH):
                            client.classify(model.name, texts[i : i + BATCH])
                time.sleep(6)  # at least one poll round after the batches (a child on this branch)
                figures["rss_mb"], figures["hwm_mb"] = rss_mb(process.pid)
            return figures
        finally:
            _stop(process)


def raw_ort(models: list[BenchModel], texts: list[str], scratch: Path) -> dict[str, float]:
    return memory_holder(RAW_ORT_HOLDER, texts, scratch / "registry-memory-texts.json", [m.artifact for m in models])


def measure(
    models: list[BenchModel], work: Path, executables: list[str] | None = None, rounds: int = 1
) -> dict[str, Any]:
    """Every system in `rounds` interleaved rounds; medians per system as a JSON-able dict (`report` renders it).

    `executables`: ortserve commands, optionally with serve flags (default: the `ortserve` beside this Python).
    Registries, caches and the servers' log go to `work`/registry-memory, emptied first.
    """
    from tests.mlflow_server import MlflowServer  # the real `mlflow server`, as the registry tests start it

    executables = executables or [str(Path(sys.executable).with_name("ortserve"))]
    started = time.perf_counter()
    root = work / "registry-memory"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    sqlite_uri = f"sqlite:///{root / 'mlflow.db'}"
    http = MlflowServer(root / "mlflow-http").start()
    texts = long_texts(models[0].artifact / TOKENIZER_FILE, BATCHES * BATCH)
    per_round: dict[str, list[dict[str, float]]] = {RAW_ORT: []}
    try:
        for uri in (sqlite_uri, http.tracking_uri):
            for model in models:
                register(uri, f"bench-{model.name}", model.artifact)
        for round_index in range(rounds):
            log.info("registry memory: round %d of %d", round_index + 1, rounds)
            per_round[RAW_ORT].append(raw_ort(models, texts, root))
            for index, executable in enumerate(executables):
                for store, uri in (("sqlite", sqlite_uri), ("http", http.tracking_uri)):
                    key = f"{executable} | {store}"
                    cache = root / f"cache-{round_index}-{index}-{store}"  # fresh for each server of each round
                    figures = serve(executable, uri, cache, models, root / "ortserve.log", texts)
                    restart = serve(executable, uri, cache, models, root / "ortserve.log", None)
                    figures["start_from_verified_cache_s"] = restart["start_to_serving_s"]
                    figures["rss_mb_loaded_from_cache"] = restart["rss_mb_loaded"]
                    per_round.setdefault(key, []).append(figures)
                    log.info("%s: %s", key, {k: round(v, 2) for k, v in figures.items()})
    finally:
        http.stop()

    def medians(key: str) -> dict[str, float]:
        fields = dict.fromkeys(field for figures in per_round[key] for field in figures)
        return {field: statistics.median(r[field] for r in per_round[key] if field in r) for field in fields}

    return {
        "models": [m.name for m in models],
        "batches": BATCHES,
        "batch_texts": BATCH,
        "text_tokens": LONG_TOKENS,
        "rounds": rounds,
        "raw_ort": medians(RAW_ORT),
        "servers": [
            {"ortserve": executable, "store": store, **medians(f"{executable} | {store}")}
            for executable in executables
            for store in ("sqlite", "http")
        ],
        "per_round": per_round,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK, help="models, registries, logs")
    parser.add_argument(
        "--ortserve",
        action="append",
        default=[],
        help="an ortserve executable to measure, optionally with serve flags (repeatable; default: this environment's)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every system")
    args = parser.parse_args(argv)
    from .report import registry_memory_section

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models, _ = build_models(args.work)
    results = measure(models, args.work, args.ortserve, args.rounds)
    print(registry_memory_section(results))
    (args.work / "registry-memory" / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
