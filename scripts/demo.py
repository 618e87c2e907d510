"""The demo behind `make demo`: registry → export → serve → answer, all offline on this machine.

1. seed an embedded MLflow registry (SQLite, ./demo-work/mlflow.db) with `topic-classification` (logged as a
   transformers pipeline) and `sentiment-analysis` (logged as a components dict), alias `production`;
2. `ortserve export models:/<name>@production --alias production` for both (ONNX, int8 where the gate allows,
   registered back as `<name>-onnx`);
3. `ortserve serve` the `-onnx` models by their production alias;
4. ask through the Python client, the CLI and grpcurl; 5. stop the server with SIGTERM.

The seeded models are tiny and have random weights: the answers show the plumbing, not real sentiment.
`--serve-only` serves the registry of an earlier run in the foreground, for trying the README's grpcurl commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `fixtures` (registry_seed) is not installed: import it from this checkout
WORK = ROOT / "demo-work"
BIN = Path(sys.executable).parent
TRACKING_URI = f"sqlite:///{WORK / 'mlflow.db'}"
MODELS = {"sentiment": "sentiment-analysis", "topic": "topic-classification"}
TEXTS = ["Shares rallied after a strong quarter.", "The match was cancelled because of heavy rain."]


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(*args: str) -> None:
    print("$ " + " ".join(args), flush=True)
    subprocess.run(args, check=True, text=True)


def seed() -> None:
    from fixtures.registry_seed import seed_registry

    banner(f"1. seed the MLflow registry at {TRACKING_URI} the way training jobs log models")
    for name, version in seed_registry(TRACKING_URI).items():
        print(f"registered models:/{name}/{version} (alias production, stage Production)")


def export() -> None:
    banner("2. export each production model to ONNX, check it against PyTorch, register it back")
    for registered in MODELS.values():
        run(str(BIN / "ortserve"), "export", f"models:/{registered}@production", "--alias", "production")


def serve_command(port: int) -> list[str]:
    command = [str(BIN / "ortserve"), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--cache-dir", str(WORK / "cache")]
    for served, registered in MODELS.items():
        command += ["--model", f"{served}=models:/{registered}-onnx@production"]
    return command


def ask(port: int) -> None:
    target = f"127.0.0.1:{port}"
    banner("4. ask through the Python client (ortserve.client.InferenceClient)")
    from ortserve.client import InferenceClient

    with InferenceClient(target) as client:
        for info in client.list_models():
            print(f"model {info.name}: version {info.version} of {info.source_uri}, {info.state}, "
                  f"labels {list(info.labels)}")
        for served in MODELS:
            for text, result in zip(TEXTS, client.classify(served, TEXTS, top_k=2), strict=True):
                scores = ", ".join(f"{s.label}={s.score:.3f}" for s in result.labels)
                print(f"{served:9} {text!r} -> {scores} (version {result.model_version})")
    banner("5. ask through the CLI")
    run(str(BIN / "ortserve"), "predict", "--target", target, "--model", "sentiment", "--top-k", "1", *TEXTS)
    banner("6. ask through grpcurl, with no proto files (server reflection)")
    grpcurl = str(BIN / "grpcurl")
    run(grpcurl, "-plaintext", target, "list")
    run(grpcurl, "-plaintext", "-d", json.dumps({"model": "topic", "texts": TEXTS[:1], "top_k": 2}), target,
        "ortserve.v1.Inference/Classify")
    run(grpcurl, "-plaintext", "-d", '{"service": "sentiment"}', target, "grpc.health.v1.Health/Check")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--serve-only", action="store_true", help="serve the registry of an earlier demo run")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = TRACKING_URI  # for every command below, as a deployment would set it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.serve_only:
        if not (WORK / "mlflow.db").exists():
            raise SystemExit("nothing to serve yet: run `make demo` first")
        return subprocess.call(serve_command(args.port))
    shutil.rmtree(WORK, ignore_errors=True)  # every demo starts from an empty registry and cache
    WORK.mkdir(parents=True)
    seed()
    export()
    banner(f"3. serve the -onnx models by their production alias on 127.0.0.1:{args.port}")
    command = serve_command(args.port)
    print("$ " + " ".join(command), flush=True)
    server = subprocess.Popen(command, text=True)
    try:
        from ortserve.server.healthcheck import wait_until_serving

        try:
            wait_until_serving(f"127.0.0.1:{args.port}", server, timeout=120)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"{exc}; is port {args.port} free?") from None
        ask(args.port)
    finally:
        banner("7. stop the server (SIGTERM: in-flight calls finish first)")
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    print("\nDone. `make demo-server` serves these models again for the README's grpcurl commands.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
