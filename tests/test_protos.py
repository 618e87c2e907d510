"""The committed Python stubs are what `make protos` generates from the .proto files today."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "protos" / "ortserve" / "v1"


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], check=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [str(p) for p in fresh] == [
        "ortserve/v1/inference_pb2.py",
        "ortserve/v1/inference_pb2.pyi",
        "ortserve/v1/inference_pb2_grpc.py",
        "ortserve/v2/grpc_predict_v2_pb2.py",
        "ortserve/v2/grpc_predict_v2_pb2.pyi",
        "ortserve/v2/grpc_predict_v2_pb2_grpc.py",
    ]
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, ROOT / "protos" / p, shallow=False)]
    assert not stale, f"stale generated stubs {stale}: run `make protos` and commit the result"


def test_every_message_and_field_is_commented() -> None:
    lines = (GENERATED / "inference.proto").read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        declares = stripped.startswith(("message ", "enum ", "rpc ", "service ")) or (
            stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "syntax", "//"))
        )
        if declares:
            assert lines[index - 1].strip().startswith("//"), f"line {index + 1} has no comment: {stripped}"


def test_v2_proto_keeps_the_open_inference_protocol_wire_contract() -> None:
    """The V2 service is KServe's: package `inference`, service `GRPCInferenceService`, its rpcs and field numbers."""
    from ortserve.v2 import grpc_predict_v2_pb2 as v2

    assert (ROOT / "protos" / "ortserve" / "v2" / "NOTICE").read_text().count("Apache License, Version 2.0") == 2
    service = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        # Triton's extensions that tritonclient calls, with Triton's names and numbers
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
    ]
    triton_fields = {
        v2.ModelConfig: {"name": 1, "platform": 2, "max_batch_size": 4, "input": 5, "output": 6},
        v2.ModelStatistics: {"name": 1, "version": 2, "last_inference": 3, "inference_count": 4, "execution_count": 5},
        v2.InferStatistics: {"success": 1, "fail": 2, "queue": 3, "compute_input": 4, "compute_infer": 5},
        v2.RepositoryIndexResponse.ModelIndex: {"name": 1, "version": 2, "state": 3, "reason": 4},
    }
    for message, numbers in triton_fields.items():
        declared = {f.name: f.number for f in message.DESCRIPTOR.fields}
        assert {name: declared[name] for name in numbers} == numbers, message.DESCRIPTOR.name
    assert v2.TYPE_STRING == 13 and v2.TYPE_FP32 == 11 and v2.TYPE_BOOL == 1
    fields = {f.name: f.number for f in v2.ModelInferRequest.DESCRIPTOR.fields}
    assert fields == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    }
    assert {f.name: f.number for f in v2.InferTensorContents.DESCRIPTOR.fields}["bytes_contents"] == 8
