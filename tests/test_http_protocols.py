"""The HTTP port's three protocols against a real server (gRPC and HTTP on ephemeral ports, one process): the Open
Inference Protocol REST routes, MLflow's scoring protocol and ortserve.v1 as JSON, each answering exactly what the
same call answers over gRPC."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import RunningServer, running_server

TEXTS = ["the market rallied today", "Terrible service, the food was cold.", "x"]


@pytest.fixture(scope="module")
def http_server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(
        models=[f"{name}={artifacts[name]}" for name in ("bert", "roberta", "multilabel")],
        http_port=0,
        http_default_model="bert",
        max_texts_per_request=16,
        max_text_chars=500,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http(http_server: RunningServer) -> Iterator[httpx.Client]:
    assert http_server.server is not None
    with httpx.Client(base_url=f"http://127.0.0.1:{http_server.server.http_port}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def grpc_stub(http_server: RunningServer) -> Iterator[pb_grpc.InferenceStub]:
    with grpc.insecure_channel(http_server.target) as channel:
        yield pb_grpc.InferenceStub(channel)


def grpc_classify(stub: pb_grpc.InferenceStub, model: str, texts: list[str], top_k: int = 0) -> pb.ClassifyResponse:
    response: pb.ClassifyResponse = stub.Classify(pb.ClassifyRequest(model=model, texts=texts, top_k=top_k))
    return response


# --- Open Inference Protocol -----------------------------------------------------------------------------------------


def test_v2_server_routes(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    ready = http.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    metadata = http.get("/v2").json()
    assert metadata["name"] == "ortserve" and metadata["extensions"] == ["model_configuration", "statistics"]


def test_v2_model_metadata_and_ready(http: httpx.Client, grpc_stub: pb_grpc.InferenceStub) -> None:
    version = grpc_stub.GetModel(pb.GetModelRequest(name="roberta")).version
    metadata = http.get("/v2/models/roberta").json()
    assert metadata["name"] == "roberta" and metadata["versions"] == [version]
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [output["name"] for output in metadata["outputs"]] == [
        "probabilities",
        "labels",
        "top_labels",
        "top_scores",
        "truncated",
        "errors",
        "windows",
    ]
    assert http.get(f"/v2/models/roberta/versions/{version}").json() == metadata
    assert http.get("/v2/models/roberta/ready").json() == {"name": "roberta", "ready": True}
    assert http.get(f"/v2/models/roberta/versions/{version}/ready").status_code == 200
    assert http.get("/v2/models/roberta/versions/999/ready").status_code == 503
    missing = http.get("/v2/models/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert http.get("/v2/models/roberta/versions/999").status_code == 404


def v2_body(texts: list[str], **extra: object) -> dict[str, object]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}


def test_v2_infer_answers_as_classify(http: httpx.Client, grpc_stub: pb_grpc.InferenceStub) -> None:
    response = http.post("/v2/models/roberta/infer", json=v2_body(TEXTS, id="call-1", parameters={"top_k": 2}))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = grpc_classify(grpc_stub, "roberta", TEXTS)
    assert body["model_name"] == "roberta" and body["model_version"] == expected.model_version
    assert body["id"] == "call-1"
    outputs = {output["name"]: output for output in body["outputs"]}
    labels = outputs["labels"]["data"]
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    for row, result in zip(probabilities, expected.results, strict=True):
        for score in result.labels:
            assert row[labels.index(score.label)] == pytest.approx(score.score, abs=1e-6)
    assert outputs["top_labels"]["shape"] == [3, 2]
    assert outputs["top_labels"]["data"][:2] == [score.label for score in expected.results[0].labels[:2]]


def test_v2_infer_nested_data_versions_and_chosen_outputs(http: httpx.Client) -> None:
    version = http.get("/v2/models/bert").json()["versions"][0]
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [["good"], ["bad"]]}],
        "outputs": [{"name": "top_scores"}],
    }
    response = http.post(f"/v2/models/bert/versions/{version}/infer", json=body)
    assert response.status_code == 200, response.text
    assert [output["name"] for output in response.json()["outputs"]] == ["top_scores"]


def test_v2_binary_tensor_extension(http: httpx.Client) -> None:
    """Triton's binary data extension, as tritonclient.http sends it by default."""
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in TEXTS)
    header = json.dumps(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "labels"}],
        }
    ).encode()
    response = http.post(
        "/v2/models/roberta/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    probabilities = answer["outputs"][0]
    assert "data" not in probabilities
    values = np.frombuffer(response.content[length:], "<f4").reshape(probabilities["shape"])
    assert values.shape == (3, len(answer["outputs"][1]["data"]))
    assert np.allclose(values.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"inputs": "text"},
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["one"]}]},
        {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        {"inputs": [{"name": "other", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}], "outputs": [{"name": "x"}]},
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}], "parameters": {"top_k": "1"}},
    ],
)
def test_v2_bad_requests_are_400_with_an_error(http: httpx.Client, body: dict[str, object]) -> None:
    response = http.post("/v2/models/bert/infer", json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and response.json()["error"]


def test_v2_unknown_model_is_404_and_not_json_is_400(http: httpx.Client) -> None:
    assert http.post("/v2/models/nope/infer", json=v2_body(["a"])).status_code == 404
    assert http.post("/v2/models/bert/infer", content=b"{not json").status_code == 400
    assert http.get("/v2/models/bert/infer").status_code == 405
    assert http.get("/no/such/route").status_code == 404


# --- MLflow scoring protocol ---------------------------------------------------------------------------------------


def expected_predictions(stub: pb_grpc.InferenceStub, model: str, texts: list[str]) -> list[dict[str, object]]:
    response = grpc_classify(stub, model, texts, top_k=1)
    return [{"label": r.labels[0].label, "score": pytest.approx(r.labels[0].score, abs=1e-6)} for r in response.results]


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": TEXTS},
        {"instances": TEXTS},
        {"inputs": {"text": TEXTS}},
        {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
        {"dataframe_split": {"data": [[t] for t in TEXTS]}},
        {"dataframe_records": [{"text": t} for t in TEXTS]},
        {"inputs": TEXTS, "params": {"anything": 1}},
    ],
)
def test_mlflow_invocations_accept_every_json_format(
    http: httpx.Client, grpc_stub: pb_grpc.InferenceStub, body: dict[str, object]
) -> None:
    response = http.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected_predictions(grpc_stub, "bert", TEXTS)}


