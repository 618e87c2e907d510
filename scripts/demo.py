"""The demo behind `make demo`: build a small classifier, export it, serve it, and ask it through the Python client
and grpcurl. Everything runs offline on this machine; the work directory is ./demo-work.

`--serve-only` serves the artifact of an earlier run in the foreground, for trying the README's grpcurl commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "demo-work"
BIN = Path(sys.executable).parent
TEXTS = ["Shares rallied after a strong quarter.", "The match was cancelled because of heavy rain."]


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(args), flush=True)
    return subprocess.run(args, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def build_and_export() -> Path:
    from ortserve.export.tiny_models import SENTIMENT_LABELS, build_tiny_classifier

    hf_dir, artifact = WORK / "hf" / "sentiment", WORK / "artifacts" / "sentiment"
    banner("1. build a small BERT sentiment classifier offline (random weights, trained tokenizer)")
    shutil.rmtree(hf_dir, ignore_errors=True)
    build_tiny_classifier(hf_dir, "bert", SENTIMENT_LABELS, hidden_size=64, layers=2)
    print(f"saved to {hf_dir}")
    banner("2. export it to ONNX, check it against PyTorch, quantize where accuracy holds")
    run(str(BIN / "ortserve"), "export", str(hf_dir), "--output", str(artifact))
    return artifact


def start_server(artifact: Path, port: int) -> subprocess.Popen[str]:
    command = [str(BIN / "ortserve"), "serve", "--model", f"sentiment={artifact}", "--host", "127.0.0.1",
               "--port", str(port)]
    print("$ " + " ".join(command), flush=True)
    return subprocess.Popen(command, text=True)


def wait_until_serving(port: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with code {process.returncode}; is port {port} free?")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"the server did not report SERVING within {timeout:.0f}s")


def ask(port: int) -> None:
    target = f"127.0.0.1:{port}"
    banner("4. ask through the Python client (ortserve.client.InferenceClient)")
    from ortserve.client import InferenceClient

    with InferenceClient(target) as client:
        for text, result in zip(TEXTS, client.classify("sentiment", TEXTS), strict=True):
            scores = ", ".join(f"{s.label}={s.score:.3f}" for s in result.labels)
            print(f"{text!r} -> {scores} (version {result.model_version})")
    banner("5. ask through the CLI")
    run(str(BIN / "ortserve"), "predict", "--target", target, "--model", "sentiment", "--top-k", "1", *TEXTS)
    banner("6. ask through grpcurl, with no proto files (server reflection)")
    grpcurl = str(BIN / "grpcurl")
    run(grpcurl, "-plaintext", target, "list")
    run(grpcurl, "-plaintext", "-d", json.dumps({"model": "sentiment", "texts": TEXTS[:1], "top_k": 2}), target,
        "ortserve.v1.Inference/Classify")
    run(grpcurl, "-plaintext", "-d", '{"service": "sentiment"}', target, "grpc.health.v1.Health/Check")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--serve-only", action="store_true", help="serve the artifact of an earlier demo run")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    artifact = WORK / "artifacts" / "sentiment"
    if args.serve_only:
        if not (artifact / "ortserve.json").exists():
            raise SystemExit("nothing to serve yet: run `make demo` first")
        return subprocess.call([str(BIN / "ortserve"), "serve", "--model", f"sentiment={artifact}",
                                "--host", "127.0.0.1", "--port", str(args.port)])
    artifact = build_and_export()
    banner(f"3. serve it on 127.0.0.1:{args.port}")
    server = start_server(artifact, args.port)
    try:
        wait_until_serving(args.port, server)
        ask(args.port)
    finally:
        banner("7. stop the server (SIGTERM: in-flight calls finish first)")
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    print("\nDone. `make demo-server` serves this model again for the README's grpcurl commands.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
