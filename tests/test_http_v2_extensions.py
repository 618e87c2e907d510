"""Triton's REST extensions on the HTTP port, with plain HTTP: the repository index, model statistics and model config
answer what the same calls answer over gRPC (one builder for both doors), and go through the same token checks,
model scopes, error statuses and metrics as every other route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from ortserve.v2 import grpc_predict_v2_pb2 as pb
from ortserve.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

from .helpers import RunningServer, running_server
from .observability_helpers import scrape

INFER_BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["rates rose", "a goal"]}]}


@pytest.fixture(scope="module")
def server(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    broken = tmp_path_factory.mktemp("broken")  # exists, holds no artifact: FAILED, in the index as UNAVAILABLE
    with running_server(
        models=[f"bert={artifacts['bert']}", f"broken={broken}"],
        http_port=0,
        metrics_port=0,
        max_texts_per_request=16,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    assert server.server is not None
    with httpx.Client(base_url=f"http://127.0.0.1:{server.server.http_port}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def v2(server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def bert_version(v2: pb_grpc.GRPCInferenceServiceStub) -> str:
    version: str = v2.ModelMetadata(pb.ModelMetadataRequest(name="bert"), timeout=10).versions[0]
    return version


def test_server_metadata_claims_the_extensions(http: httpx.Client) -> None:
    assert {"model_configuration", "statistics"} <= set(http.get("/v2").json()["extensions"])


def test_repository_index_lists_every_model_with_its_state(
    http: httpx.Client, v2: pb_grpc.GRPCInferenceServiceStub
) -> None:
    empty_body = http.post("/v2/repository/index")  # what tritonclient sends
    assert empty_body.status_code == 200, empty_body.text
    index = {entry["name"]: entry for entry in empty_body.json()}
    assert index["bert"] == {"name": "bert", "version": bert_version(v2), "state": "READY", "reason": ""}
    assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]
    assert "/tmp" not in index["broken"]["reason"]  # caller-safe, as GetModel's last error
    assert [entry["name"] for entry in http.post("/v2/repository/index", json={"ready": True}).json()] == ["bert"]
    assert http.post("/v2/repository/index", json={"ready": False}).json() == empty_body.json()
    grpc_index = v2.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
    assert json_format.MessageToDict(grpc_index, preserving_proto_field_name=True)["models"] == [
        {key: value for key, value in entry.items() if value} for entry in empty_body.json()
    ]
    for bad in ({"ready": "yes"}, [1]):
        refused = http.post("/v2/repository/index", json=bad)
        assert refused.status_code == 400 and refused.json()["error"], bad


def test_statistics_count_calls_and_runs_as_over_grpc(
    http: httpx.Client, v2: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    before = http.get("/v2/models/bert/stats").json()["model_stats"][0]
    assert http.post("/v2/models/bert/infer", json=INFER_BODY).status_code == 200
    (stats,) = http.get("/v2/models/bert/stats").json()["model_stats"]
    assert stats["name"] == "bert" and stats["version"] == bert_version(v2)
    assert stats["inference_count"] == before["inference_count"] + 2  # numbers, as Triton's REST API sends them
    assert stats["execution_count"] == before["execution_count"] + 1
    success = stats["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 1 and success["ns"] > 0
    assert stats["last_inference"] > 0
    grpc_stats = v2.ModelStatistics(pb.ModelStatisticsRequest(name="bert"), timeout=10)
    assert json_format.ParseDict({"model_stats": [stats]}, pb.ModelStatisticsResponse()) == grpc_stats
    assert http.get(f"/v2/models/bert/versions/{stats['version']}/stats").json() == {"model_stats": [stats]}
    assert [s["name"] for s in http.get("/v2/models/stats").json()["model_stats"]] == ["bert", "broken"]

    other_version = http.get("/v2/models/bert/versions/999/stats")
    assert other_version.status_code == 404 and "999" in other_version.json()["error"]
    assert http.get("/v2/models/nope/stats").status_code == 404

    assert server.server is not None and server.server.metrics_endpoint is not None
    samples = {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(scrape(server.server.metrics_endpoint.port))
        for sample in family.samples
        if sample.name == "ortserve_requests_total"
    }
    counted = {"protocol": "http", "model": "bert", "rpc": "GET /v2/models/{name}/stats"}
    assert samples[frozenset({**counted, "code": "OK"}.items())] == 2  # before and after the call
    unknown = {**counted, "model": "_unknown", "code": "NOT_FOUND"}  # "nope": not a label value of its own
    assert samples[frozenset(unknown.items())] == 1


def test_config_is_grpcs_model_config_as_json(http: httpx.Client, v2: pb_grpc.GRPCInferenceServiceStub) -> None:
    response = http.get("/v2/models/bert/config")
    assert response.status_code == 200, response.text
    config = response.json()
    assert config["name"] == "bert" and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 16
    assert config["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [1]}]
    grpc_config = v2.ModelConfig(pb.ModelConfigRequest(name="bert"), timeout=10)
    assert json_format.ParseDict({"config": config}, pb.ModelConfigResponse()) == grpc_config
    version = bert_version(v2)
    assert http.get(f"/v2/models/bert/versions/{version}/config").json() == config
    for path in ("/v2/models/nope/config", "/v2/models/bert/versions/999/config"):
        missing = http.get(path)
        assert missing.status_code == 404 and missing.json()["error"], path
    assert http.post("/v2/models/bert/config").status_code == 405  # read-only


def test_tokens_and_model_scopes_apply(artifacts: dict[str, Path], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("every-model\nonly-roberta models=roberta\n")
    models = [f"bert={artifacts['bert']}", f"roberta={artifacts['roberta']}"]
    with running_server(models=models, http_port=0, auth_token_file=tokens) as server:
        assert server.server is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server.http_port}", timeout=30) as client:

            def get(path: str, token: str | None) -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return client.get(path, headers=headers).status_code

            for path in ("/v2/models/bert/stats", "/v2/models/bert/config"):
                assert (get(path, None), get(path, "every-model"), get(path, "only-roberta")) == (401, 200, 403)
            assert (get("/v2/models/roberta/config", "only-roberta"), get("/v2/models/stats", None)) == (200, 401)
            assert client.post("/v2/repository/index").status_code == 401
            assert client.post("/v2/repository/index", headers={"Authorization": "Bearer only-roberta"}).is_success
