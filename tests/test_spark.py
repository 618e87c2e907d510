"""`classify_udf` in a real local Spark session (`local[2]`): answers equal direct client calls, in row order."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

pytest.importorskip("pyspark", reason="the [spark] extra is not installed")
pytestmark = pytest.mark.slow  # starts a JVM and Spark workers

import pandas as pd  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql.functions import pandas_udf  # noqa: E402

from ortserve.client import InferenceClient  # noqa: E402
from ortserve.client.spark import classify_udf  # noqa: E402

from .helpers import RunningServer  # noqa: E402

WORDS = ["markets", "rain", "election", "goal", "telescope", "inflation", "storm", "vote", "match", "orbit"]
TEXTS = [f"{WORDS[i % 10]} story {i}: {WORDS[(i * 3) % 10]} and {WORDS[(i * 7) % 10]}" for i in range(1000)]


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """One local Spark session for the whole run (it takes several seconds to start)."""
    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers must run this venv, where ortserve is installed
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep Spark's own traffic on loopback
    session = (
        SparkSession.builder.master("local[2]")
        .appName("ortserve-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        # Small Arrow batches, so each Python worker runs several batches through its one channel.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def test_udf_on_1000_texts_equals_direct_client_calls(spark: SparkSession, server: RunningServer) -> None:
    frame = spark.createDataFrame([(i, text) for i, text in enumerate(TEXTS)], "id long, text string").repartition(2)
    roberta = classify_udf("roberta", target=server.target, chunk_size=16)
    rows = frame.select("id", roberta("text").alias("topic")).select("id", "topic.label", "topic.score").collect()
    assert len(rows) == 1000
    with InferenceClient(server.target, chunk_size=16) as client:
        expected = client.classify("roberta", TEXTS, top_k=1)
    by_id = {row["id"]: row for row in rows}
    for i, want in enumerate(expected):
        assert by_id[i]["label"] == want.top.label, TEXTS[i]
        assert by_id[i]["score"] == pytest.approx(want.top.score, abs=1e-5)  # Spark stores a float32


def test_ranked_udf_and_rows_without_text(spark: SparkSession, server: RunningServer) -> None:
    texts = ["Shares rallied after a strong quarter.", None, "   ", "Heavy rain cancelled the match."]
    frame = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string")
    ranked = classify_udf("bert", target=server.target, top_k=0, chunk_size=16)
    rows = {r["id"]: r["s"] for r in frame.select("id", ranked("text").alias("s")).collect()}
    with InferenceClient(server.target) as client:
        direct = client.classify("bert", [texts[0], texts[3]])
    for i, want in zip((0, 3), direct, strict=True):
        assert rows[i]["labels"] == [s.label for s in want.labels]
        assert rows[i]["scores"] == pytest.approx([s.score for s in want.labels], abs=1e-5)
        assert (rows[i]["label"], rows[i]["score"]) == (want.top.label, pytest.approx(want.top.score, abs=1e-5))
    for i in (1, 2):  # null and blank texts give null fields, and do not fail the batch
        assert rows[i]["label"] is None and rows[i]["labels"] is None


def test_each_python_worker_reuses_one_client(spark: SparkSession, server: RunningServer) -> None:
    """The UDF's channel comes from `shared_client`: one per worker process, whatever the number of batches."""
    target = server.target

    @pandas_udf("string")  # type: ignore[call-overload]
    def client_of_batch(texts: pd.Series) -> pd.Series:
        from ortserve.client.shared import shared_client

        return pd.Series([f"{os.getpid()}:{id(shared_client(target, chunk_size=16))}"] * len(texts))

    frame = spark.createDataFrame([(t,) for t in TEXTS], "text string").repartition(2)
    seen = {row[0] for row in frame.select(client_of_batch("text")).collect()}
    clients_per_pid: dict[str, set[str]] = {}
    for entry in seen:
        pid, client = entry.split(":")
        clients_per_pid.setdefault(pid, set()).add(client)
    assert all(len(clients) == 1 for clients in clients_per_pid.values()), clients_per_pid
