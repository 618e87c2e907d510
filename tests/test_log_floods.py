"""Log floods (issue 25): a client looping on a wrong token writes a bounded number of access log lines, gRPC and
HTTP alike, and one "suppressed N" line says how many were left out."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc
import httpx
import pytest

from ortserve.server.observability import logs
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import running_server

CALLS = 300


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ortserve.access"]


def test_the_access_log_of_a_wrong_token_loop_is_rate_limited(
    artifacts: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs.access_failures, "interval_s", 3600.0)  # the whole flood in one window, however slow
    for name, fresh in (("_window_start", -float("inf")), ("_lines", 0), ("_suppressed", 0)):  # earlier tests' calls
        monkeypatch.setattr(logs.access_failures, name, fresh)
    caplog.set_level(logging.INFO, logger="ortserve.access")
    tokens = tmp_path / "tokens"
    tokens.write_text("right-token\n")
    with running_server(
        models=[f"bert={artifacts['bert']}"], auth_token_file=tokens, log_format="json", http_port=0
    ) as server:
        wrong = [("authorization", "Bearer wrong-token")]
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            with httpx.Client(base_url=f"http://127.0.0.1:{server.server.http_port}") as http:
                for n in range(CALLS):
                    if n % 2:
                        assert http.get("/v2/models/bert", headers={"Authorization": "Bearer x"}).status_code == 401
                        continue
                    with pytest.raises(grpc.RpcError):
                        stub.ListModels(pb.ListModelsRequest(), metadata=wrong, timeout=10)
                flood = len(access_lines(caplog))
                monkeypatch.setattr(logs.access_failures, "interval_s", 0.5)
                time.sleep(1.0)  # the window closes: the next failure brings the count of those left out
                with pytest.raises(grpc.RpcError):
                    stub.ListModels(pb.ListModelsRequest(), metadata=wrong, timeout=10)
    assert 1 <= flood <= logs.ACCESS_LOG_LINES, flood  # not one line per call
    suppressed = [r.getMessage() for r in access_lines(caplog) if "suppressed" in r.getMessage()]
    assert any(f"suppressed {CALLS - flood} " in line for line in suppressed), suppressed
