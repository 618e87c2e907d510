"""A password in the tracking URI never reaches a caller or the log (issue 9), with the registry down and no cache."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc
import pytest

from ortserve.client import InferenceClient, InferenceError

from .helpers import free_port, running_server

SECRET = "s3cr3tPW"


def test_password_in_tracking_uri_reaches_no_message_and_no_log_line(
    artifacts: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tracking_uri = f"http://alice:{SECRET}@127.0.0.1:{free_port()}"  # nothing listens there: the registry is down
    with running_server(
        models=[f"ok={artifacts['bert']}", "m=models:/topic-onnx@production"],
        tracking_uri=tracking_uri,
        cache_dir=tmp_path / "cache",
        poll_interval=0.2,
        registry_timeout_s=1,
    ) as server:
        with InferenceClient(server.target, timeout=30) as client:
            with pytest.raises(InferenceError) as caught:
                client.classify("m", ["hello"])
            info = client.get_model("m")
            models = client.list_models()
            time.sleep(1.0)  # a few failed polls, each logged
    seen = [caught.value.details, info.last_error, info.note, info.source_uri]
    seen += [f"{m.source_uri} {m.last_error} {m.note}" for m in models]
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.state == "failed" and "registry unreachable" in info.last_error  # the failure itself is reported
    assert not [text for text in seen if SECRET in text or "127.0.0.1" in text], seen
    assert "registry unreachable" in caplog.text  # the log has the failure, with its detail...
    assert SECRET not in caplog.text  # ...but never the password
    assert not [r for r in caplog.records if SECRET in repr(r.args) or SECRET in str(r.msg)]
