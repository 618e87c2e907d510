"""Separate processes the benchmark measures: `ortserve serve`, `mlflow models serve`, and a PyTorch process.

Each runs on 127.0.0.1 only, as its own process (so the load generator never shares its GIL), and is stopped by the
context manager that started it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from ortserve.server.healthcheck import wait_until_serving

from .load import LOOPBACK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory of a process now and at its peak (VmRSS, VmHWM) in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time so far of a process (all its threads) or of one of its threads, from /proc."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class OrtServeProcess:
    """A running `ortserve serve` and how long it took from process start to health SERVING."""

    process: subprocess.Popen[bytes]
    port: int
    start_to_serving_s: float


def serve_command(port: int, *args: str, executable: Sequence[str] = ()) -> list[str]:
    """`ortserve serve` on 127.0.0.1:`port`, logging warnings only, with `args` (the venv's `ortserve` unless
    `executable` names another, e.g. a checkout's)."""
    program = list(executable) or [str(Path(sys.executable).with_name("ortserve"))]
    return [*program, "serve", "--host", LOOPBACK, "--port", str(port), "--log-level", "WARNING", *args]


@contextmanager
def ortserve_process(
    models: dict[str, Path],
    log_file: Path,
    extra_args: Sequence[str] = (),
    timeout: float = 120,
    executable: Sequence[str] = (),
) -> Iterator[OrtServeProcess]:
    """Start `ortserve serve` (`executable`, default this venv's) with `models` on a free loopback port; yield once
    health reports SERVING."""
    port = free_port()
    command = serve_command(port, *extra_args, executable=executable)
    for name, path in models.items():
        command += ["--model", f"{name}={path}"]
    with log_file.open("ab") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            wait_until_serving(f"{LOOPBACK}:{port}", process, timeout=timeout, poll_s=0.01)
            serving_s = time.perf_counter() - start  # from before the process started, not from the first poll
            yield OrtServeProcess(process, port, serving_s)
        finally:
            _stop(process)


def save_mlflow_transformers_model(hf_dir: Path, destination: Path) -> Path:
    """Save the Hugging Face model as an `mlflow.transformers` model, as platforms serve with `mlflow models serve`."""
    if (destination / "MLmodel").is_file():
        return destination
    import mlflow.transformers
    from transformers import pipeline

    shutil.rmtree(destination, ignore_errors=True)
    classifier = pipeline("text-classification", model=str(hf_dir), tokenizer=str(hf_dir), device="cpu")
    # Explicit requirements: inferring them imports every optional vision/audio package transformers might use.
    # `--env-manager local` serves in this environment anyway.
    requirements = [f"{name}=={version(name)}" for name in ("mlflow", "transformers", "torch")]
    mlflow.transformers.save_model(classifier, str(destination), pip_requirements=requirements)
    return destination


@contextmanager
def mlflow_serve_process(model_dir: Path, log_file: Path, timeout: float = 300) -> Iterator[str]:
    """Run `mlflow models serve` of `model_dir` on loopback with the local environment; yield its /invocations URL."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow runs `uvicorn` by name: it must find this environment's
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"file://{model_dir.parent / 'mlruns'}",
    }
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
        try:
            base = f"http://{LOOPBACK}:{port}"
            start = time.perf_counter()
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"mlflow models serve exited with {process.returncode}; see {log_file}")
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.perf_counter() - start > timeout:
                    raise TimeoutError(f"mlflow models serve did not answer /ping after {timeout}s")
                time.sleep(0.5)
            yield f"{base}/invocations"
        finally:
            # mlflow starts uvicorn workers as children: stop the whole session it leads.
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


TORCH_HOLDER = """
import json, sys, time
start = time.perf_counter()
from transformers import pipeline
texts = json.load(open(sys.argv[1]))
pipes = [pipeline("text-classification", model=path, tokenizer=path, device="cpu") for path in sys.argv[2:]]
for pipe in pipes:
    pipe("warm up the model once")
ready = time.perf_counter() - start

def rss():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields

loaded = rss()
for pipe in pipes:
    pipe(texts, batch_size=32, truncation=True)
after = rss()
print(json.dumps({"rss_mb": loaded["VmRSS"], "rss_mb_after_batch": after["VmRSS"], "hwm_mb": after["VmHWM"],
                  "ready_s": ready}))
"""


def torch_process_memory(hf_dirs: Sequence[Path], batch: Sequence[str], scratch: Path) -> dict[str, float]:
    """Resident memory of a fresh PyTorch process holding `hf_dirs` as pipelines: after one short call each, and
    after one `batch` (32 mixed-length texts) each, the heaviest batch the server runs in the benchmark."""
    return memory_holder(TORCH_HOLDER, batch, scratch / "torch-batch.json", hf_dirs)


def memory_holder(script: str, texts: Sequence[str], texts_file: Path, models: Sequence[Path]) -> dict[str, float]:
    """Run `script` in a fresh Python process with a JSON file of `texts` and the `models` as arguments; return the
    figures it prints as JSON on its last line (a fresh process, so that its resident memory is the models' alone)."""
    texts_file.write_text(json.dumps(list(texts)))
    output = subprocess.run(
        [sys.executable, "-c", script, str(texts_file), *map(str, models)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result
