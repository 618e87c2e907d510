"""Spark UDF throughput: `ortserve.client.spark.classify_udf` next to an in-process PyTorch `transformers` pipeline UDF.

    python -m benchmarks.spark_udf [--texts 20000] [--repeats 3] [--work benchmarks/work/spark_udf]

One run, one machine, one cached DataFrame, a local Spark session (`local[2]`):

- ortserve: `ortserve serve` as a separate process on 127.0.0.1 serving the demo-sized model (BERT, hidden size 64,
  2 layers, exported the default way: int8 if it passes the gate); the UDF sends each Arrow batch as chunked gRPC
  calls through one channel per Python worker.
- PyTorch: a pandas iterator UDF that builds a `transformers` text-classification pipeline once per task and runs
  each Arrow batch through it (`batch_size=32`, one torch thread per worker so two workers use the two cores), as
  callers do today.

Each UDF runs once to warm up (worker processes, imports), then `--repeats` timed runs, the two taking turns, that
force every row through the UDF (Spark's `noop` sink). Reports texts/s (median of the repeats) and the top-label
agreement of the two.
Both compete for the same 2 cores with the JVM and the Python workers; in production the server has its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import pandas_udf

ROOT = Path(__file__).resolve().parent.parent
MODEL = "sentiment"


def build_model(work: Path) -> tuple[Path, Path]:
    """The demo-sized model (as scripts/demo.py builds it) and its ortserve artifact, reused when present."""
    from fixtures.tiny_models import SENTIMENT_LABELS, build_tiny_classifier
    from ortserve.export import ExportOptions, export_local_model

    hf_dir, artifact = work / "hf", work / "artifact"
    if not (artifact / "ortserve.json").exists():
        shutil.rmtree(hf_dir, ignore_errors=True)
        shutil.rmtree(artifact, ignore_errors=True)
        build_tiny_classifier(hf_dir, "bert", SENTIMENT_LABELS, hidden_size=64, layers=2)
        export_local_model(hf_dir, artifact, ExportOptions())
    return hf_dir, artifact


def make_texts(tokenizer_file: Path, count: int, seed: int = 0) -> list[str]:
    """Headline-like texts of 8–40 words drawn from the model's vocabulary (so they are not mostly unknown tokens)."""
    vocab = json.loads(tokenizer_file.read_text())["model"]["vocab"]
    words = sorted(w for w in vocab if w.isalpha() and w.islower() and len(w) > 2)
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 40))) for _ in range(count)]


def start_server(artifact: Path, log_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`ortserve serve` on a free loopback port, once it reports SERVING."""
    import socket

    from ortserve.server.healthcheck import wait_until_serving

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        str(Path(sys.executable).parent / "ortserve"),
        "serve",
        "--model",
        f"{MODEL}={artifact}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=log_file.open("wb"), stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, process, timeout=60, poll_s=0.2)
    except (RuntimeError, TimeoutError) as exc:
        process.kill()
        raise SystemExit(f"ortserve serve: {exc}; see {log_file}") from None
    return process, target


def torch_pipeline_udf(hf_dir: str, batch_size: int = 32, threads: int = 1):  # type: ignore[no-untyped-def]
    """A pandas UDF running a `transformers` pipeline in the Python worker: today's in-process way."""

    def classify(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        import torch
        from transformers import pipeline

        torch.set_num_threads(threads)
        pipe = pipeline("text-classification", model=hf_dir, tokenizer=hf_dir, device="cpu")
        with torch.inference_mode():
            for texts in batches:
                out = pipe(texts.tolist(), batch_size=batch_size, truncation=True)
                yield pd.DataFrame({"label": [o["label"] for o in out], "score": [float(o["score"]) for o in out]})

    return pandas_udf(classify, "label string, score float")  # type: ignore[call-overload]


def timed_runs(frame: DataFrame, udfs: dict[str, object], repeats: int) -> dict[str, list[float]]:
    """Seconds per full pass of `frame` through each UDF, after one untimed warm-up pass of each.

    The systems take turns (A B A B ...) so a change in the machine's load during the run hits both alike.
    """
    queries = {name: frame.select(udf("text").alias("r")) for name, udf in udfs.items()}  # type: ignore[operator]
    for query in queries.values():
        query.write.format("noop").mode("overwrite").save()
    seconds: dict[str, list[float]] = {name: [] for name in queries}
    for _ in range(repeats):
        for name, query in queries.items():
            start = time.perf_counter()
            query.write.format("noop").mode("overwrite").save()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=1_000, help="rows per Arrow batch handed to the UDF")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "spark_udf")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep Spark's own traffic on loopback

    hf_dir, artifact = build_model(args.work)
    texts = make_texts(artifact / "tokenizer.json", args.texts)
    server, target = start_server(artifact, args.work / "server.log")
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("ortserve-spark-udf-bench")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_rows))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        from ortserve.client.spark import classify_udf

        frame = spark.createDataFrame([(t,) for t in texts], "text string").repartition(2).cache()
        frame.count()
        systems = {
            "ortserve classify_udf (gRPC)": classify_udf(MODEL, target=target, top_k=1),
            "PyTorch pipeline UDF (in process)": torch_pipeline_udf(str(hf_dir)),
        }
        results = {}
        for name, seconds in timed_runs(frame, systems, args.repeats).items():
            results[name] = {"seconds": seconds, "texts_per_s": args.texts / statistics.median(seconds)}
            print(
                f"{name}: {results[name]['texts_per_s']:.0f} texts/s (runs: "
                + ", ".join(f"{s:.2f}s" for s in seconds)
                + ")",
                flush=True,
            )
        labels = {
            name: [row["label"] for row in frame.select(udf("text").alias("r")).select("r.label").collect()]
            for name, udf in systems.items()
        }
        ours, theirs = labels.values()
        agreement = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(ours)
    finally:
        spark.stop()
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    names = list(results)
    ratio = results[names[0]]["texts_per_s"] / results[names[1]]["texts_per_s"]
    print(
        f"\n{args.texts} texts, 2 partitions, {args.batch_rows} rows per Arrow batch, local[2] on {os.cpu_count()} "
        f"cores, median of {args.repeats} alternating runs after a warm-up"
    )
    print("| UDF | texts/s |\n|---|---|")
    for name in names:
        print(f"| {name} | {results[name]['texts_per_s']:.0f} |")
    print(f"ortserve / PyTorch: {ratio:.2f}x; top labels agree on {agreement:.1%} of texts")
    (args.work / "result.json").write_text(
        json.dumps({"texts": args.texts, "results": results, "agreement": agreement, "ratio": ratio}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
