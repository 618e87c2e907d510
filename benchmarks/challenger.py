"""Champion and challenger under load: what shadowing and a canary cost the champion's callers.

    python -m benchmarks.challenger [--work benchmarks/work] [--out benchmarks/work/results] [--model minilm]
                                    [--rounds 2] [--seconds 8] [--memory-only]
                                    [--scenarios shadow,overload,canary,memory] [--baseline ORTSERVE]
                                    [--control] [--one-caller-calls 300]

`ortserve serve` processes on the same champion artifact, measured in alternating rounds (so load from other
processes falls on each alike): without a challenger, with one shadowing 10 % of texts, and with one shadowing 100 %.
The challenger is a copy of the champion's artifact under another directory name (same cost per text, so the
figures are those of a challenger of the same architecture). Measured:

- shadow 10 %: texts/s of 32 single-text callers vs off (target ≥ 0.88×; the median of the rounds' paired ratios),
  the server's CPU time per answered text with its shadow work (far less moved by other processes than texts/s), and
  one caller's p50 vs off (≤ +0.3 ms); each measurement starts once the previous one's shadow work has run or been
  dropped;
- shadow 100 % under overload (500 callers): goodput vs off (target ≥ 0.95×), with the shed shadow texts counted;
- canary 5 %: the share of 10,000 calls the challenger answered, against the binomial 99 % interval;
- RSS: one model, it with a challenger, and the same two artifacts as two models of their own called at the same
  time (`--memory-only`).

`--scenarios` keeps a run short (e.g. `--scenarios shadow`: the 32-caller and one-caller figures only).
`--baseline` names another checkout's `ortserve` command (e.g. `../main/.venv/bin/ortserve`; repeatable): its server
with the same 10 % shadow is measured in the same rounds (`shadow10_baseline`, `shadow10_baseline2`...), so a change
is compared side by side in one run; with the `overload` scenario, the first baseline's 100 % shadow under overload
is measured in the same rounds too (`shadow100_baseline`). `--control` adds a second server without a challenger
(`off_control`), measured in the same rounds as the others: its figures against `off` are what two identical servers
differ by in this run (the noise floor every other delta is read against). `--one-caller-calls` sets the calls
behind each round's one-caller p50 (300 by default); besides the median of the rounds' paired deltas, every round's
calls are pooled per server and the pooled p50s compared (`*_p50_delta_ms_pooled`).

Writes challenger.json to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .load import LOOPBACK, grpc_load
from .models import BenchModel, build_models
from .paths import RESULTS, WORK
from .processes import cpu_seconds, ortserve_process
from .processes import rss_mb as process_rss_mb
from .texts import make_texts

log = logging.getLogger(__name__)

CALLERS = 32
OVERLOAD_CALLERS = 500
CANARY_SHARE = 0.05
CANARY_CALLS = 10_000
SCENARIOS = ("shadow", "overload", "canary", "memory")
#: How often `settle` reads the shadow counts (it returns once two reads agree).
SETTLE_POLL_S = 0.5
#: Calls behind each round's one-caller p50.
ONE_CALLER_CALLS = 300


def rss_mb(pid: int) -> float:
    """Resident memory of a process now, in MB."""
    return process_rss_mb(pid)[0]


def settle(port: int, model: str, timeout: float = 30.0) -> None:
    """Wait until the server's shadow work has run or been dropped (its counts stop moving for half a second), so
    that one measurement's backlog does not fall on the next."""
    last: tuple[int, int] | None = None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        report = challenger_report(port, model)
        now = (report["texts_compared"], sum(report["shadow_dropped"].values()))
        if now == last:
            return
        last = now
        time.sleep(SETTLE_POLL_S)


def settle_or_pause(port: int, model: str, name: str) -> None:
    """`settle` a shadowing server; pause a server without a challenger as long as a settle takes at least, so that
    every server's one-caller measurement follows its 32-caller load after the same quiet time."""
    if name.startswith("shadow"):
        settle(port, model)
    else:
        time.sleep(SETTLE_POLL_S)


def challenger_report(port: int, model: str) -> dict[str, Any]:
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        info = pb_grpc.InferenceStub(channel).GetModel(pb.GetModelRequest(name=model), timeout=10).challenger
    return {
        "texts_compared": info.texts_compared,
        "agreement": info.agreement,
        "shadow_dropped": dict(info.shadow_dropped),
        "canary_calls": info.canary_calls,
    }


def challenger_copy(model: BenchModel, work: Path) -> Path:
    """The champion's artifact copied under another name: a challenger of the same cost per text."""
    challenger = work / "artifacts" / f"{model.name}-challenger"
    if not challenger.is_dir():
        shutil.copytree(model.artifact, challenger)
    return challenger


