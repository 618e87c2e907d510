"""Issue 25's data-plane targets, this tree side by side with another (main by default), in one run on one model.

    .venv/bin/python -m benchmarks.hostile_load [--baseline-ref main] [--model minilm] [--quick]

Both trees serve the same artifact with default settings, one after the other in each round (rounds alternate, so
background load falls on both alike). The other tree runs from a `git archive` of `--baseline-ref` under
benchmarks/work/trees/, on this venv's interpreter (its source shadows the installed package). Per tree:

- **amplification**: one V2 ModelInfer of 256 short texts asking 100,000 times for `probabilities` (1.7 MB): the
  status, the milliseconds to it (the first request, then the median of up to 9 more, each from a new connection)
  and the server's RSS growth over the first (after one small ModelInfer, so that the method's first call is not
  counted) and over all of them, the attack loop below included;
  then a victim (one short text per call) alone and while
  two callers send that request in a loop: its p99.
- **overload**: 50 and 500 closed-loop single-text callers with a 100 ms deadline, 50 and 500 with 500 ms (the
  callers of `under_load.overload_level`: after a refusal they wait the server's retry pushback when it sends one,
  as the project's client tells its callers to, else back off on their own): answers per second, the refusals' p50,
  and the refusals by who refused. Each level starts after a pause longer than the longest pushback.
- **fair runs**: a caller with one ~300-token text (0.2 s think time) beside two bulk callers that send 16 texts of
  10,000 characters back to back: the medium caller's p50 and p99, the bulk callers' texts per second.
- **one caller**: p50 of single-text Classify calls, one caller, no think time.

Results: `hostile-load.json` and `hostile-load.md` in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from ortserve.server.healthcheck import wait_until_serving
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc
from ortserve.v2 import grpc_predict_v2_pb2 as v2

from .hostile_load_report import markdown
from .load import LOOPBACK
from .models import build_models
from .paths import RESULTS, WORK
from .processes import _stop, free_port, rss_mb, serve_command
from .texts import make_texts
from .under_load import BULK_CHARS, _percentile, long_text, overload_level

log = logging.getLogger("benchmarks.hostile_load")

#: How often the amplifying request names its output (the issue's probe: 1.71 MB in, 310 MB built before issue 25).
AMPLIFICATION_OUTPUTS = 100_000
AMPLIFICATION_TEXTS = 256
#: The V2 inference method, called with bytes serialized once.
MODEL_INFER = f"/{v2.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name}/ModelInfer"
#: Channel options for a connection of its own: channels to one target otherwise share one (gRPC's subchannel pool).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
#: How often the amplifying request is sent again after the first, for the median time to its status.
AMPLIFICATION_REPEATS = 9
#: Texts per call of a bulk caller: 16 texts of 10,000 characters (512 tokens each: one full token budget), so that
#: bulk calls complete within the window; their throughput is read from the seconds of the calls answered.
FAIR_BULK_TEXTS = 16
#: Characters of the medium text: about 300 tokens of the benchmark texts (the issue's "~300-token caller").
MEDIUM_CHARS = 2_400
#: The source folders of the package, and where each installs under `ortserve.` (pyproject's package-dir).
PACKAGE_DIRS = {
    "cli": "cli",
    "client": "client",
    "server": "server",
    "export": "export",
    "contract": "contract",
    "v1": "protos/ortserve/v1",
    "v2": "protos/ortserve/v2",
}


def baseline_tree(ref: str, work: Path) -> Path:
    """A `git archive` of `ref` under `work`/trees, arranged as an importable `ortserve` package; returns the folder
    to put first on PYTHONPATH."""
    commit = subprocess.run(["git", "rev-parse", ref], capture_output=True, text=True, check=True).stdout.strip()
    root = work / "trees" / commit[:12]
    package = root / "pkg" / "ortserve"
    if not package.is_dir():
        source = root / "src"
        source.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", commit], capture_output=True, check=True).stdout
        tar_path = root / "source.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(source, filter="data")
        tar_path.unlink()
        package.mkdir(parents=True)
        for name, folder in PACKAGE_DIRS.items():
            (package / name).symlink_to((source / folder).resolve())
    return (root / "pkg").resolve()


@contextmanager
def python_path_first(folder: Path | None) -> Iterator[None]:
    """Servers started meanwhile import `ortserve` from `folder` first (a `baseline_tree`; None: this tree)."""
    saved = os.environ.get("PYTHONPATH")
    if folder is not None:
        os.environ["PYTHONPATH"] = f"{folder}{os.pathsep}{saved or ''}"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@contextmanager
def server_process(artifact: Path, model: str, log_file: Path, pythonpath: Path | None) -> Iterator[tuple[int, int]]:
    """`ortserve serve` of one model with default settings, from this venv or from the tree at `pythonpath`; yields
    (port, pid) once SERVING."""
    port = free_port()
    executable = [sys.executable, "-m", "ortserve.cli.main"]
    command = serve_command(port, "--model", f"{model}={artifact}", "--drain-period-s", "0", executable=executable)
    environment = dict(os.environ)
    if pythonpath is not None:
        environment["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{environment.get('PYTHONPATH', '')}"
    with log_file.open("ab") as log_output:
        # A session of its own, as a server in its own container has: Linux's autogroup scheduling then shares the
        # CPU between the server and this process's hundreds of callers by session, not by thread, and the server's
        # own priorities (model threads below its event loop) decide within its share. In one session, the callers'
        # threads would outrank the server's lowered model threads, which no deployment puts on one machine.
        process = subprocess.Popen(
            command, stdout=log_output, stderr=log_output, env=environment, start_new_session=True
        )
        try:
            wait_until_serving(f"{LOOPBACK}:{port}", process, timeout=180, poll_s=0.05)
            yield port, process.pid
        finally:
            _stop(process)


# --- amplification -------------------------------------------------------------------------------------------------


def amplifying_request(model: str, texts: Sequence[str], outputs: int = AMPLIFICATION_OUTPUTS) -> v2.ModelInferRequest:
    """A V2 ModelInfer of `texts` asking `outputs` times for `probabilities` (the attack: 100,000 times)."""
    request = v2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(text.encode() for text in texts)
    for _ in range(outputs):
        request.outputs.add(name="probabilities")
    return request


async def _victim(stub: Any, model: str, texts: Sequence[str], seconds: float) -> list[float]:
    latencies: list[float] = []
    end = time.monotonic() + seconds
    index = 0
    while time.monotonic() < end:
        start = time.perf_counter()
        await stub.Classify(pb.ClassifyRequest(model=model, texts=[texts[index % len(texts)]]), timeout=60)
        latencies.append((time.perf_counter() - start) * 1000)
        index += 1
        await asyncio.sleep(0.02)
    return latencies


async def _status_of(infer: Any, request: bytes) -> tuple[str, float]:
    """The status code of one ModelInfer call and the milliseconds to it."""
    start = time.perf_counter()
    try:
        await infer(request, timeout=120)
        code = "OK"
    except grpc.aio.AioRpcError as error:
        code = error.code().name
    return code, (time.perf_counter() - start) * 1000


def amplification(port: int, pid: int, model: str, texts: Sequence[str], seconds: float) -> dict[str, Any]:
    request = amplifying_request(model, [texts[i % len(texts)] for i in range(AMPLIFICATION_TEXTS)])
    # Serialized once, as an attacker would: the figures are the server's, not this client's protobuf encoder's
    # (2.5 ms a request here, spent on the loop the victim shares).
    payload = request.SerializeToString()
    target = f"{LOOPBACK}:{port}"

    async def main() -> dict[str, Any]:
        # gRPC's default 4 MiB receive limit, as any client: an amplified answer is built and sent by the server, and
        # refused by the client (RESOURCE_EXHAUSTED), as in the probe. The victim is another caller, on its
        # own connection: on the attackers' one its small requests would queue behind their megabytes.
        async with (
            grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as attack_channel,
            grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel,
        ):
            infer = attack_channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
            classify = pb_grpc.InferenceStub(channel)
            await _victim(classify, model, texts, 1.0)  # warm-up
            # ModelInfer's first call, with one text and one output: what any V2 caller's first call grows the server
            # by (the method's code paths, buffers) is not the attack's.
            await infer(amplifying_request(model, texts[:1], outputs=1).SerializeToString(), timeout=60)
            rss_before = rss_mb(pid)[0]
            code, first_ms = await _status_of(infer, payload)
            rss_after = rss_mb(pid)[0]
            # The first request pays once for the method's first call; the same request again, each time from a new
            # connection (a caller the server has not refused yet: the server holds repeated refusals to one
            # connection), shows what each costs, connection's window growing to 1.7 MB included.
            again: list[float] = []
            while len(again) < AMPLIFICATION_REPEATS and sum(again) < 2000:  # a tree that builds the answer: seconds
                async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as fresh:
                    call = fresh.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
                    await fresh.channel_ready()
                    again.append((await _status_of(call, payload))[1])
            quiet = await _victim(classify, model, texts, seconds)
            stop = asyncio.Event()

            async def attacker() -> None:
                while not stop.is_set():
                    try:
                        await infer(payload, timeout=120)
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0)

            attackers = [asyncio.create_task(attacker()) for _ in range(2)]
            attacked = await _victim(classify, model, texts, seconds)
            stop.set()
            await asyncio.gather(*attackers)
            rss_end = rss_mb(pid)[0]
            return {
                "request_bytes": len(payload),
                "code": code,
                "first_answer_ms": first_ms,
                "answer_ms": statistics.median(again),
                "rss_growth_mb": rss_after - rss_before,
                "rss_growth_after_attack_mb": rss_end - rss_before,
                "victim_quiet_p99_ms": _percentile(quiet, 99),
                "victim_attacked_p99_ms": _percentile(attacked, 99),
                "victim_attacked_calls": len(attacked),
            }

    return asyncio.run(main())


# --- fair runs -----------------------------------------------------------------------------------------------------


def fair_runs(port: int, model: str, medium_text: str, bulk_text: str, seconds: float) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            await stub.Classify(pb.ClassifyRequest(model=model, texts=[medium_text]), timeout=60)
            stop = asyncio.Event()
            answered: list[list[float]] = [[], []]  # per bulk caller, when each of its calls was answered

            async def bulk(ends: list[float]) -> None:
                while not stop.is_set():
                    try:
                        await stub.Classify(
                            pb.ClassifyRequest(model=model, texts=[bulk_text] * FAIR_BULK_TEXTS), timeout=600
                        )
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.1)
                        continue
                    ends.append(time.monotonic())

            bulk_tasks = [asyncio.create_task(bulk(ends)) for ends in answered]
            await asyncio.sleep(2.0)  # both bulk callers are queued and running
            measuring_from = time.monotonic()
            medium: list[float] = []
            while time.monotonic() - measuring_from < seconds:
                start = time.perf_counter()
                await stub.Classify(pb.ClassifyRequest(model=model, texts=[medium_text]), timeout=60)
                medium.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.2)
            measuring_to = time.monotonic()
            stop.set()
            for task in bulk_tasks:
                task.cancel()
            await asyncio.gather(*bulk_tasks, return_exceptions=True)
            # Each bulk caller sends its calls back to back: its texts per second are its calls answered between its
            # first and last answer while the medium caller ran, over that time. A caller left waiting (starved)
            # counts 0, which a rate read from the answered calls' durations would hide.
            rates = [_caller_rate([end for end in ends if measuring_from <= end <= measuring_to]) for ends in answered]
            return {
                "medium_p50_ms": statistics.median(medium),
                "medium_p99_ms": _percentile(medium, 99),
                "medium_calls": len(medium),
                "medium_ms": medium,
                "bulk_texts_per_s": sum(rates),
                "bulk_texts_per_s_by_caller": rates,
                "bulk_calls": [sum(measuring_from <= end <= measuring_to for end in ends) for ends in answered],
                "seconds": measuring_to - measuring_from,
            }

    return asyncio.run(main())


def _caller_rate(ends: Sequence[float]) -> float:
    """Texts per second of one back-to-back bulk caller whose calls were answered at `ends`: the calls after its first
    answer, over the seconds from that answer to its last; 0 with fewer than two answers."""
    if len(ends) < 2:
        return 0.0
    return FAIR_BULK_TEXTS * (len(ends) - 1) / (ends[-1] - ends[0])


def one_caller_p50(port: int, model: str, texts: Sequence[str], calls: int) -> float:
    async def main() -> float:
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            latencies = []
            for index in range(calls):
                start = time.perf_counter()
                await stub.Classify(pb.ClassifyRequest(model=model, texts=[texts[index % len(texts)]]), timeout=60)
                latencies.append((time.perf_counter() - start) * 1000)
            return statistics.median(latencies[calls // 10 :])

    return asyncio.run(main())


# --- all of it -----------------------------------------------------------------------------------------------------


#: (callers, deadline in seconds) of the overload levels, in the order they run.
OVERLOAD_LEVELS = [(50, 0.1), (500, 0.1), (50, 0.5), (500, 0.5)]
#: Quiet seconds before each overload level: longer than the longest retry pushback the server gives (2 s), so that
#: no level starts at a server that still expects the previous level's callers back.
LEVEL_PAUSE_S = 2.5


SCENARIOS = ("one_caller", "fair_runs", "overload", "amplification")


def measure_tree(
    artifact: Path,
    model: str,
    pythonpath: Path | None,
    log_file: Path,
    texts: Sequence[str],
    scale: float,
    scenarios: Sequence[str] = SCENARIOS,
) -> dict[str, Any]:
    words = " ".join(texts).split()
    bulk_text = long_text(words, BULK_CHARS, 2)
    medium_text = long_text(words, MEDIUM_CHARS, 3)
    results: dict[str, Any] = {}
    with server_process(artifact, model, log_file, pythonpath) as (port, pid):
        if "one_caller" in scenarios:
            log.info("  one caller")
            results["one_caller_p50_ms"] = one_caller_p50(port, model, texts, int(400 * scale))
        if "fair_runs" in scenarios:
            log.info("  fair runs")
            results["fair_runs"] = fair_runs(port, model, medium_text, bulk_text, 20 * scale)
        if "overload" in scenarios:
            log.info("  overload")
            results["overload"] = {}
            for callers, deadline in OVERLOAD_LEVELS:
                time.sleep(LEVEL_PAUSE_S)  # the previous level's callers are gone: let what they were told expire
                results["overload"][f"{callers}x{int(deadline * 1000)}ms"] = overload_level(
                    port, model, texts, callers, 4 * scale, deadline
                )
        if "amplification" in scenarios:
            log.info("  amplification")
            results["amplification"] = amplification(port, pid, model, texts, 4 * scale)
    return results


def measure(
    work: Path,
    baseline_ref: str,
    model_name: str,
    rounds: int,
    quick: bool,
    scenarios: Sequence[str] = SCENARIOS,
    this_only: bool = False,
) -> dict[str, Any]:
    models, _ = build_models(work)
    model = next(m for m in models if m.name == model_name)
    texts = make_texts(model.artifact / "tokenizer.json", 256, mixed=False)
    trees: dict[str, Path | None] = {} if this_only else {baseline_ref: baseline_tree(baseline_ref, work)}
    trees["this tree"] = None
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    scale = 0.5 if quick else 1.0
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for round_ in range(rounds):
        for name, pythonpath in trees.items():
            log.info("round %d: %s", round_ + 1, name)
            runs[name].append(
                measure_tree(model.artifact, model.name, pythonpath, logs / "hostile-load.log", texts, scale, scenarios)
            )
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "model": model.name,
        "baseline_ref": baseline_ref,
        "head": head,
        "rounds": rounds,
        "load_average": os.getloadavg(),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of: " + ", ".join(SCENARIOS))
    parser.add_argument("--this-only", action="store_true", help="measure this tree only (no baseline)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    scenarios = [name for name in args.scenarios.split(",") if name]
    results = measure(args.work, args.baseline_ref, args.model, args.rounds, args.quick, scenarios, args.this_only)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hostile-load.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    text = markdown(results)
    (args.out / "hostile-load.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
