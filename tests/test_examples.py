"""The examples against a real server: the FastAPI app through its TestClient, the Kafka loop on in-memory messages."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from ortserve.client import InferenceClient

from .helpers import RunningServer, running_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ortserve_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the app's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[object]:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    app = load_example("fastapi_app").create_app(target=server.target, model="roberta", chunk_size=16)
    with TestClient(app) as client:  # entering runs the lifespan, which makes the ortserve client
        yield client


def test_fastapi_app_answers_in_order_like_the_client(http: object, server: RunningServer) -> None:
    texts = [f"Shares of company {i} rallied" if i % 2 else f"Rain delayed match {i}" for i in range(40)]
    response = http.post("/classify", json={"texts": texts, "top_k": 2})  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    body = response.json()
    with InferenceClient(server.target, chunk_size=16) as client:
        expected = client.classify("roberta", texts, top_k=2)
    assert body["model"] == "roberta" and body["model_version"] == expected[0].model_version
    assert [[s["label"] for s in r] for r in body["results"]] == [[s.label for s in e.labels] for e in expected]
    assert http.get("/healthz").json()["model"] == "roberta"  # type: ignore[attr-defined]


def test_fastapi_app_maps_ortserve_errors_to_http(http: object) -> None:
    blank = http.post("/classify", json={"texts": ["fine", "  "]})  # type: ignore[attr-defined]
    assert blank.status_code == 422 and blank.json()["detail"].startswith("texts[1]: the text is empty")
    empty = http.post("/classify", json={"texts": []})  # type: ignore[attr-defined]
    assert empty.status_code == 422  # refused by the API's own validation, before ortserve


def test_fastapi_app_reports_an_unreachable_server_as_503() -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ortserve.client import RetryPolicy

    app = load_example("fastapi_app").create_app(
        target="127.0.0.1:1", model="m", timeout=2, retry=RetryPolicy(max_attempts=2)
    )
    with TestClient(app) as client:
        assert client.post("/classify", json={"texts": ["a"]}).status_code == 503
        assert client.get("/healthz").status_code == 503


@dataclass
class FakeMessage:
    """Stands in for confluent_kafka.Message (no broker here): the methods the loop calls."""

    payload: bytes | None
    id: int
    failed: bool = False

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes:
        return f"k{self.id}".encode()

    def error(self) -> str | None:
        return "broker error" if self.failed else None


def test_kafka_loop_classifies_in_order_and_commits_after_each_batch(server: RunningServer) -> None:
    kafka = load_example("kafka_consumer")
    words = ["markets", "rain", "vote", "goal", "orbit"]
    messages = [FakeMessage(f"{words[i % 5]} headline {i}".encode(), i) for i in range(120)]
    messages[7] = FakeMessage(b"", 7)
    messages[50] = FakeMessage(b"\xff\xfe not utf-8", 50)
    messages[99] = FakeMessage(b"fine text", 99, failed=True)
    batches = [messages[i : i + 50] for i in range(0, len(messages), 50)] + [[]]  # [] is a poll that timed out
    emitted: list[dict[str, object]] = []
    commits: list[int] = []
    with InferenceClient(server.target, chunk_size=16) as client:
        handled = kafka.consume(batches, client, "roberta", emitted.append, lambda: commits.append(len(emitted)))
        expected = client.classify("roberta", [m.payload.decode() for m in messages if m.id not in (7, 50, 99)])
    assert handled == 120 and commits == [50, 100, 120]  # a commit follows each batch's results, never precedes
    assert [r["key"] for r in emitted] == [f"k{i}" for i in range(120)]
    assert [i for i, r in enumerate(emitted) if "skipped" in r] == [7, 50, 99]
    labels = [r["label"] for r in emitted if "skipped" not in r]
    assert labels == [e.top.label for e in expected]


def test_kafka_loop_skips_and_dead_letters_poison_messages_then_commits(artifacts: dict[str, Path]) -> None:
    """A message the server cannot classify (nothing visible; too large for a request even alone) is skipped with a
    log line and sent to the dead-letter callback; the batch is still committed, so the partition moves on."""
    kafka = load_example("kafka_consumer")
    poison = {3: "\u200b\u200b".encode(), 5: ("rain " * 700).encode()}  # 3,500 characters > max_request_chars
    messages = [FakeMessage(poison.get(i, f"headline number {i}".encode()), i) for i in range(8)]
    messages[6] = FakeMessage(("long story " * 100).encode(), 6)  # over max_text_chars: cut, not refused
    emitted: list[dict[str, object]] = []
    dead: list[tuple[int, str]] = []
    commits: list[int] = []
    with running_server(models=[f"bert={artifacts['bert']}"], max_text_chars=500, max_request_chars=3000) as server:
        with InferenceClient(server.target) as client:
            handled = kafka.consume(
                [messages[:4], messages[4:]],
                client,
                "bert",
                emitted.append,
                lambda: commits.append(len(emitted)),
                lambda message, reason: dead.append((message.id, reason)),
            )
    assert handled == 8 and commits == [4, 8]
    assert [r["key"] for r in emitted] == [f"k{i}" for i in range(8)]
    assert [i for i, r in enumerate(emitted) if "skipped" in r] == [3, 5]
    assert [i for i, _ in dead] == [3, 5]
    assert "no visible character" in dead[0][1] and "max_request_chars" in dead[1][1]
    assert emitted[6]["truncated"] is True and all("label" in emitted[i] for i in (0, 1, 2, 4, 6, 7))
