"""Structured logs: `ortserve serve --log-format json` writes one JSON object per line, and the lines about a call
carry its request id (the caller's `x-request-id`, else a generated one), model and version."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import grpc

from ortserve.server.healthcheck import wait_until_serving
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import free_port, serve_command
from .observability_helpers import classify


def test_json_log_lines_of_a_call_carry_request_id_model_and_version(artifacts: dict[str, Path]) -> None:
    port = free_port()
    command = serve_command(
        port,
        "--model",
        f"bert={artifacts['bert']}",
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
        "--drain-period-s",
        "0",  # no load balancer to wait for on SIGTERM
    )
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        target = f"127.0.0.1:{port}"
        wait_until_serving(target, process, timeout=120)
        with grpc.insecure_channel(target) as channel:
            version = pb_grpc.InferenceStub(channel).GetModel(pb.GetModelRequest(name="bert"), timeout=30).version
        assert classify(target, "bert", ["log this call"], request_id="req-log-1") is grpc.StatusCode.OK
        assert classify(target, "bert", [], request_id="req-log-2") is grpc.StatusCode.INVALID_ARGUMENT
        assert classify(target, "missing", ["x"]) is grpc.StatusCode.NOT_FOUND
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["message"].startswith("ortserve listening") and "request_id" not in line for line in lines)

    ok = [line for line in lines if line.get("request_id") == "req-log-1"]
    assert ok and all(line["model"] == "bert" and line["model_version"] == version for line in ok), ok
    assert any(line["logger"] == "ortserve.access" and "Classify OK" in line["message"] for line in ok)
    invalid = [line for line in lines if line.get("request_id") == "req-log-2"]
    assert invalid and invalid[0]["model"] == "bert" and "INVALID_ARGUMENT" in invalid[0]["message"]
    unknown = [line for line in lines if line.get("model") == "missing"]
    assert unknown and len(unknown[0]["request_id"]) == 32  # generated when the caller sends none
    assert "NOT_FOUND" in unknown[0]["message"]