def test_mlflow_csv_single_text_and_model_routes(http: httpx.Client, grpc_stub: pb_grpc.InferenceStub) -> None:
    csv_body = "text\n" + "".join(f'"{t}"\n' for t in TEXTS)
    response = http.post("/models/roberta/invocations", content=csv_body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected_predictions(grpc_stub, "roberta", TEXTS)}
    single = http.post("/models/roberta/invocations", json={"inputs": TEXTS[0]})
    assert single.json() == {"predictions": expected_predictions(grpc_stub, "roberta", TEXTS[:1])}
    for path in ("/ping", "/health", "/models/roberta/ping", "/models/multilabel/health"):
        answer = http.get(path)
        assert answer.status_code == 200 and answer.text == "\n", path
    assert http.get("/version").text == http.get("/models/roberta/version").text != ""
    assert http.get("/models/nope/ping").status_code == 404


@pytest.mark.parametrize(
    "content, content_type",
    [
        (b'{"inputs": ["a"], "instances": ["b"]}', "application/json"),
        (b'{"data": ["a"]}', "application/json"),
        (b'["a"]', "application/json"),
        (b"{oops", "application/json"),
        (b'{"inputs": [1, 2]}', "application/json"),
        (b'{"inputs": ["a"], "params": 3}', "application/json"),
        (b'{"dataframe_split": {"columns": ["a", "b"], "data": [["x", "y"]]}}', "application/json"),
        (b"text\n\xff\xfe\n", "text/csv"),
    ],
)
def test_mlflow_bad_bodies_are_400_with_mlflow_error_json(
    http: httpx.Client, content: bytes, content_type: str
) -> None:
    response = http.post("/invocations", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "BAD_REQUEST" and body["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/json; charset=latin-1", ""])
