"""The result cache under a news-like workload: half the texts repeat (hot headlines), half are new.

    python -m benchmarks.result_cache [--work benchmarks/work] [--model minilm] [--rounds 3]

Two `ortserve serve` processes on the same artifact, one with `--result-cache-bytes` and one without, measured in
alternating rounds with 32 single-text callers (so load from other processes falls on both alike). Prints the
throughput of each and their ratio; `benchmarks.run` records the same figures in bench.json. Then the cached server
with every text a hit, three times: what a hit costs bounds the ratio with half the texts hits at
2 / (1 + off / all hits), since a hit still takes a gRPC round trip on the cores the callers share with the server.
And the same callers against `percall`'s gRPC floor server (a constant answer, no model): the bound of any cache
whose hits cost no more than a bare Python gRPC round trip.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from ortserve.contract.artifact import ArtifactManifest

from .load import grpc_load
from .models import BenchModel, build_models
from .paths import WORK
from .percall import floor_process
from .processes import ortserve_process
from .texts import make_texts

log = logging.getLogger(__name__)

CACHE_BYTES = 64 * 1024 * 1024
CALLERS = 32
#: Distinct hot headlines; every other text is one of them.
HOT_TEXTS = 256


def repeating_workload(model: BenchModel, count: int, repeat_fraction: float = 0.5, seed: int = 7) -> list[str]:
    """`count` texts in call order: a `repeat_fraction` of them drawn from a few hot headlines, the rest all new."""
    tokenizer = model.artifact / "tokenizer.json"
    hot = make_texts(tokenizer, HOT_TEXTS, mixed=False, seed=seed)
    fresh = iter(make_texts(tokenizer, count, mixed=False, seed=seed + 1))
    rng = random.Random(seed)
    return [rng.choice(hot) if rng.random() < repeat_fraction else next(fresh) for _ in range(count)]


def measure_result_cache(model: BenchModel, logs: Path, rounds: int = 3, seconds: float = 8.0) -> dict[str, Any]:
    """Texts/s of 32 callers with the cache off and on, in alternating rounds; each round sends new texts."""
    rates: dict[str, list[float]] = {"off": [], "on": []}
    errors = {"off": 0, "on": 0}
    calls = 6000
    args = {"off": [], "on": ["--result-cache-bytes", str(CACHE_BYTES)]}
    labels = len(ArtifactManifest.read(model.artifact).labels)
    with (
        ortserve_process({model.name: model.artifact}, logs / "ortserve-cache-off.log", args["off"]) as off,
        ortserve_process({model.name: model.artifact}, logs / "ortserve-cache-on.log", args["on"]) as on,
        floor_process(labels, logs / "result-cache-floor.log") as (_, floor_port),
    ):
        ports = {"off": off.port, "on": on.port}
        for round_ in range(rounds):
            texts = repeating_workload(model, calls, seed=100 + round_)
            for setting in ("off", "on"):
                log.info("%s: result cache %s, round %d of %d", model.name, setting, round_ + 1, rounds)
                result = grpc_load(ports[setting], model.name, texts, CALLERS, max_calls=calls, max_seconds=seconds)
                rates[setting].append(result.texts_per_s)
                errors[setting] += result.errors
        # The bound: what a cache hit costs when every text is one (hot texts only, all cached by the rounds above).
        # With half the texts hits, 2 texts take one miss and one hit, so the best ratio is 2 / (1 + off / all hits):
        # the hits are not free, they still cost a gRPC round trip on the cores the callers share with the server.
        hot = repeating_workload(model, calls, repeat_fraction=1.0, seed=100)
        all_hits = [
            grpc_load(ports["on"], model.name, hot, CALLERS, max_calls=calls, max_seconds=seconds).texts_per_s
            for _ in range(rounds)
        ]
        # The floor of a hit: the same callers against a gRPC server that answers a constant (no model, no ortserve
        # code). A hit cannot cost less than its round trip, so 2 / (1 + off / floor) bounds any result cache here.
        floor = [
            grpc_load(floor_port, "floor", hot, CALLERS, max_calls=calls, max_seconds=seconds).texts_per_s
            for _ in range(rounds)
        ]
    # The ratio of each round's pair, then their median: a pair shares the machine's load of that moment.
    ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    hits = statistics.median(all_hits)
    return {
        "model": model.name,
        "callers": CALLERS,
        "repeat_fraction": 0.5,
        "cache_bytes": CACHE_BYTES,
        "texts_per_s_off": statistics.median(rates["off"]),
        "texts_per_s_on": statistics.median(rates["on"]),
        "ratio": statistics.median(ratios),
        "texts_per_s_all_hits": hits,
        "bound_with_half_hits": 2 / (1 + statistics.median(rates["off"]) / hits),
        "grpc_floor_calls_per_s": statistics.median(floor),
        "bound_at_grpc_floor": 2 / (1 + statistics.median(rates["off"]) / statistics.median(floor)),
        "rounds": {"off": rates["off"], "on": rates["on"], "all_hits": all_hits, "grpc_floor": floor},
        "load_average": os.getloadavg(),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    models, _ = build_models(args.work)
    (model,) = [m for m in models if m.name == args.model]
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(json.dumps(measure_result_cache(model, logs, args.rounds, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
