"""A canary key picks the same side through every door: gRPC metadata and the `x-ortserve-canary-key` header of V2
REST, MLflow's `/invocations` and the native JSON route; every HTTP answer names its version in
`x-ortserve-model-version` (the only place an `/invocations` caller can read it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import httpx

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import running_server

KEYS = [f"article-{i}" for i in range(24)]


def challenger_copy(champion: Path, directory: Path) -> Path:
    """The champion's files under another version (the manifest's `version`), so the two sides can be told apart."""
    shutil.copytree(champion, directory)
    manifest_path = directory / "ortserve.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = "challenger-2"
    manifest_path.write_text(json.dumps(manifest))
    return directory


def test_a_canary_key_gets_one_side_through_every_door(artifacts: dict[str, Path], tmp_path: Path) -> None:
    challenger = challenger_copy(artifacts["bert"], tmp_path / "challenger")
    spec = f"sentiment={artifacts['bert']}?challenger={challenger}&canary=0.5"
    with running_server(models=[spec], http_port=0) as server:
        assert server.server is not None
        base = f"http://127.0.0.1:{server.server.http_port}"
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            by_key = {
                key: stub.Classify(
                    pb.ClassifyRequest(model="sentiment", texts=["steady"]),
                    timeout=30,
                    metadata=[("x-ortserve-canary-key", key)],
                ).model_version
                for key in KEYS
            }
        assert set(by_key.values()) == {"challenger-2", artifacts_version(artifacts["bert"])}  # both sides get keys

        v2_body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["steady"]}]}
        doors = {
            "/v2/models/sentiment/infer": v2_body,
            "/invocations": {"inputs": ["steady"]},
            "/models/sentiment/invocations": {"inputs": ["steady"]},
            "/ortserve.v1.Inference/Classify": {"model": "sentiment", "texts": ["steady"]},
        }
        with httpx.Client(base_url=base, timeout=30) as client:
            for path, body in doors.items():
                for key, version in by_key.items():
                    response = client.post(path, json=body, headers={"x-ortserve-canary-key": key})
                    assert response.status_code == 200, (path, response.text)
                    assert response.headers["x-ortserve-model-version"] == version, (path, key)
                    if "modelVersion" in response.json() or "model_version" in response.json():
                        answer = response.json()
                        assert answer.get("model_version", answer.get("modelVersion")) == version, (path, key)
            # An answer that ran no model carries no version header.
            assert "x-ortserve-model-version" not in client.get("/v2/health/ready").headers


def artifacts_version(directory: Path) -> str:
    return str(json.loads((directory / "ortserve.json").read_text())["version"])