def test_mlflow_unsupported_content_types_are_415_in_plain_text(http: httpx.Client, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post("/invocations", content=b'{"inputs": ["a"]}', headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"].startswith("text/plain")


# --- ortserve.v1 as JSON -------------------------------------------------------------------------------------------


def test_native_classify_is_the_grpc_answer_in_json(http: httpx.Client, grpc_stub: pb_grpc.InferenceStub) -> None:
    response = http.post("/ortserve.v1.Inference/Classify", json={"model": "roberta", "texts": TEXTS, "topK": 2})
    assert response.status_code == 200, response.text
    expected = json_format.MessageToDict(grpc_classify(grpc_stub, "roberta", TEXTS, top_k=2))
    assert response.json() == expected
    snake = http.post("/ortserve.v1.Inference/Classify", json={"model": "roberta", "texts": TEXTS, "top_k": 2})
    assert snake.json() == expected


def test_native_list_and_get_model(http: httpx.Client, grpc_stub: pb_grpc.InferenceStub) -> None:
    listed = http.post("/ortserve.v1.Inference/ListModels", json={}).json()
    assert [model["name"] for model in listed["models"]] == ["bert", "roberta", "multilabel"]
    got = http.post("/ortserve.v1.Inference/GetModel", json={"name": "bert"}).json()
    assert got == json_format.MessageToDict(grpc_stub.GetModel(pb.GetModelRequest(name="bert")))


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        ("Classify", {"model": "nope", "texts": ["a"]}, 404, "NOT_FOUND"),
        ("Classify", {"model": "bert", "texts": []}, 400, "INVALID_ARGUMENT"),
        ("Classify", {"model": "bert", "texts": "a"}, 400, "INVALID_ARGUMENT"),
        ("Classify", {"model": "bert", "texts": ["a"], "bogus": 1}, 400, "INVALID_ARGUMENT"),
        ("Classify", {"model": "bert", "texts": ["a"], "topK": -1}, 400, "INVALID_ARGUMENT"),
        ("GetModel", {"name": "nope"}, 404, "NOT_FOUND"),
    ],
)
def test_native_errors_carry_the_grpc_status_name(
    http: httpx.Client, path: str, body: dict[str, object], status: int, code: str
) -> None:
    response = http.post(f"/ortserve.v1.Inference/{path}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["message"]


def test_a_model_that_failed_to_load_is_503_without_internals(artifacts: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifacts["bert"], broken)
    (broken / "model.onnx").write_bytes(b"\x08\x07 not a graph")
    with running_server(models=[f"broken={broken}"], http_port=0) as server:
        assert server.server is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server.http_port}") as client:
            answers = [
                client.post(
                    "/v2/models/broken/infer",
                    json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
                ),
                client.post("/invocations", json={"inputs": ["a"]}),
                client.post("/ortserve.v1.Inference/Classify", json={"model": "broken", "texts": ["a"]}),
                client.get("/v2/models/broken/ready"),
                client.get("/v2/health/ready"),
                client.get("/ping"),
            ]
            assert [answer.status_code for answer in answers] == [503] * 6
            assert answers[1].json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert answers[2].json()["code"] == "UNAVAILABLE"
            described = client.post("/ortserve.v1.Inference/GetModel", json={"name": "broken"}).json()
            for text in [answer.text for answer in answers] + [described["lastError"]]:
                assert str(tmp_path) not in text and "/tmp" not in text and "Traceback" not in text
