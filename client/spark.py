"""Spark: a pandas UDF that classifies a column of texts through ortserve (`pip install 'ortserve[spark]'`).

    from ortserve.client.spark import classify_udf

    topic = classify_udf("topic", target="dns:///ortserve.internal:50051")
    df.withColumn("topic", topic("text")).select("text", "topic.label", "topic.score")

Each Arrow batch an executor hands the UDF goes out as chunked, concurrent gRPC calls. The UDF carries only its
settings to the executors; the gRPC channel is made in each Python worker on first use and reused for every later
batch and task that worker runs (Spark reuses Python workers by default, `spark.python.worker.reuse`).
Executors need `ortserve` installed (the base install is enough: grpcio and protobuf, no torch, no onnxruntime).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark.sql.functions import pandas_udf

from .base import DEFAULT_TARGET, DEFAULT_TIMEOUT_S
from .convert import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY
from .shared import shared_client

TOP_SCHEMA = "label string, score float"
RANKED_SCHEMA = "label string, score float, labels array<string>, scores array<float>"


def classify_udf(
    model: str,
    target: str = DEFAULT_TARGET,
    top_k: int = 1,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT_S,
    token: str | None = None,
    root_certificates: bytes | None = None,
) -> Any:
    """A pandas UDF mapping a string column to a struct column of `model`'s answer.

    With `top_k=1` (default) the struct is `label string, score float`: the best label and its score. With any other
    `top_k` (0 for every label) it also has `labels array<string>` and `scores array<float>`, best first. A null or
    blank text gives null fields instead of failing the batch (the server refuses blank texts).

    `root_certificates` are PEM bytes rather than a path: the path would have to exist on every executor.
    """
    if top_k < 0:
        raise ValueError(f"top_k must be 0 (all labels) or positive, got {top_k}")
    options: dict[str, Any] = {
        "chunk_size": chunk_size,
        "max_concurrency": max_concurrency,
        "timeout": timeout,
        "token": token,
        "root_certificates": root_certificates,
    }
    ranked = top_k != 1

    # Runs on the executors: only `model`, `target`, `top_k`, `ranked` and `options` travel with it (no channel).
    def classify_batches(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        client = shared_client(target, **options)
        for texts in batches:
            yield classify_series(client, model, texts, top_k, ranked)

    return pandas_udf(classify_batches, RANKED_SCHEMA if ranked else TOP_SCHEMA)  # type: ignore[call-overload]


def classify_series(client: Any, model: str, texts: pd.Series, top_k: int, ranked: bool) -> pd.DataFrame:
    """Classify one Arrow batch; rows with a null or blank text get null fields."""
    valid = texts.map(lambda text: isinstance(text, str) and bool(text.strip())).astype(bool)
    results = client.classify(model, texts[valid].tolist(), top_k=top_k)
    # A text the server could not classify (no visible character) gets null fields too, like a blank one.
    tops = [r.top if r.ok else None for r in results]
    columns: dict[str, list[Any]] = {
        "label": [t.label if t else None for t in tops],
        "score": [t.score if t else None for t in tops],
    }
    if ranked:
        columns["labels"] = [[s.label for s in r.labels] for r in results]
        columns["scores"] = [[s.score for s in r.labels] for r in results]
    frame = pd.DataFrame(columns, index=texts.index[valid])
    # Rows without a text get None in every field (reindex would leave NaN, which Arrow reads as a float NaN).
    return frame.reindex(texts.index).astype(object).where(lambda f: f.notna(), None)
