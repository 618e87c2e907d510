"""Long texts (`long_text=truncate|chunk`): accuracy and cost on generated articles with the demo's real models.

    python -m benchmarks.long_texts [--lengths 64,128,512] [--per-label 20]

For each served window length (`--max-length`), one server serves the demo's two fine-tuned MiniLM-L6 models and
answers: the held-out headline accuracy (the reference), the held-out article accuracy with `truncate`, `chunk`+mean
and `chunk`+max (`demo.headlines.long_articles`: the first window is page furniture or a lede about another subject),
and the server CPU per article. At the first length it also measures how the cost of a text grows with its windows (a
10-window article against its 10 windows sent as texts) and whether a caller of short texts keeps its latency beside a
caller of 40-window articles. Results: benchmarks/work/results/long_texts.json (and the table on stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ortserve.client import InferenceClient
from ortserve.server.runtime import OnnxClassifier, SessionConfig

from .models import build_trained_models
from .paths import RESULTS, WORK
from .processes import LOOPBACK, ortserve_process

log = logging.getLogger(__name__)

#: Server name of each task's model.
SERVED = {"topic": "minilm-topic", "sentiment": "minilm-sentiment"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_per_call(pid: int, call: Callable[[], object], calls: int) -> float:
    """Server CPU seconds per call of `call`, over `calls` calls in a row (after one untimed call)."""
    call()
    before = server_cpu_s(pid)
    for _ in range(calls):
        call()
    return (server_cpu_s(pid) - before) / calls


def accuracy_rows(client: InferenceClient, pid: int, per_label: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Headline and article accuracy of both models with each strategy, and server CPU per article."""
    from demo.evaluate import LONG_TEXT_STRATEGIES
    from demo.headlines import long_articles, sentiment_dataset, topic_dataset
    from demo.train import DEMO_CONFIGS, accuracy

    rows, headline = [], {}
    for task, served in SERVED.items():
        config = DEMO_CONFIGS["topic-classification" if task == "topic" else "sentiment-analysis"]
        dataset = (topic_dataset if task == "topic" else sentiment_dataset)(
            config.train_per_label, config.heldout_per_label, config.seed
        )
        answers = client.classify(served, [e.text for e in dataset.heldout], top_k=1)
        headline[served] = accuracy([a.top.label for a in answers], [e.label for e in dataset.heldout])
        articles = long_articles(per_label, task)  # type: ignore[arg-type]
        texts = [a.text for a in articles]
        labels = [a.topic if task == "topic" else a.polarity for a in articles]
        for name, long_text, aggregate in LONG_TEXT_STRATEGIES:
            before, started = server_cpu_s(pid), time.perf_counter()
            answers = client.classify(served, texts, top_k=1, long_text=long_text, aggregate=aggregate)
            seconds, cpu = time.perf_counter() - started, server_cpu_s(pid) - before
            by_opening: dict[str, list[bool]] = {}
            for article, answer, label in zip(articles, answers, labels, strict=True):
                by_opening.setdefault(article.opening, []).append(answer.top.label == label)
            rows.append(
                {
                    "model": served,
                    "strategy": name,
                    "articles": len(texts),
                    "accuracy": accuracy([a.top.label for a in answers], labels),
                    "accuracy_by_opening": {k: sum(v) / len(v) for k, v in sorted(by_opening.items())},
                    "windows_per_article": sum(max(1, a.windows) for a in answers) / len(answers),
                    "seconds": seconds,
                    "server_cpu_ms_per_article": cpu / len(texts) * 1000,
                }
            )
    return rows, headline


def article_of_windows(classifier: OnnxClassifier, windows: int, stride: int) -> tuple[str, list[str]]:
    """A generated article that the server cuts into exactly `windows` windows, and those windows."""
    from demo.headlines import long_articles

    base = " ".join(a.text for a in long_articles(4, "topic"))
    words = base.split()
    low, high = 1, len(words)
    while low < high:  # the fewest words that take `windows` windows
        middle = (low + high) // 2
        count = len(classifier.windows([" ".join(words[:middle])], windows + 1, stride)[0].windows)
        low, high = (middle + 1, high) if count < windows else (low, middle)
    text = " ".join(words[:low])
    return text, classifier.windows([text], windows, stride)[0].windows


