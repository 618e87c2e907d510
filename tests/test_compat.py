"""The drop-in `predict_topic` / `predict_sentiment` against a real server serving `topic` and `sentiment`."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from fixtures.tiny_models import SENTIMENT_LABELS, TOPIC_LABELS
from ortserve.client import InferenceClient, InferenceError
from ortserve.client.compat import predict_sentiment, predict_topic
from ortserve.client.shared import close_shared_clients

from .helpers import RunningServer, running_server

TEXTS = ["Shares rallied after a strong quarter.", "The match was cancelled because of heavy rain.", "ok"]


@pytest.fixture(scope="module")
def compat_server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    """Models under the default names the compat functions use."""
    with running_server(models=[f"topic={artifacts['roberta']}", f"sentiment={artifacts['bert']}"]) as running:
        yield running


@pytest.fixture(autouse=True)
def target(compat_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ORTSERVE_TARGET", compat_server.target)
    for name in ("ORTSERVE_TOPIC_MODEL", "ORTSERVE_SENTIMENT_MODEL", "ORTSERVE_TOKEN", "ORTSERVE_ROOT_CERTIFICATES"):
        monkeypatch.delenv(name, raising=False)
    yield compat_server.target
    close_shared_clients()


def test_predict_topic_has_the_callers_shape(compat_server: RunningServer) -> None:
    result = predict_topic(TEXTS[0])
    assert set(result) == {"predictions", "model_version"}
    predictions = result["predictions"]
    assert [set(p) for p in predictions] == [{"topic", "confidence"}] * len(TOPIC_LABELS)
    assert {p["topic"] for p in predictions} == set(TOPIC_LABELS)
    confidences = [p["confidence"] for p in predictions]
    assert all(isinstance(c, float) for c in confidences) and confidences == sorted(confidences, reverse=True)
    assert sum(confidences) == pytest.approx(1.0, abs=1e-5)
    with InferenceClient(compat_server.target) as client:
        (direct,) = client.classify("topic", [TEXTS[0]])
    assert predictions[0] == {"topic": direct.top.label, "confidence": direct.top.score}
    assert len(predict_topic(TEXTS[0], top_k=2)["predictions"]) == 2


def test_predict_sentiment_has_the_callers_shape(compat_server: RunningServer) -> None:
    result = predict_sentiment(TEXTS[1])
    assert set(result) == set(SENTIMENT_LABELS) == {"positive", "neutral", "negative"}
    assert all(isinstance(score, float) for score in result.values())
    assert sum(result.values()) == pytest.approx(1.0, abs=1e-5)
    with InferenceClient(compat_server.target) as client:
        (direct,) = client.classify("sentiment", [TEXTS[1]])
    assert result == direct.as_dict()


def test_lists_return_lists_in_order() -> None:
    topics, sentiments = predict_topic(TEXTS), predict_sentiment(TEXTS)
    assert topics == [predict_topic(t) for t in TEXTS]
    assert all(s == pytest.approx(predict_sentiment(t), abs=1e-6) for s, t in zip(sentiments, TEXTS, strict=True))
    assert predict_topic([]) == [] and predict_sentiment([]) == []


def test_concurrent_threads_share_one_client_and_get_their_own_answers() -> None:
    texts = [f"{TEXTS[i % 3]} #{i}" for i in range(64)]
    expected = predict_sentiment(texts)
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(predict_sentiment, texts))
    for one, want in zip(got, expected, strict=True):
        assert one == pytest.approx(want, abs=1e-5)


def test_model_names_and_target_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    monkeypatch.setenv("ORTSERVE_SENTIMENT_MODEL", "topic")  # any served model: the keys follow its labels
    assert set(predict_sentiment("hello")) == set(TOPIC_LABELS)
    monkeypatch.setenv("ORTSERVE_TOPIC_MODEL", "missing")
    with pytest.raises(InferenceError) as failure:
        predict_topic("hello")
    assert failure.value.code is grpc.StatusCode.NOT_FOUND
