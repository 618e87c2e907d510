"""The gRPC API against a real server on an ephemeral port: answers, parity, limits and error codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixtures.tiny_onnx import reference_probabilities
from ortserve.client import InferenceClient, InferenceError
from ortserve.server.runtime import OnnxClassifier
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import RunningServer, running_server

TEXTS = [
    "the market rallied today",
    "Terrible service, the food was cold and the staff was rude.",
    "What a wonderful day for a walk in the park! " * 3,
    "x",
]


@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta", "multilabel"])
def test_scores_equal_onnxruntime_and_the_reference(
    server: RunningServer, artifacts: dict[str, Path], name: str
) -> None:
    with InferenceClient(server.target) as client:
        results = client.classify(name, TEXTS)
    classifier = OnnxClassifier.load(artifacts[name])
    labels = classifier.labels
    served = np.array([[r.as_dict()[label] for label in labels] for r in results])

    direct = classifier.probabilities(TEXTS)
    np.testing.assert_allclose(served, direct, atol=1e-6)

    reference = reference_probabilities(artifacts[name], TEXTS)  # NumPy, one text at a time, no padding
    np.testing.assert_allclose(served, reference, atol=1e-5)
    assert (served.argmax(axis=1) == reference.argmax(axis=1)).all()
    _assert_ranked(results, multi_label=name == "multilabel")


@pytest.mark.parametrize(
    ("name", "text", "label"),
    [
        ("bert", "I love this product, it works great and arrived early.", "positive"),
        ("bert", "Terrible service, the food was cold and the staff was rude.", "negative"),
        ("roberta", "Markets rallied as inflation cooled faster than expected.", "business"),
        ("roberta", "Heavy rain is expected across the region this weekend.", "weather"),
        ("multilabel", "The striker scored twice in the second half.", "sports"),
    ],
)
def test_the_tiny_models_answer_their_keywords(server: RunningServer, name: str, text: str, label: str) -> None:
    with InferenceClient(server.target) as client:
        (result,) = client.classify(name, [text])
    assert result.top.label == label


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta", "multilabel"])
def test_exported_scores_equal_onnxruntime_and_match_pytorch(
    exported_artifacts: dict[str, Path], model_dirs: dict[str, Path], name: str
) -> None:
    from transformers import AutoModelForSequenceClassification

    from ortserve.export.huggingface import inspect_model_dir
    from ortserve.export.parity import torch_probabilities

    with (
        running_server(models=[f"{name}={exported_artifacts[name]}"]) as exported,
        InferenceClient(exported.target) as client,
    ):
        results = client.classify(name, TEXTS)
    classifier = OnnxClassifier.load(exported_artifacts[name])
    served = np.array([[r.as_dict()[label] for label in classifier.labels] for r in results])
    np.testing.assert_allclose(served, classifier.probabilities(TEXTS), atol=1e-6)

    hf = inspect_model_dir(model_dirs[name])
    model = AutoModelForSequenceClassification.from_pretrained(model_dirs[name]).eval()
    reference = torch_probabilities(model, hf.tokenizer, TEXTS, hf.max_length, hf.multi_label)
    np.testing.assert_allclose(served, reference, atol=1e-4)
    assert (served.argmax(axis=1) == reference.argmax(axis=1)).all()
    _assert_ranked(results, multi_label=name == "multilabel")


def _assert_ranked(results: list[Any], multi_label: bool) -> None:
    for result in results:
        scores = [s.score for s in result.labels]
        assert scores == sorted(scores, reverse=True)
        if not multi_label:
            assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def test_multilabel_scores_are_independent_sigmoids(server: RunningServer) -> None:
    with InferenceClient(server.target) as client:
        (result,) = client.classify("multilabel", ["Markets rallied as inflation cooled."])
    scores = [s.score for s in result.labels]
    assert all(0.0 < s < 1.0 for s in scores)
    assert sum(scores) != pytest.approx(1.0, abs=1e-3)


def test_top_k_and_response_fields(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        response = stub.Classify(pb.ClassifyRequest(model="roberta", texts=["a", "b c"], top_k=2), timeout=10)
        full = stub.Classify(pb.ClassifyRequest(model="roberta", texts=["a"], top_k=0), timeout=10)
        over = stub.Classify(pb.ClassifyRequest(model="roberta", texts=["a"], top_k=99), timeout=10)
    assert response.model == "roberta"
    assert response.model_version.startswith("sha256-")
    assert [len(r.labels) for r in response.results] == [2, 2]
    assert len(full.results[0].labels) == 5 == len(over.results[0].labels)
    assert full.results[0].labels[0].label == response.results[0].labels[0].label


def test_long_text_is_truncated_not_rejected(server: RunningServer) -> None:
    long_text = "stocks " * 70  # under max_text_chars=500 but over the model's 128 tokens
    with InferenceClient(server.target) as client:
        (result,) = client.classify("bert", [long_text])
    assert len(result.labels) == 3


@pytest.mark.parametrize(
    ("model", "texts", "code", "fragment"),
    [
        ("nope", ["hello"], grpc.StatusCode.NOT_FOUND, "no model named 'nope'"),
        ("bert", [], grpc.StatusCode.INVALID_ARGUMENT, "texts is empty"),
        ("bert", ["t"] * 17, grpc.StatusCode.INVALID_ARGUMENT, "max_texts_per_request=16"),
    ],
)
def test_bad_requests_get_their_status(
    server: RunningServer, model: str, texts: list[str], code: grpc.StatusCode, fragment: str
) -> None:
    with grpc.insecure_channel(server.target) as channel:  # the raw stub: the client may split or skip requests
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.InferenceStub(channel).Classify(pb.ClassifyRequest(model=model, texts=texts), timeout=10)
    assert caught.value.code() == code
    assert fragment in caught.value.details()


def test_list_and_get_models(server: RunningServer, artifacts: dict[str, Path]) -> None:
    with InferenceClient(server.target) as client:
        models = client.list_models()
        info = client.get_model("multilabel")
        with pytest.raises(InferenceError) as caught:
            client.get_model("missing")
    assert [m.name for m in models] == ["bert", "distilbert", "roberta", "multilabel"]
    assert all(m.state == "serving" for m in models)
    assert info.multi_label and info.labels == ("business", "politics", "science", "sports", "weather")
    assert info.source_uri == f"local:{artifacts['multilabel'].name}"  # never the absolute directory
    assert info.max_length == 128 and info.loaded_at.endswith("Z") and info.version.startswith("sha256-")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_health_for_server_and_each_model(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ["", "ortserve.v1.Inference", "bert", "multilabel"]:
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="unknown-model"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_client_rejects_a_bare_string(server: RunningServer) -> None:
    with InferenceClient(server.target) as client, pytest.raises(TypeError):
        client.classify("bert", "one text")  # type: ignore[arg-type]


def test_container_health_probe(server: RunningServer) -> None:
    import subprocess
    import sys

    probe = [sys.executable, "-m", "ortserve.server.healthcheck", "--target", server.target]
    ok = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    missing = subprocess.run([*probe, "--service", "missing"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
