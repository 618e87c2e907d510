"""Helpers of the observability tests: promtool/prometheus binaries, reading /metrics, calling a server."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

OBSERVABILITY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "observability"
MISSING_PROMETHEUS = (
    "{} is not installed: `make test` installs Debian's `prometheus` package (which brings promtool) where apt-get "
    "is usable; run `apt-get install -y prometheus`"
)


def prometheus_binary(name: str) -> str:
    """Path of `prometheus` or `promtool`, or skip the test saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(MISSING_PROMETHEUS.format(name))
    return path


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def classify(target: str, model: str, texts: Sequence[str], request_id: str | None = None) -> grpc.StatusCode:
    """One Classify call; its status code (OK or the error)."""
    metadata = [("x-request-id", request_id)] if request_id else None
    with grpc.insecure_channel(target) as channel:
        try:
            pb_grpc.InferenceStub(channel).Classify(
                pb.ClassifyRequest(model=model, texts=list(texts)), metadata=metadata, timeout=30
            )
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK
