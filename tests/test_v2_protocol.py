"""The Open Inference Protocol (inference.GRPCInferenceService) with the generated stubs: typed and raw contents,
metadata, health names, reflection, and the same answers and error statuses as ortserve.v1 Classify."""

from __future__ import annotations

import re
import struct

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ortserve.server.transport_v2 import decode_raw_bytes, encode_raw
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc
from ortserve.v2 import grpc_predict_v2_pb2 as v2
from ortserve.v2 import grpc_predict_v2_pb2_grpc as v2_grpc

from .helpers import RunningServer

TEXTS = ["the market rallied today", "Terrible service, the food was cold.", "x"]


def typed_request(
    model: str, texts: list[str], shape: list[int] | None = None, version: str = ""
) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=shape or [len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    return request


def raw_request(model: str, texts: list[str], shape: list[int] | None = None) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name="text", datatype="BYTES", shape=shape or [len(texts), 1])
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts))
    return request


def tensors(response: v2.ModelInferResponse) -> dict[str, np.ndarray]:
    """Output tensors by name, decoded from typed or raw contents."""
    decoded = {}
    for index, output in enumerate(response.outputs):
        if response.raw_output_contents:
            raw = response.raw_output_contents[index]
            if output.datatype == "BOOL":
                values = np.frombuffer(raw, np.bool_)
            else:
                values = np.frombuffer(raw, "<f4") if output.datatype == "FP32" else np.array(decode_raw_bytes(raw))
        elif output.datatype == "FP32":
            values = np.array(output.contents.fp32_contents, dtype=np.float32)
        elif output.datatype == "BOOL":
            values = np.array(output.contents.bool_contents, dtype=np.bool_)
        else:
            values = np.array(list(output.contents.bytes_contents))
        decoded[output.name] = values.reshape(list(output.shape))
    return decoded


@pytest.fixture(scope="module")
def stubs(server: RunningServer) -> tuple[v2_grpc.GRPCInferenceServiceStub, pb_grpc.InferenceStub]:
    channel = grpc.insecure_channel(server.target)
    return v2_grpc.GRPCInferenceServiceStub(channel), pb_grpc.InferenceStub(channel)


@pytest.mark.parametrize("build", [typed_request, raw_request], ids=["typed", "raw"])
@pytest.mark.parametrize("model", ["bert", "roberta", "multilabel"])
def test_model_infer_equals_classify(stubs, build, model: str) -> None:  # type: ignore[no-untyped-def]
    inference, classify = stubs
    request = build(model, TEXTS)
    request.parameters["top_k"].int64_param = 2
    request.id = "call-1"
    response = inference.ModelInfer(request, timeout=30)
    reference = classify.Classify(pb.ClassifyRequest(model=model, texts=TEXTS), timeout=30)
    info = classify.GetModel(pb.GetModelRequest(name=model), timeout=10)

    assert (response.model_name, response.model_version, response.id) == (model, reference.model_version, "call-1")
    assert bool(response.raw_output_contents) == (build is raw_request)
    assert all(not o.HasField("contents") for o in response.outputs) == (build is raw_request)
    out = tensors(response)
    labels = list(info.labels)
    assert [label.decode() for label in out["labels"]] == labels
    expected = np.array([[{s.label: s.score for s in r.labels}[label] for label in labels] for r in reference.results])
    assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (len(TEXTS), len(labels))
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-6)
    assert out["top_labels"].shape == out["top_scores"].shape == (len(TEXTS), 2)
    for row, result in enumerate(reference.results):
        assert [label.decode() for label in out["top_labels"][row]] == [s.label for s in result.labels[:2]]
        np.testing.assert_allclose(out["top_scores"][row], [s.score for s in result.labels[:2]], atol=1e-6)
    assert out["truncated"].tolist() == [False] * len(TEXTS) and out["errors"].tolist() == [b""] * len(TEXTS)


def test_requested_outputs_only_and_all_labels_without_top_k(stubs) -> None:  # type: ignore[no-untyped-def]
    inference, _ = stubs
    request = typed_request("roberta", ["a", "b c"], shape=[2, 1])
    request.outputs.add(name="top_scores")
    request.outputs.add(name="top_labels")
    response = inference.ModelInfer(request, timeout=30)
    assert [o.name for o in response.outputs] == ["top_scores", "top_labels"]
    out = tensors(response)
    assert out["top_labels"].shape == (2, 5)  # top_k absent = every label, as Classify's top_k=0
    assert (np.diff(out["top_scores"], axis=1) <= 0).all()


