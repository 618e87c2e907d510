"""A Kafka consumer loop that classifies each message through ortserve and publishes the result.

    python examples/kafka_consumer.py --bootstrap-servers broker:9092 --topic news --output-topic news-topics \
        --group topic-classifier --model topic --target dns:///ortserve:50051

Messages are classified a batch at a time (one `classify` call per batch: the client splits it into concurrent
requests), results are produced in message order, and offsets are committed only after a batch's results are
handed on: at-least-once, so a crash re-reads the batch instead of losing it. A message with no usable text goes
out as a skipped record instead of stopping the loop. If ortserve fails after the client's retries, the loop stops
without committing, and a restart resumes from the last committed batch.

The loop takes any iterable of message batches, so it runs (and is tested) without a broker; `main` wires it to
confluent-kafka (`pip install confluent-kafka`), which this repository does not install.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ortserve.client import InferenceClient, default_target


class Message(Protocol):
    """What the loop needs of a message; confluent_kafka.Message has these methods."""

    def value(self) -> bytes | str | None: ...
    def key(self) -> bytes | str | None: ...
    def error(self) -> Any: ...


Record = dict[str, Any]


def message_text(message: Message) -> str | None:
    """The text of a message, or None when there is nothing to classify (error, empty, not UTF-8)."""
    if message.error():
        return None
    value = message.value()
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if value and value.strip() else None


def classify_batch(messages: Sequence[Message], client: InferenceClient, model: str) -> list[Record]:
    """One output record per message, in order: the best label, or `skipped` for messages without text."""
    texts = [message_text(m) for m in messages]
    valid = [t for t in texts if t is not None]
    answers = iter(client.classify(model, valid, top_k=1))
    records = []
    for message, text in zip(messages, texts, strict=True):
        key = message.key()
        key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if text is None:
            records.append({"key": key, "skipped": "no text (empty, not UTF-8, or a consumer error)"})
            continue
        answer = next(answers)
        records.append(
            {
                "key": key,
                "label": answer.top.label,
                "score": answer.top.score,
                "model": model,
                "model_version": answer.model_version,
            }
        )
    return records


def consume(
    batches: Iterable[Sequence[Message]],
    client: InferenceClient,
    model: str,
    emit: Callable[[Record], None],
    commit: Callable[[], None],
) -> int:
    """Classify every batch, `emit` its records in order, then `commit`; return the number of messages handled."""
    handled = 0
    for batch in batches:
        if not batch:  # a poll that timed out
            continue
        for record in classify_batch(batch, client, model):
            emit(record)
        commit()
        handled += len(batch)
    return handled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--model", default=os.environ.get("ORTSERVE_MODEL", "topic"))
    parser.add_argument("--target", default=default_target())
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    try:
        from confluent_kafka import Consumer, Producer
    except ImportError:
        parser.error("this example needs confluent-kafka: pip install confluent-kafka")
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": args.bootstrap_servers})
    consumer.subscribe([args.topic])

    def emit(record: Record) -> None:
        producer.produce(args.output_topic, key=record.get("key"), value=json.dumps(record).encode())

    def commit() -> None:
        producer.flush()  # results are out before their offsets are committed
        consumer.commit(asynchronous=False)

    # consume() returns [] on timeout, never a sentinel: the loop runs until interrupted.
    batches = iter(lambda: consumer.consume(num_messages=args.batch_size, timeout=1.0), None)
    try:
        with InferenceClient(args.target) as client:
            consume(batches, client, args.model, emit, commit)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
