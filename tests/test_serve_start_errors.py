"""What cannot work stops `ortserve serve` at start with one line naming the problem and the fix: a port in use
(exit 1), a `--model` that no wait can heal (exit 2). Each runs the real CLI in its own process. And `make demo` on a
port in use stops before it touches anything."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .helpers import running_server, serve_command

START_TIMEOUT_S = 60
ROOT = Path(__file__).resolve().parent.parent


def run_serve(
    port: int, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command(port, *args),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        cwd=cwd,
        env=env,
    )


def ortserve_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ortserve serve:")]


def test_a_second_server_on_a_port_in_use_exits_naming_the_port(artifacts: dict[str, Path]) -> None:
    with running_server(models=[f"bert={artifacts['bert']}"]) as first:
        second = run_serve(first.port, "--model", f"bert={artifacts['bert']}", "--drain-period-s", "0")
        # the first server still answers alone
        assert first.server.service.all_serving()
    assert second.returncode == 1, second.stderr
    (line,) = second.stderr.splitlines()  # one line, gRPC core's own included
    assert line.startswith("ortserve serve: ")
    assert f"port {first.port}" in line and "in use" in line and "--port" in line
    assert "Traceback" not in second.stderr


@pytest.mark.parametrize("flag", ["--http-port", "--metrics-port"])
def test_an_http_or_metrics_port_in_use_exits_naming_the_port_and_flag(artifacts: dict[str, Path], flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_serve(0, "--model", f"bert={artifacts['bert']}", "--http-port", "0", flag, str(port))
    assert run.returncode == 1, run.stderr
    (line,) = run.stderr.splitlines()  # nothing announced before: every port is bound first
    assert line.startswith("ortserve serve: ") and f"port {port}" in line and "in use" in line
    assert f"pass {flag} with a free port" in line


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:topic-onnx@production", "is malformed; use models:/NAME@ALIAS"),
        ("models:/topic-onnx", "is malformed; use models:/NAME@ALIAS"),
        ("modles:/topic-onnx@production", "scheme 'modles'"),
        ("s3://bucket/topic", "scheme 's3'"),
        ("./no-such-artifact-dir", "model directory ./no-such-artifact-dir does not exist"),
    ],
)
def test_a_model_that_cannot_heal_stops_the_start_with_exit_2(tmp_path: Path, uri: str, expected: str) -> None:
    run = run_serve(0, "--model", f"topic={uri}", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    (line,) = ortserve_lines(run.stderr)
    assert expected in line
    assert "Traceback" not in run.stderr


def test_a_registry_model_without_a_tracking_uri_names_both_ways_and_creates_nothing(tmp_path: Path) -> None:
    env = {
        key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "ORTSERVE_TRACKING_URI")
    }
    run = run_serve(0, "--model", "topic=models:/topic-onnx@production", cwd=tmp_path, env=env)
    assert run.returncode == 2, run.stderr
    (line,) = ortserve_lines(run.stderr)
    assert "--tracking-uri" in line and "MLFLOW_TRACKING_URI" in line
    assert list(tmp_path.iterdir()) == []  # no ./mlflow.db, no ./mlruns


def test_make_demo_on_a_port_in_use_stops_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` while `make demo-server` runs: refused at once, naming the port and the fix, before the demo wipes
    its registry and cache (under the running server) and trains or exports for minutes."""
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    work = tmp_path / "demo-work"
    (work / "cache").mkdir(parents=True)
    (work / "mlflow.db").write_text("the running server's registry")
    monkeypatch.setattr(demo, "WORK", work)  # never the checkout's own demo-work, should the check ever fail
    monkeypatch.setattr(demo, "train", lambda: pytest.fail("the demo went on past a port in use"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setattr(sys, "argv", ["demo.py", "--port", str(port)])
        with pytest.raises(SystemExit) as stopped:
            demo.main()
    message = str(stopped.value.code)
    assert f"port {port}" in message and "make demo-server" in message and f"DEMO_PORT={port + 1}" in message
    assert (work / "mlflow.db").read_text() == "the running server's registry" and (work / "cache").is_dir()


def test_the_start_log_names_the_registry_without_its_credentials(tmp_path: Path) -> None:
    """A model "not found in the registry" is looked for in a registry the log names (the tracking URI in force,
    user-info cut), so that a URI set in another shell or a wrong database is seen at once."""
    command = serve_command(0, "--model", "topic=models:/topic-onnx@production", "--drain-period-s", "0")
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:9"}  # nothing listens on port 9
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    watchdog = threading.Timer(START_TIMEOUT_S, server.terminate)  # ends the read below if the line never comes
    watchdog.start()
    try:
        assert server.stderr is not None
        lines = []
        for line in server.stderr:  # the line comes right after "listening on", before any model loads
            lines.append(line)
            if "MLflow registry at" in line or len(lines) > 20:
                break
    finally:
        watchdog.cancel()
        server.terminate()
        server.wait(START_TIMEOUT_S)
    (named,) = [line for line in lines if "MLflow registry at" in line]
    assert "http://***@127.0.0.1:9 (MLFLOW_TRACKING_URI)" in named and "s3cret" not in "".join(lines)