def test_metadata_and_readiness(stubs) -> None:  # type: ignore[no-untyped-def]
    inference, classify = stubs
    assert inference.ServerLive(v2.ServerLiveRequest(), timeout=10).live
    assert inference.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
    assert inference.ModelReady(v2.ModelReadyRequest(name="bert"), timeout=10).ready
    server = inference.ServerMetadata(v2.ServerMetadataRequest(), timeout=10)
    assert server.name == "ortserve" and server.version
    metadata = inference.ModelMetadata(v2.ModelMetadataRequest(name="roberta"), timeout=10)
    version = classify.GetModel(pb.GetModelRequest(name="roberta"), timeout=10).version
    assert metadata.name == "roberta" and list(metadata.versions) == [version]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("probabilities", "FP32", [-1, 5]),
        ("labels", "BYTES", [5]),
        ("top_labels", "BYTES", [-1, -1]),
        ("top_scores", "FP32", [-1, -1]),
        ("truncated", "BOOL", [-1]),
        ("errors", "BYTES", [-1]),
    ]
    assert inference.ModelReady(v2.ModelReadyRequest(name="bert", version="not-this-one"), timeout=10).ready is False


def test_v2_is_in_health_and_reflection(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    assert "inference.GRPCInferenceService" in {s.name for s in answer.list_services_response.service}


def _error(call, request) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    # Each answer ends in its own request id; the reason before it is what the two protocols must share.
    return caught.value.code(), re.sub(r" \(request id [0-9a-f]+\)$", "", caught.value.details())


def test_errors_map_to_the_statuses_of_classify(stubs) -> None:  # type: ignore[no-untyped-def]
    inference, classify = stubs
    infer = inference.ModelInfer
    code, details = _error(infer, typed_request("nope", ["a"]))
    assert (code, details) == _error(classify.Classify, pb.ClassifyRequest(model="nope", texts=["a"]))
    assert code is grpc.StatusCode.NOT_FOUND and "no model named 'nope'" in details

    wrong_type = v2.ModelInferRequest(model_name="bert")
    wrong_type.inputs.add(name="text", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    assert _error(infer, wrong_type)[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert "datatype 'FP32'; send BYTES" in _error(infer, wrong_type)[1]

    code, details = _error(infer, typed_request("bert", ["a", "b", "c", "d"], shape=[2, 2]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "shape [2, 2]" in details
    code, details = _error(infer, typed_request("bert", ["a", "b"], shape=[3]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "carries 2 elements" in details
    code, details = _error(infer, v2.ModelInferRequest(model_name="bert"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "expected one input tensor 'text'" in details

    # The service's own validation and limits, word for word as Classify reports them.
    for texts in [["a"] * 17]:
        expected = _error(classify.Classify, pb.ClassifyRequest(model="bert", texts=texts))
        assert _error(infer, typed_request("bert", texts)) == expected
        assert expected[0] is grpc.StatusCode.INVALID_ARGUMENT
    negative = typed_request("bert", ["a"])
    negative.parameters["top_k"].int64_param = -1
    # (Classify's top_k is unsigned, so only V2 can send a negative one: the service rejects it.)
    assert _error(infer, negative) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "top_k must be 0 (all labels) or positive, got -1",
    )

    not_utf8 = v2.ModelInferRequest(model_name="bert")
    not_utf8.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xff\xfe")
    assert _error(infer, not_utf8) == (grpc.StatusCode.INVALID_ARGUMENT, "text[0] is not valid UTF-8")
    truncated = raw_request("bert", ["hello"])
    truncated.raw_input_contents[0] = truncated.raw_input_contents[0][:-1]
    assert _error(infer, truncated)[0] is grpc.StatusCode.INVALID_ARGUMENT
    unknown_output = typed_request("bert", ["a"])
    unknown_output.outputs.add(name="logits")
    assert "unknown output 'logits'" in _error(infer, unknown_output)[1]
    other_version = typed_request("bert", ["a"], version="7")
    assert _error(infer, other_version)[0] is grpc.StatusCode.NOT_FOUND
    assert _error(inference.ModelMetadata, v2.ModelMetadataRequest(name="nope"))[0] is grpc.StatusCode.NOT_FOUND
    assert _error(inference.ModelReady, v2.ModelReadyRequest(name="nope"))[0] is grpc.StatusCode.NOT_FOUND


def test_raw_bytes_round_trip() -> None:
    elements = [b"", b"caf\xc3\xa9", b"x" * 300]
    assert decode_raw_bytes(encode_raw("BYTES", elements)) == elements
    assert np.frombuffer(encode_raw("FP32", [0.5, 0.25]), "<f4").tolist() == [0.5, 0.25]
