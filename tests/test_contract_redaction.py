"""A password in the tracking URI never reaches a caller or the log (issue 9), with the registry down and no cache;
whatever characters it holds, on both download paths: REST in the server, the MLflow client in the worker's child
(issue 25)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import quote

import grpc
import pytest

from ortserve.client import InferenceClient, InferenceError

from .helpers import free_port, running_server

#: Every printable ASCII character (quotes, backslash and space included), around a recognisable core.
SECRET = "s3cr3tPW" + "".join(chr(code) for code in range(0x20, 0x7F))
#: As a user writes it into the URI: RFC 3986's sub-delimiters (the quote ' among them) and the double quote as they
#: are, the rest percent-encoded (a '[' or a space as they are would make it no URI at all).
IN_URI = quote(SECRET, safe="!$&'()*+,;=\"")


def pieces(secret: str) -> set[str]:
    """Every 8 characters in a row of `secret`, as it is and as written in the URI: none may show anywhere."""
    return {form[i : i + 8] for form in (secret, IN_URI) for i in range(len(form) - 7)}


@pytest.mark.parametrize("path", ["rest", "worker"])
def test_password_in_tracking_uri_reaches_no_message_and_no_log_line(
    artifacts: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    if path == "worker":  # a setting only the MLflow client implements: the registry is asked from the child
        monkeypatch.setenv("MLFLOW_WORKSPACE", "redaction-test")
    caplog.set_level(logging.DEBUG)
    tracking_uri = f"http://alice:{IN_URI}@127.0.0.1:{free_port()}"  # nothing listens there: the registry is down
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
            deadline = time.monotonic() + 90  # the worker's child imports the MLflow client first
            while not info.last_error and time.monotonic() < deadline:
                time.sleep(0.2)
                info = client.get_model("m")
            models = client.list_models()
            time.sleep(1.0)  # a few failed polls, each logged
    seen = [caught.value.details, info.last_error, info.note, info.source_uri]
    seen += [f"{m.source_uri} {m.last_error} {m.note}" for m in models]
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.state != "serving" and "registry unreachable" in info.last_error  # the failure itself is reported
    secret_pieces = pieces(SECRET)
    assert not [text for text in seen if "127.0.0.1" in text or any(p in text for p in secret_pieces)], seen
    assert "registry" in caplog.text  # the log has the failure, with its detail...
    assert not [p for p in secret_pieces if p in caplog.text]  # ...but never the password, nor a piece of it
