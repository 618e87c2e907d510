"""HTTP next to gRPC next to `mlflow models serve`, in one run on the same model (issue 19's targets).

    python -m benchmarks.http_side_by_side [--model minilm] [--work benchmarks/work] [--out benchmarks/work/results]

One `ortserve serve` process answers gRPC (`Classify`) and HTTP (MLflow's `/invocations` and the Open Inference
Protocol's `/v2/models/NAME/infer`); `mlflow models serve` serves the same Hugging Face model as a transformers
pipeline. Texts have 21 tokens. Each path is measured with one caller (p50 of single-text calls) and with 32
callers (texts/s, single-text calls), and the server's CPU time per call (user + system, from /proc, summed over the
server's process tree) is read around each load. The HTTP callers keep their connections open (as any HTTP client
library does), from one asyncio client like the gRPC load's. Results: `http-side-by-side.md` and `.json` in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .http_report import markdown
from .load import LOOPBACK, LoadResult, _closed_loop, blocking_caller, grpc_load, merge
from .models import build_models
from .processes import free_port, mlflow_serve_process, ortserve_process, save_mlflow_transformers_model
from .texts import make_texts

log = logging.getLogger("benchmarks.http_side_by_side")

CALLERS = 32
#: Rounds per ortserve path, interleaved; the figures pool the rounds' calls (CPU per call: their median).
ROUNDS = 3
#: Issue 19's targets.
TARGET_THROUGHPUT_RATIO = 0.85
TARGET_P50_EXTRA_MS = 0.5
TARGET_OVER_MLFLOW = 10.0
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


def invocations_body(texts: list[str]) -> bytes:
    return json.dumps({"inputs": texts}).encode()


def v2_body(texts: list[str]) -> bytes:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
    return json.dumps({"inputs": [tensor], "parameters": {"top_k": 1}, "outputs": [{"name": "top_labels"}]}).encode()


def request_bytes(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = _CONTENT_LENGTH.search(head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())


def keepalive_load(
    port: int,
    path: str,
    make_body: Callable[[list[str]], bytes],
    texts: list[str],
    callers: int,
    max_calls: int,
    max_seconds: float,
) -> LoadResult:
    """Closed-loop POSTs from one asyncio client, one kept-open connection per caller."""

    async def main() -> LoadResult:
        connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for _ in range(callers):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connections.put_nowait((reader, writer))

        async def call(batch: list[str]) -> None:
            reader, writer = await connections.get()
            try:
                await exchange(reader, writer, request_bytes(path, make_body(batch)))
            finally:
                connections.put_nowait((reader, writer))

        try:
            return await _closed_loop(call, texts, callers, 1, max_calls, max_seconds, warmup_calls=4)
        finally:
            while not connections.empty():
                connections.get_nowait()[1].close()

    return asyncio.run(main())


def one_http_caller(
    port: int, path: str, make_body: Callable[[list[str]], bytes], texts: list[str], calls: int
) -> LoadResult:
    """One blocking caller on one kept-open connection (what a script with `requests.Session` does)."""
    latencies: list[float] = []
    with socket.create_connection((LOOPBACK, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = sock.makefile("rb")
        start = time.perf_counter()
        for index in range(calls + 4):
            begin = time.perf_counter()
            sock.sendall(request_bytes(path, make_body([texts[index % len(texts)]])))
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += stream.readline()
            length = _CONTENT_LENGTH.search(head)
            stream.read(int(length.group(1)) if length else 0)
            if index >= 4:
                latencies.append((time.perf_counter() - begin) * 1000)
        seconds = time.perf_counter() - start
    return LoadResult(1, 1, len(latencies), 0, seconds, latencies)


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of `root` and every process in its session (mlflow's uvicorn workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, session = int(entry.name), int(fields[3])
        if pid == root or session == root:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def measured(pid: int, load: Callable[[], LoadResult]) -> tuple[LoadResult, float]:
    """The load's result and the server's CPU milliseconds per call during it."""
    before = tree_cpu_s(pid)
    result = load()
    cpu_ms = (tree_cpu_s(pid) - before) * 1000 / max(1, result.calls)
    return result, cpu_ms


def run(model_name: str, work: Path, out: Path, seconds: float, calls: int) -> dict[str, Any]:
    models, _ = build_models(work)
    (model,) = [m for m in models if m.name == model_name]
    mlflow_dir = save_mlflow_transformers_model(model.hf_dir, work / "mlflow" / model.name)
    texts = make_texts(model.artifact / "tokenizer.json", 512, mixed=False)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, float]] = {}
    http_port = free_port()
    extra = ["--http-port", str(http_port)]
    with ortserve_process({"bench": model.artifact}, logs / "http-side-by-side.log", extra) as server:
        pid = server.process.pid
        loads: dict[str, tuple[Callable[[], LoadResult], Callable[[], LoadResult]]] = {
            "ortserve gRPC Classify": (
                lambda: blocking_caller(server.port, "bench", texts, calls, seconds),
                lambda: grpc_load(server.port, "bench", texts, CALLERS, 1, calls * 10, seconds),
            ),
        }
        for name, (path, body) in {
            "ortserve HTTP /invocations": ("/models/bench/invocations", invocations_body),
            "ortserve HTTP /v2 infer": ("/v2/models/bench/infer", v2_body),
        }.items():
            loads[name] = (
                lambda p=path, b=body: one_http_caller(http_port, p, b, texts, calls),
                lambda p=path, b=body: keepalive_load(http_port, p, b, texts, CALLERS, calls * 10, seconds),
            )
        # Rounds interleave the paths, so that a change in the machine's load (other work on shared cores) falls on
        # every path alike instead of on whichever ran at that moment.
        rounds: dict[str, list[tuple[LoadResult, float, LoadResult, float]]] = {name: [] for name in loads}
        for _ in range(ROUNDS):
            for name, (one_load, many_load) in loads.items():
                one, cpu1 = measured(pid, one_load)
                many, cpu32 = measured(pid, many_load)
                rounds[name].append((one, cpu1, many, cpu32))
        for name, measured_rounds in rounds.items():
            rows[name] = row(
                merge([r[0] for r in measured_rounds]),
                merge([r[2] for r in measured_rounds]),
                statistics.median(r[1] for r in measured_rounds),
                statistics.median(r[3] for r in measured_rounds),
            )
    with mlflow_serve_process(mlflow_dir, logs / "http-side-by-side-mlflow.log") as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        mlflow_pid = _listening_pid(port)
        one, cpu1 = measured(
            mlflow_pid, lambda: one_http_caller(port, "/invocations", invocations_body, texts, calls // 4)
        )
        many, cpu32 = measured(
            mlflow_pid,
            lambda: keepalive_load(port, "/invocations", invocations_body, texts, CALLERS, calls, ROUNDS * seconds),
        )
        rows["mlflow models serve /invocations"] = row(one, many, cpu1, cpu32)
    report = {"model": model.name, "quantization": model.quantization(), "callers": CALLERS, "rows": rows}
    report["targets"] = targets(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "http-side-by-side.json").write_text(json.dumps(report, indent=2))
    (out / "http-side-by-side.md").write_text(markdown(report))
    return report


def _listening_pid(port: int) -> int:
    """The session leader of the process listening on `port` (mlflow's CLI, whose session holds uvicorn)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inode = fields[9]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if f"socket:[{inode}]" in links:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[3])  # its session
    raise RuntimeError(f"nothing listens on port {port}")


def row(one: LoadResult, many: LoadResult, cpu1: float, cpu32: float) -> dict[str, float]:
    return {
        "p50_ms_1_caller": round(one.p50, 3),
        "p99_ms_1_caller": round(one.p99, 3),
        "texts_per_s_32_callers": round(many.texts_per_s, 1),
        "p50_ms_32_callers": round(many.p50, 2),
        "errors": one.errors + many.errors,
        "server_cpu_ms_per_call_1_caller": round(cpu1, 3),
        "server_cpu_ms_per_call_32_callers": round(cpu32, 3),
    }


def targets(rows: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    grpc_row, mlflow_row = rows["ortserve gRPC Classify"], rows["mlflow models serve /invocations"]
    checks = []
    for name in ("ortserve HTTP /invocations", "ortserve HTTP /v2 infer"):
        http = rows[name]
        ratio = http["texts_per_s_32_callers"] / grpc_row["texts_per_s_32_callers"]
        extra = http["p50_ms_1_caller"] - grpc_row["p50_ms_1_caller"]
        over = http["texts_per_s_32_callers"] / max(mlflow_row["texts_per_s_32_callers"], 1e-9)
        checks += [
            {
                "target": f"{name}: 32 callers >= {TARGET_THROUGHPUT_RATIO}x gRPC",
                "measured": round(ratio, 2),
                "met": ratio >= TARGET_THROUGHPUT_RATIO,
            },
            {
                "target": f"{name}: 1 caller p50 <= gRPC p50 + {TARGET_P50_EXTRA_MS} ms",
                "measured": round(extra, 3),
                "met": extra <= TARGET_P50_EXTRA_MS,
            },
            {
                "target": f"{name}: 32 callers >= {TARGET_OVER_MLFLOW}x mlflow models serve",
                "measured": round(over, 1),
                "met": over >= TARGET_OVER_MLFLOW,
            },
        ]
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="a benchmark model: minilm or bert-base")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/work/results"))
    parser.add_argument("--seconds", type=float, default=4.0, help="longest duration of one load (per round)")
    parser.add_argument("--calls", type=int, default=300, help="calls of one caller (32 callers: ten times as many)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report = run(args.model, args.work, args.out, args.seconds, args.calls)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