def measure(
    model: BenchModel,
    work: Path,
    rounds: int,
    seconds: float,
    scenarios: Sequence[str] = SCENARIOS,
    baselines: Sequence[Sequence[str]] = (),
    control: bool = False,
    one_caller_calls: int = ONE_CALLER_CALLS,
) -> dict[str, Any]:
    challenger = challenger_copy(model, work)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shadow10 = f"{model.name}={model.artifact}?challenger={challenger}&shadow=0.1"
    specs = {"off": f"{model.name}={model.artifact}", "shadow10": shadow10}
    if control:  # an A/A pair: what two identical servers differ by in this run
        specs["off_control"] = specs["off"]
    executables: dict[str, Sequence[str]] = {}
    for number, baseline in enumerate(baselines, 1):
        name = "shadow10_baseline" if number == 1 else f"shadow10_baseline{number}"
        specs[name] = shadow10
        executables[name] = baseline
    if "overload" in scenarios:
        specs["shadow100"] = f"{model.name}={model.artifact}?challenger={challenger}&shadow=1"
        if baselines:  # the first baseline's 100 % shadow under overload, in the same rounds
            specs["shadow100_baseline"] = specs["shadow100"]
            executables["shadow100_baseline"] = baselines[0]
    texts = make_texts(model.artifact / "tokenizer.json", 20_000, mixed=False, seed=5)
    rates: dict[str, list[float]] = {name: [] for name in specs}
    cpu_ms_per_text: dict[str, list[float]] = {name: [] for name in specs}
    p50: dict[str, list[float]] = {name: [] for name in specs}
    one_caller_ms: dict[str, list[float]] = {name: [] for name in specs}
    overloaded = [name for name in specs if name == "off" or name.startswith("shadow100")]
    overload: dict[str, list[float]] = {name: [] for name in overloaded} if "overload" in scenarios else {}
    result: dict[str, Any] = {"model": model.name, "callers": CALLERS, "overload_callers": OVERLOAD_CALLERS}
    with contextlib.ExitStack() as stack:
        running = {
            name: stack.enter_context(
                ortserve_process(
                    {},
                    logs / f"ortserve-challenger-{name}.log",
                    ["--model", spec],
                    executable=executables.get(name, ()),
                )
            )
            for name, spec in specs.items()
        }
        result["rss_mb"] = {name: rss_mb(p.process.pid) for name, p in running.items()}
        for round_ in range(rounds):
            for name, process in running.items() if "shadow" in scenarios else ():
                log.info("%s: %s, round %d of %d", model.name, name, round_ + 1, rounds)
                pid = process.process.pid
                cpu = cpu_seconds(pid)
                load = grpc_load(process.port, model.name, texts, CALLERS, max_seconds=seconds)
                settle_or_pause(process.port, model.name, name)
                rates[name].append(load.texts_per_s)
                cpu_ms_per_text[name].append((cpu_seconds(pid) - cpu) * 1000 / max(1, load.calls - load.errors))
                one = grpc_load(process.port, model.name, texts, 1, max_calls=one_caller_calls, max_seconds=seconds)
                p50[name].append(one.p50)
                one_caller_ms[name] += one.latencies_ms
                settle_or_pause(process.port, model.name, name)
            for name in overload:
                load = grpc_load(
                    running[name].port, model.name, texts, OVERLOAD_CALLERS, max_calls=20_000, max_seconds=seconds
                )
                overload[name].append(load.texts_per_s)
                if name != "off":
                    settle(running[name].port, model.name)
        result["shadow_report"] = {
            name: challenger_report(process.port, model.name)
            for name, process in running.items()
            if name.startswith("shadow")
        }
        result["rss_mb_loaded"] = {name: rss_mb(p.process.pid) for name, p in running.items()}
    if "shadow" in scenarios:
        result.update(shadow_figures(rates, cpu_ms_per_text, p50, one_caller_ms))
    if overload:
        result["overload_goodput"] = {name: statistics.median(values) for name, values in overload.items()}
        result["overload_goodput_rounds"] = overload
        for name in (name for name in overload if name != "off"):
            result[f"{name}_overload_goodput_ratio"] = (
                result["overload_goodput"][name] / result["overload_goodput"]["off"]
            )
    if "canary" in scenarios:
        result["canary"] = measure_canary(model, challenger, logs)
    if "memory" in scenarios:
        result["memory_rss_mb"] = measure_memory(model, challenger, logs)
    return result


