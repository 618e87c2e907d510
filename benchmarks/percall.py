"""Per-call overhead of one caller: raw ONNX Runtime in process vs ortserve over gRPC with the project's client.

    python -m benchmarks.percall [--work benchmarks/work] [--model minilm] [--rounds 8] [--calls 100] [--profile]

One model (`minilm` by default, the cheaper shape; `--artifact DIR` serves any exported artifact instead) is run in
interleaved rounds by four systems, one text per call (21 tokens), one caller:

- `raw_ort`: the artifact in this process (`RawOrt`: tokenizer, ONNX Runtime, softmax; no server code): the floor;
- `ortserve`: `ortserve serve` as its own process, called with `ortserve.client.InferenceClient` (what
  `make bench` measures against the +1 ms target);
- `ortserve_stub`: the same server called with a bare generated stub on a default channel (what the client adds);
- `grpc_floor`: a `grpc.aio` server in its own process whose Classify returns a constant answer of the same size,
  called with `InferenceClient`: the cost of a Python gRPC round trip with no model and no ortserve code;
- `raw_ort_spin_in_runs`: raw ONNX Runtime with threads spinning inside runs only (`--spin-during-runs`);
- `raw_ort_ort_defaults`: raw ONNX Runtime with ONNX Runtime's own default, threads spinning between runs too;
- `ortserve_spin_in_runs`: this tree's server with `--spin-during-runs` (the latency-first setting), same client;
- with `--baseline-ref REF`, `ortserve@REF`: `ortserve serve` from a `git archive` of REF (e.g. main), same client.

`raw_ort` runs the artifact with `SessionConfig()`, the server's default session settings: the like-for-like floor.
With `--callers N` (32 by default; 0 skips it) each round also measures N single-text callers (`load.grpc_load`)
against each server, and raw ONNX Runtime's batch-of-N throughput in process, as a ratio of the same round; and the
bound any Python gRPC server has here (`callers_bound`): cores / (raw ONNX Runtime's CPU per text + the gRPC floor's
CPU per call, server and callers, at N callers).

The order of the systems rotates every round, so load from other processes on a shared machine falls on all alike;
the figures are medians of the per-round p50s and the per-round differences. Server and client CPU per call come from
/proc (server) and `time.process_time` (this process). With `--profile`, py-spy samples the server and this process
(the client) during one more ortserve round and the summary says where one call's time goes, by component.
Writes percall.json and percall.md (benchmarks.percall_report) to --out. Every target is 127.0.0.1; every loop is
bounded by a count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .hostile_load import baseline_tree, python_path_first
from .load import LOOPBACK, grpc_load
from .paths import RESULTS, WORK
from .percall_report import write_report
from .processes import OrtServeProcess, cpu_seconds, free_port, ortserve_process
from .texts import make_texts

log = logging.getLogger("benchmarks.percall")

SYSTEMS = (
    "raw_ort",
    "ortserve",
    "ortserve_stub",
    "grpc_floor",
    "raw_ort_spin_in_runs",
    "ortserve_spin_in_runs",
    "raw_ort_ort_defaults",
)
#: Raw ONNX Runtime references, each a `SessionConfig` change from the server's defaults.
RAW_REFERENCES: dict[str, dict[str, bool]] = {
    "raw_ort": {},
    "raw_ort_spin_in_runs": {"spin_during_runs": True},
    "raw_ort_ort_defaults": {"allow_spinning": True},
}
PROFILE_RATE_HZ = 500


# --- the gRPC floor: a server with no model ---------------------------------------------------------------------------


def run_floor_server(port: int, labels: int) -> None:
    """Serve `ortserve.v1.Inference` on 127.0.0.1:`port` with a constant Classify answer (`labels` labels per text)
    and a SERVING health status, until SIGTERM. No ortserve code runs in it: `ortserve` minus this floor is what
    ortserve's own layers (interceptors, transport, service, batcher) cost per call."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio

    answer = pb.ClassifyResponse(
        model="floor",
        model_version="1",
        results=[pb.Classification(labels=[pb.LabelScore(label=f"label{i}", score=0.5) for i in range(labels)])],
    )

    class Floor(pb_grpc.InferenceServicer):
        async def Classify(self, request: pb.ClassifyRequest, context: Any) -> pb.ClassifyResponse:  # noqa: N802
            return answer

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_InferenceServicer_to_server(Floor(), server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        server.add_insecure_port(f"{LOOPBACK}:{port}")
        await server.start()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    asyncio.run(main())


@contextmanager
def floor_process(labels: int, log_file: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    from ortserve.server.healthcheck import wait_until_serving

    port = free_port()
    command = [sys.executable, "-m", "benchmarks.percall", "--floor-server", str(port), "--floor-labels", str(labels)]
    with log_file.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out)
        try:
            wait_until_serving(f"{LOOPBACK}:{port}", process, timeout=60, poll_s=0.05)
            yield process, port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def baseline_server(
    ref: str, model: str, artifact: Path, work: Path, log_file: Path, server_args: Sequence[str]
) -> Iterator[OrtServeProcess]:
    """`ortserve serve` of `artifact` from a `git archive` of `ref` (on this venv's interpreter)."""
    executable = [sys.executable, "-m", "ortserve.cli.main"]
    with contextlib.ExitStack() as stack:
        with python_path_first(baseline_tree(ref, work)):  # only while it starts: servers started later are this tree's
            process = stack.enter_context(
                ortserve_process({model: artifact}, log_file, extra_args=server_args, executable=executable)
            )
        yield process


# --- measuring --------------------------------------------------------------------------------------------------------


def timed_calls(call: Callable[[list[str]], object], texts: Sequence[str], calls: int, offset: int) -> list[float]:
    """Milliseconds of `calls` calls of one text each (after 3 warm-up calls)."""
    for i in range(3):
        call([texts[(offset + i) % len(texts)]])
    samples = []
    for i in range(calls):
        text = [texts[(offset + i) % len(texts)]]
        start = time.perf_counter()
        call(text)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def p(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --- profiling with py-spy --------------------------------------------------------------------------------------------

#: Components of one call, by the frames of a sampled stack: the first rule (in this order) that matches any frame of
#: the stack, searched from the innermost frame outwards, names the component. Frames are `function (file:line)`;
#: with --native also C symbols of the extension modules.
COMPONENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ONNX Runtime run", re.compile(r"onnxruntime|OrtRun|onnxruntime_pybind")),
    ("tokenizer", re.compile(r"encode_batch|tokenizers")),
    ("runtime: collate, softmax, rank", re.compile(r"server/runtime\.py")),
    ("protobuf (de)serialization, message building", re.compile(r"protobuf|upb|_message|SerializeToString|FromString")),
    ("ortserve client code", re.compile(r"(^|[ (/])client/(sync_client|async_client|convert|base)\.py")),
    ("interceptor chain", re.compile(r"server/interceptors/|server/observability/")),
    ("transport (proto ⇄ domain)", re.compile(r"server/transport(_v2)?\.py")),
    ("service (validation, cache)", re.compile(r"server/service\.py|server/result_cache\.py")),
    ("batcher, model table (thread hand-off)", re.compile(r"server/batcher\.py|server/model_table\.py")),
    ("executor thread", re.compile(r"concurrent/futures|threading\.py")),
    ("gRPC (Python layer and C core)", re.compile(r"grpc|cygrpc|_cython")),
    # grpc.aio's Cython code has no Python frames: it runs as the event loop's callbacks and task steps.
    ("event loop: grpc.aio (Cython) and asyncio callbacks", re.compile(r"asyncio")),
)
OTHER = "other"


def component_of(stack: Sequence[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for name, pattern in COMPONENTS:
            if pattern.search(frame):
                return name
    return OTHER


def summarize_profile(raw: str, calls: int, rate_hz: int) -> dict[str, Any]:
    """Microseconds per call by component, from py-spy's raw (collapsed) output: `frame;frame;... count` lines."""
    per_component: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        per_component[component_of(stack)] += count
        leaves[_short(stack[-1])] += count
        total += count
    us_per_sample = 1e6 / rate_hz
    return {
        "samples": total,
        "us_per_call": {name: n * us_per_sample / calls for name, n in per_component.most_common()},
        "top_frames": [(frame, n * us_per_sample / calls) for frame, n in leaves.most_common(12)],
    }


def _short(frame: str) -> str:
    """`function (…/package/file.py:12)` without the directories before the package."""
    return re.sub(r"\((?:[^()]*/)?((?:site-packages/)?[^/()]+/[^/()]+:\d+)\)", r"(\1)", frame).replace(
        "site-packages/", ""
    )


def py_spy_binary() -> str:
    """The py-spy executable (the `bench` extra installs it beside the interpreter); exits naming the fix if absent."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        raise SystemExit("--profile needs py-spy, in the `bench` extra: pip install -e '.[bench]' (make bench does)")
    return binary


@contextmanager
def py_spy(pid: int, output: Path, native: bool, gil: bool) -> Iterator[None]:
    """Sample `pid` (its active threads, or with `gil` only the thread holding the GIL) with py-spy while the block
    runs; raw collapsed stacks go to `output`."""
    command = [
        py_spy_binary(),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(PROFILE_RATE_HZ),
        "--format",
        "raw",
        "--output",
        str(output),
        "--nonblocking",
    ]
    if native:
        command.remove("--nonblocking")  # py-spy reads native stacks only from a paused process
        command.append("--native")
    if gil:
        command.append("--gil")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches and starts sampling
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        _, errors = process.communicate(timeout=60)
        if process.returncode not in (0, -signal.SIGINT) and not output.exists():
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")


# --- the run ----------------------------------------------------------------------------------------------------------


def measure(
    artifact: Path,
    model: str,
    work: Path,
    rounds: int,
    calls: int,
    profile_calls: int,
    native: bool,
    gil: bool,
    server_args: Sequence[str],
    baseline_ref: str | None = None,
    callers: int = 0,
) -> dict[str, Any]:
    from ortserve.client import InferenceClient
    from ortserve.contract.artifact import ArtifactManifest
    from ortserve.server.runtime import SessionConfig

    from .baselines import RawOrt

    texts = make_texts(artifact / "tokenizer.json", 512, mixed=False)
    labels = len(ArtifactManifest.read(artifact).labels)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    raws = {name: RawOrt(artifact, SessionConfig(**change)) for name, change in RAW_REFERENCES.items()}
    baseline_name = f"ortserve@{baseline_ref}" if baseline_ref else None
    systems_measured = SYSTEMS + ((baseline_name,) if baseline_name else ())
    latencies: dict[str, list[list[float]]] = {name: [] for name in systems_measured}
    cpu_ms: dict[str, list[dict[str, float]]] = {name: [] for name in systems_measured}
    many: dict[str, list[float]] = {}
    bounds: list[dict[str, float]] = []
    result: dict[str, Any] = {
        "model": model,
        "artifact": str(artifact.name),
        "rounds": rounds,
        "calls_per_round": calls,
        "server_args": list(server_args),
        "baseline_ref": baseline_ref,
        "callers": callers,
        "load_average_start": os.getloadavg(),
    }
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            ortserve_process({model: artifact}, logs / "percall-ortserve.log", extra_args=server_args)
        )
        floor, floor_port = stack.enter_context(floor_process(labels, logs / "percall-floor.log"))
        client = stack.enter_context(InferenceClient(f"{LOOPBACK}:{server.port}", timeout=30))
        floor_client = stack.enter_context(InferenceClient(f"{LOOPBACK}:{floor_port}", timeout=30))
        channel = stack.enter_context(grpc.insecure_channel(f"{LOOPBACK}:{server.port}"))
        stub = pb_grpc.InferenceStub(channel)
        systems: dict[str, tuple[Callable[[list[str]], object], int | None]] = {
            "ortserve": (lambda batch: client.classify(model, batch), server.process.pid),
            "ortserve_stub": (
                lambda batch: stub.Classify(pb.ClassifyRequest(model=model, texts=batch), timeout=30),
                server.process.pid,
            ),
            "grpc_floor": (lambda batch: floor_client.classify("floor", batch), floor.pid),
        }
        systems.update({name: (raw, None) for name, raw in raws.items()})
        spinning = stack.enter_context(
            ortserve_process(
                {model: artifact},
                logs / "percall-ortserve-spin.log",
                extra_args=[*server_args, "--spin-during-runs"],
            )
        )
        spinning_client = stack.enter_context(InferenceClient(f"{LOOPBACK}:{spinning.port}", timeout=30))
        systems["ortserve_spin_in_runs"] = (lambda batch: spinning_client.classify(model, batch), spinning.process.pid)
        ports = {"ortserve": server.port, "ortserve_spin_in_runs": spinning.port}
        if baseline_ref and baseline_name:
            base = stack.enter_context(
                baseline_server(
                    baseline_ref, model, artifact, work, logs / "percall-ortserve-baseline.log", server_args
                )
            )
            base_client = stack.enter_context(InferenceClient(f"{LOOPBACK}:{base.port}", timeout=30))
            systems[baseline_name] = (lambda batch: base_client.classify(model, batch), base.process.pid)
            ports[baseline_name] = base.port
        for round_ in range(rounds):
            shift = round_ % len(systems_measured)
            order = systems_measured[shift:] + systems_measured[:shift]
            for name in order:
                call, pid = systems[name]
                client_before = time.process_time()
                server_before = (cpu_seconds(pid), cpu_seconds(pid, pid)) if pid else (0.0, 0.0)
                latencies[name].append(timed_calls(call, texts, calls, offset=round_ * calls))
                server_after = (cpu_seconds(pid), cpu_seconds(pid, pid)) if pid else (0.0, 0.0)
                cpu_ms[name].append(
                    {
                        "client": (time.process_time() - client_before) * 1000 / (calls + 3),
                        "server": (server_after[0] - server_before[0]) * 1000 / (calls + 3),
                        # The main thread runs the event loop: gRPC aio, the interceptors, transport, service, batcher.
                        "server_loop": (server_after[1] - server_before[1]) * 1000 / (calls + 3),
                    }
                )
            if callers:
                many_round, raw_cpu_ms = many_callers(raws, ports, model, texts, callers, round_)
                for name, rate in many_round.items():
                    many.setdefault(name, []).append(rate)
                bounds.append(callers_bound(many_round["raw_ort"], raw_cpu_ms, floor_port, floor.pid, texts, callers))
            log.info(
                "round %d/%d: %s",
                round_ + 1,
                rounds,
                ", ".join(f"{name} {statistics.median(latencies[name][-1]):.2f} ms" for name in systems_measured),
            )
        if profile_calls:
            result["profile"] = profile(
                server.process.pid,
                lambda batch: client.classify(model, batch),
                texts,
                profile_calls,
                work,
                native,
                gil,
                "ortserve",
            )
            result["profile_floor"] = profile(
                floor.pid,
                lambda batch: floor_client.classify("floor", batch),
                texts,
                profile_calls,
                work,
                native,
                gil,
                "grpc_floor",
            )
    result["load_average_end"] = os.getloadavg()
    p50 = {name: [statistics.median(r) for r in runs] for name, runs in latencies.items()}
    result.update(
        {
            "p50_ms_per_round": p50,
            "p50_ms": {name: statistics.median(values) for name, values in p50.items()},
            "p90_ms": {name: statistics.median([p(r, 90) for r in runs]) for name, runs in latencies.items()},
            "cpu_ms_per_call": {
                name: {side: statistics.median(r[side] for r in runs) for side in ("client", "server", "server_loop")}
                for name, runs in cpu_ms.items()
            },
        }
    )
    # Δ of each system against each raw reference, as the median of per-round differences.
    result["delta_ms_vs"] = {
        reference: {
            name: statistics.median(a - b for a, b in zip(values, p50[reference], strict=True))
            for name, values in p50.items()
            if name not in RAW_REFERENCES
        }
        for reference in RAW_REFERENCES
    }
    result["delta_ms_per_round"] = {
        name: [value - base for value, base in zip(values, p50["raw_ort"], strict=True)]
        for name, values in p50.items()
        if name != "raw_ort"
    }
    result["delta_ms"] = {name: statistics.median(values) for name, values in result["delta_ms_per_round"].items()}
    # Server CPU per call outside ONNX Runtime: the server's CPU per call less what raw ONNX Runtime (tokenizer, run,
    # softmax) took in this process per call, per round, against the like-for-like reference of each server.
    result["server_cpu_outside_ort_ms"] = {
        name: {
            reference: statistics.median(
                s["server"] - r["client"] for s, r in zip(cpu_ms[name], cpu_ms[reference], strict=True)
            )
            for reference in ("raw_ort", "raw_ort_spin_in_runs")
        }
        for name in systems_measured
        if name.startswith("ortserve")
    }
    if many:
        result["callers_texts_per_s"] = {name: statistics.median(rates) for name, rates in many.items()}
        result["callers_vs_raw_batch"] = {
            name: {
                reference: statistics.median(a / b for a, b in zip(rates, many[reference], strict=True))
                for reference in ("raw_ort", "raw_ort_spin_in_runs")
            }
            for name, rates in many.items()
            if name not in RAW_REFERENCES
        }
        result["callers_bound"] = {key: statistics.median(b[key] for b in bounds) for key in bounds[0]}
    return result


def callers_bound(
    raw_rate: float, raw_cpu_ms: float, floor_port: int, floor_pid: int, texts: Sequence[str], callers: int
) -> dict[str, float]:
    """The most texts/s `callers` single-text callers could get from any Python gRPC server on this machine.

    Such a server spends at least what raw ONNX Runtime spends per text at batch `callers` (`raw_cpu_ms`: tokenizer,
    run, softmax; CPU of this process, measured by `many_callers` with `raw_rate`) and what the gRPC floor (a constant
    answer, no model) spends per call with as many callers, its server and this process's client together: on
    `os.cpu_count()` cores it answers at most cores / (both). The callers share the cores with the server here, as in
    the many-caller figure this bounds."""
    server_before, client_before = cpu_seconds(floor_pid), time.process_time()
    load = grpc_load(floor_port, "floor", texts, callers, max_calls=6000, max_seconds=3.0)
    floor_cpu_ms = (cpu_seconds(floor_pid) - server_before + time.process_time() - client_before) * 1000 / load.calls
    bound = (os.cpu_count() or 1) * 1000 / (raw_cpu_ms + floor_cpu_ms)
    return {
        "raw_cpu_ms_per_text": raw_cpu_ms,
        "floor_calls_per_s": load.calls / load.seconds,
        "floor_cpu_ms_per_call": floor_cpu_ms,
        "bound_texts_per_s": bound,
        "bound_vs_raw_batch": bound / raw_rate,
    }


def many_callers(
    raws: Mapping[str, Callable[[list[str]], object]],
    ports: dict[str, int],
    model: str,
    texts: Sequence[str],
    callers: int,
    round_: int,
) -> tuple[dict[str, float], float]:
    """Texts/s of `callers` single-text callers against each server, and of raw ONNX Runtime's batches of `callers`
    texts in this process (the references that spin during runs or not at all); and raw_ort's CPU ms per text."""
    rates: dict[str, float] = {}
    cpu_ms_per_text: dict[str, float] = {}
    for name in ("raw_ort", "raw_ort_spin_in_runs"):
        raws[name](list(texts[:callers]))
        batches = [list(texts[(i * callers + j) % len(texts)] for j in range(callers)) for i in range(8)]
        cpu_before, start = time.process_time(), time.perf_counter()
        for batch in batches:
            raws[name](batch)
        rates[name] = len(batches) * callers / (time.perf_counter() - start)
        cpu_ms_per_text[name] = (time.process_time() - cpu_before) * 1000 / (len(batches) * callers)
    shift = round_ % len(ports)
    for name in [*ports][shift:] + [*ports][:shift]:
        load = grpc_load(ports[name], model, texts, callers, max_calls=2500, max_seconds=3.0)
        rates[name] = load.texts_per_s
    return rates, cpu_ms_per_text["raw_ort"]


def profile(
    server_pid: int,
    call: Callable[[list[str]], object],
    texts: Sequence[str],
    calls: int,
    work: Path,
    native: bool,
    gil: bool,
    system: str,
) -> dict[str, Any]:
    """py-spy on the server and on this process (the client) during `calls` calls of `system`."""
    out = work / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    server_raw, client_raw = out / f"percall-{system}-server.txt", out / f"percall-{system}-client.txt"
    for path in (server_raw, client_raw):
        path.unlink(missing_ok=True)
    with py_spy(server_pid, server_raw, native, gil), py_spy(os.getpid(), client_raw, native, gil):
        start = time.perf_counter()
        samples = timed_calls(call, texts, calls, offset=0)
        seconds = time.perf_counter() - start
    return {
        "system": system,
        "calls": calls + 3,
        "seconds": seconds,
        "p50_ms": statistics.median(samples),
        "native": native,
        "gil": gil,
        "rate_hz": PROFILE_RATE_HZ,
        "server": summarize_profile(server_raw.read_text(), calls + 3, PROFILE_RATE_HZ),
        "client": summarize_profile(client_raw.read_text(), calls + 3, PROFILE_RATE_HZ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK, help="models, exports, logs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--model", default="minilm", help="benchmark model to build and serve (minilm, bert-base)")
    parser.add_argument("--artifact", type=Path, help="serve this exported artifact directory instead")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=100, help="calls per system per round")
    parser.add_argument("--profile", action="store_true", help="py-spy the server and the client afterwards")
    parser.add_argument("--profile-calls", type=int, default=600)
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too; pauses the process)")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil: only the thread holding the GIL")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `ortserve serve` argument")
    parser.add_argument("--baseline-ref", help="also serve this git ref (e.g. main) and call it alike")
    parser.add_argument("--callers", type=int, default=32, help="also measure this many callers (0: skip)")
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-labels", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_server:
        run_floor_server(args.floor_server, args.floor_labels)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.profile:
        py_spy_binary()  # before the rounds, not after them
    if args.artifact is not None:
        artifact, model = args.artifact, args.model
    else:
        from .models import build_models

        models, _ = build_models(args.work)
        artifact = next(m.artifact for m in models if m.name == args.model)
        model = args.model
    result = measure(
        artifact,
        model,
        args.work,
        args.rounds,
        args.calls,
        args.profile_calls if args.profile else 0,
        args.native,
        args.gil,
        args.server_arg,
        args.baseline_ref,
        args.callers,
    )
    command = "python -m benchmarks.percall " + " ".join(argv if argv is not None else sys.argv[1:])
    print(write_report(result, args.out, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
