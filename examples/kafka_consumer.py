"""A Kafka consumer loop that classifies each message through ortserve and publishes the result.

    python examples/kafka_consumer.py --bootstrap-servers broker:9092 --topic news --output-topic news-topics \
        --group topic-classifier --model topic --target dns:///ortserve:50051

Messages are classified a batch at a time (one `classify` call per batch: the client splits it into concurrent
requests), results are produced in message order, and offsets are committed only after a batch's results are
handed on: at-least-once, so a crash re-reads the batch instead of losing it.

No message can block the partition. A message with no usable text, one the server answers with a per-text error
(nothing visible to classify), or one the server refuses (a batch refused as INVALID_ARGUMENT is retried message by
message, so the refusal lands on the one that caused it) goes out as a `skipped` record with a log line, and to
`--dead-letter-topic` if given; then the batch is committed as usual. A long text is not refused: the server reads its
beginning and the record says `"truncated": true`. Only a failure of ortserve itself (UNAVAILABLE after the
client's retries, say) stops the loop without committing, and a restart resumes from the last committed batch.

The loop takes any iterable of message batches, so it runs (and is tested) without a broker; `main` wires it to
confluent-kafka (`pip install confluent-kafka`), which this repository does not install.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import grpc

from ortserve.client import Classification, InferenceClient, InferenceError, default_target

log = logging.getLogger("kafka_consumer")


class Message(Protocol):
    """What the loop needs of a message; confluent_kafka.Message has these methods."""

    def value(self) -> bytes | str | None: ...
    def key(self) -> bytes | str | None: ...
    def error(self) -> Any: ...


Record = dict[str, Any]
#: Where a message the server could not classify goes, with the reason (a dead-letter topic; default: nowhere).
DeadLetter = Callable[["Message", str], None]


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


def classify_texts(client: InferenceClient, model: str, texts: list[str]) -> list[Classification | str]:
    """The answer of each text, or why the server refused it. A batch refused as a whole for its input
    (INVALID_ARGUMENT) is asked again text by text, so that only the text at fault is refused."""
    try:
        return list(client.classify(model, texts, top_k=1))
    except InferenceError as exc:
        if exc.code is not grpc.StatusCode.INVALID_ARGUMENT:
            raise  # ortserve itself failed: stop without committing
        if len(texts) == 1:
            return [exc.details]
    return [answer for text in texts for answer in classify_texts(client, model, [text])]


def classify_batch(
    messages: Sequence[Message], client: InferenceClient, model: str, dead_letter: DeadLetter | None = None
) -> list[Record]:
    """One output record per message, in order: the best label, or `skipped` with the reason for messages without
    text or that the server could not classify (those also go to `dead_letter`)."""
    texts = [message_text(m) for m in messages]
    answers = iter(classify_texts(client, model, [t for t in texts if t is not None]))
    records: list[Record] = []
    for message, text in zip(messages, texts, strict=True):
        key = message.key()
        key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if text is None:
            records.append({"key": key, "skipped": "no text (empty, not UTF-8, or a consumer error)"})
            continue
        answer = next(answers)
        if isinstance(answer, str) or not answer.ok:
            reason = answer if isinstance(answer, str) else answer.error
            log.warning("message %s skipped: %s", key, reason)
            if dead_letter is not None:
                dead_letter(message, reason)
            records.append({"key": key, "skipped": reason})
            continue
        record: Record = {
            "key": key,
            "label": answer.top.label,
            "score": answer.top.score,
            "model": model,
            "model_version": answer.model_version,
        }
        if answer.truncated:
            record["truncated"] = True
        records.append(record)
    return records


def consume(
    batches: Iterable[Sequence[Message]],
    client: InferenceClient,
    model: str,
    emit: Callable[[Record], None],
    commit: Callable[[], None],
    dead_letter: DeadLetter | None = None,
) -> int:
    """Classify every batch, `emit` its records in order, then `commit`; return the number of messages handled."""
    handled = 0
    for batch in batches:
        if not batch:  # a poll that timed out
            continue
        for record in classify_batch(batch, client, model, dead_letter):
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
    parser.add_argument("--dead-letter-topic", help="topic for messages the server could not classify")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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

    def dead_letter(message: Message, reason: str) -> None:
        if args.dead_letter_topic:
            headers = [("ortserve-error", reason.encode())]
            producer.produce(args.dead_letter_topic, key=message.key(), value=message.value(), headers=headers)

    def commit() -> None:
        producer.flush()  # results are out before their offsets are committed
        consumer.commit(asynchronous=False)

    # consume() returns [] on timeout, never a sentinel: the loop runs until interrupted.
    batches = iter(lambda: consumer.consume(num_messages=args.batch_size, timeout=1.0), None)
    try:
        with InferenceClient(args.target) as client:
            consume(batches, client, args.model, emit, commit, dead_letter)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