def shadow_figures(
    rates: dict[str, list[float]],
    cpu_ms_per_text: dict[str, list[float]],
    p50: dict[str, list[float]],
    one_caller_ms: dict[str, list[float]],
) -> dict[str, Any]:
    """The 32-caller and one-caller figures of each shadowing server against shadow off, paired by round."""
    figures: dict[str, Any] = {
        "texts_per_s": {name: statistics.median(values) for name, values in rates.items()},
        "texts_per_s_rounds": rates,
        # CPU per answered text, shadow work included (measured until it has run or been dropped): what the shadow
        # costs, far less moved by other processes' load than throughput is.
        "cpu_ms_per_text": {name: statistics.median(values) for name, values in cpu_ms_per_text.items()},
        "p50_ms": {name: statistics.median(values) for name, values in p50.items()},
        "p50_ms_rounds": p50,
        # Every round's one-caller calls pooled: the p50 of all of them, less moved by one round's outliers.
        "p50_ms_pooled": {name: statistics.median(values) for name, values in one_caller_ms.items()},
    }
    for name in (name for name in rates if name != "off"):
        ratios = [s / o for s, o in zip(rates[name], rates["off"], strict=True)]
        figures[f"{name}_throughput_ratio_rounds"] = ratios
        figures[f"{name}_throughput_ratio"] = statistics.median(ratios)
        figures[f"{name}_p50_delta_ms"] = figures["p50_ms"][name] - figures["p50_ms"]["off"]
        # The same paired by round, as the throughput ratio is: less moved by load that changes between rounds.
        deltas = [s - o for s, o in zip(p50[name], p50["off"], strict=True)]
        figures[f"{name}_p50_delta_ms_paired"] = statistics.median(deltas)
        figures[f"{name}_p50_delta_ms_pooled"] = figures["p50_ms_pooled"][name] - figures["p50_ms_pooled"]["off"]
    return figures


def measure_memory(model: BenchModel, challenger: Path, logs: Path, starts: int = 4) -> dict[str, list[float]]:
    """VmRSS after 400 calls (8 callers), `starts` fresh processes per configuration: one model; it with a challenger
    shadowing every text; the same two artifacts as two models of their own, called at the same time (what the
    challenger's own session and tokenizer cost, under the same overlap of the two sessions' runs)."""
    configs = {
        "one_model": ["--model", f"{model.name}={model.artifact}"],
        "with_challenger": ["--model", f"{model.name}={model.artifact}?challenger={challenger}&shadow=1"],
        "two_models": ["--model", f"{model.name}={model.artifact}", "--model", f"second={challenger}"],
    }
    texts = ["markets rallied today after the report"] * 50
    rss: dict[str, list[float]] = {name: [] for name in configs}
    for name, args in configs.items():
        for _ in range(starts):
            with ortserve_process({}, logs / "ortserve-challenger-memory.log", args) as process:
                served = (model.name, "second") if name == "two_models" else (model.name,)
                with ThreadPoolExecutor(len(served)) as pool:
                    list(pool.map(lambda name: grpc_load(process.port, name, texts, 8, max_calls=400), served))
                if name == "with_challenger":
                    settle(process.port, model.name)
                rss[name].append(rss_mb(process.process.pid))
    return rss


def measure_canary(model: BenchModel, challenger: Path, logs: Path) -> dict[str, Any]:
    """10,000 single-text calls without a key at a 5 % canary: the challenger's share and its 99 % interval."""
    spec = f"{model.name}={model.artifact}?challenger={challenger}&canary={CANARY_SHARE}"
    with ortserve_process({}, logs / "ortserve-challenger-canary.log", ["--model", spec]) as process:
        load = grpc_load(process.port, model.name, ["steady"], CALLERS, max_calls=CANARY_CALLS, max_seconds=600)
        answered = challenger_report(process.port, model.name)["canary_calls"]
    calls = load.calls - load.errors
    half = 2.576 * math.sqrt(CANARY_SHARE * (1 - CANARY_SHARE) / max(1, calls))
    share = answered / max(1, calls)
    return {
        "calls": calls,
        "challenger_calls": answered,
        "share": share,
        "interval_99": [CANARY_SHARE - half, CANARY_SHARE + half],
        "within": CANARY_SHARE - half <= share <= CANARY_SHARE + half,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--memory-only", action="store_true", help="only the RSS comparison")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="another checkout's ortserve command, measured beside this one (shadow 10 %%); may be repeated",
    )
    parser.add_argument(
        "--control", action="store_true", help="also measure a second server without a challenger (the noise floor)"
    )
    parser.add_argument("--one-caller-calls", type=int, default=ONE_CALLER_CALLS, help="calls per one-caller p50")
    args = parser.parse_args(argv)
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    models, _ = build_models(args.work)
    (model,) = [m for m in models if m.name == args.model]
    if args.memory_only:
        logs = args.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        result = {"rss_mb": measure_memory(model, challenger_copy(model, args.work), logs)}
    else:
        result = measure(
            model,
            args.work,
            args.rounds,
            args.seconds,
            scenarios,
            [shlex.split(b) for b in args.baseline],
            control=args.control,
            one_caller_calls=args.one_caller_calls,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "challenger.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