def cost_rows(client: InferenceClient, pid: int, artifact: Path, length: int, calls: int) -> dict[str, Any]:
    """Server CPU of a 10-window article (chunk) against its 10 windows as texts (one call; ten calls), and of a
    short text with `truncate` (the default) and with `chunk` (which must cost the same)."""
    classifier = OnnxClassifier.load(artifact, SessionConfig(max_length=length))
    article, windows = article_of_windows(classifier, 10, 16)
    served = SERVED["topic"]
    chunked = cpu_per_call(pid, lambda: client.classify(served, [article], long_text="chunk"), calls)
    one_call = cpu_per_call(pid, lambda: client.classify(served, windows), calls)
    ten_calls = cpu_per_call(pid, lambda: [client.classify(served, [w]) for w in windows], calls)
    short = "Shares rallied after a strong quarter."
    short_truncate = cpu_per_call(pid, lambda: client.classify(served, [short]), calls * 10)
    short_chunk = cpu_per_call(pid, lambda: client.classify(served, [short], long_text="chunk"), calls * 10)
    return {
        "windows": len(windows),
        "article_chars": len(article),
        "article_chunk_cpu_ms": chunked * 1000,
        "windows_one_call_cpu_ms": one_call * 1000,
        "windows_ten_calls_cpu_ms": ten_calls * 1000,
        "ratio_to_one_call": chunked / one_call,
        "ratio_to_ten_calls": chunked / ten_calls,
        "short_truncate_cpu_ms": short_truncate * 1000,
        "short_chunk_cpu_ms": short_chunk * 1000,
    }


def latencies(client: InferenceClient, served: str, text: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.classify(served, [text])
        times.append(time.perf_counter() - started)
    return times


def fairness(target: str, artifact: Path, length: int, max_batch_size: int = 32) -> dict[str, Any]:
    """p50 of a caller of short texts alone, and beside a caller that loops on 40-window articles; the bound is the
    idle p50 plus one full run (`max_batch_size` windows of `length` tokens)."""
    classifier = OnnxClassifier.load(artifact, SessionConfig(max_length=length))
    article, windows = article_of_windows(classifier, 40, 16)
    served, short = SERVED["topic"], "Parliament will vote on the new budget next week."
    with InferenceClient(target, timeout=600) as quiet, InferenceClient(target, timeout=600) as bulk:
        idle = statistics.median(latencies(quiet, served, short, 100))
        full = windows[:max_batch_size] * (max_batch_size // max(1, len(windows[:max_batch_size])))
        full_run = min(_timed(lambda: quiet.classify(served, full)) for _ in range(5))
        stop = threading.Event()
        articles = [0]

        def loop() -> None:
            while not stop.is_set():
                bulk.classify(served, [article], long_text="chunk", max_chunks=40)
                articles[0] += 1

        worker = threading.Thread(target=loop)
        worker.start()
        try:
            time.sleep(1.0)
            loaded = statistics.median(latencies(quiet, served, short, 100))
        finally:
            stop.set()
            worker.join()
    return {
        "article_windows": len(windows),
        "idle_p50_ms": idle * 1000,
        "full_run_ms": full_run * 1000,
        "bound_ms": (idle + full_run) * 1000,
        "beside_articles_p50_ms": loaded * 1000,
        "articles_answered": articles[0],
    }


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="64,128,512", help="served window lengths, comma-separated")
    parser.add_argument("--per-label", type=int, default=20, help="held-out articles per label")
    parser.add_argument("--calls", type=int, default=10, help="calls per cost figure")
    parser.add_argument("--out", type=Path, default=RESULTS / "long_texts.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from demo.evaluate import LongTextAccuracy, long_text_table

    models = {m.name: m.artifact for m in build_trained_models(WORK)}
    lengths = [int(length) for length in args.lengths.split(",")]
    results: dict[str, Any] = {"per_label": args.per_label, "lengths": {}}
    for index, length in enumerate(lengths):
        flags = ["--max-length", str(length), "--max-chunks", "40", "--max-text-chars", "100000"]
        served_models = {served: models[served] for served in SERVED.values()}
        with ortserve_process(served_models, WORK / "long_texts.log", flags) as process:
            target = f"{LOOPBACK}:{process.port}"
            pid = process.process.pid
            with InferenceClient(target, timeout=600) as client:
                rows, headline = accuracy_rows(client, pid, args.per_label)
                entry: dict[str, Any] = {"accuracy": rows, "headline_accuracy": headline}
                if index == 0:
                    entry["cost"] = cost_rows(client, pid, models[SERVED["topic"]], length, args.calls)
            if index == 0:
                entry["fairness"] = fairness(target, models[SERVED["topic"]], length)
        results["lengths"][str(length)] = entry
        table = [
            LongTextAccuracy(r["model"], r["strategy"], r["articles"], r["accuracy"], r["windows_per_article"], 0)
            for r in rows
        ]
        print(f"\nserved at max_length {length}:\n{long_text_table(table, headline)}", flush=True)
        for name in ("cost", "fairness"):
            if name in entry:
                print(name, json.dumps(entry[name], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
