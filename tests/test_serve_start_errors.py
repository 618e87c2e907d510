"""What cannot work stops `ortserve serve` at start with one line naming the problem and the fix: a port in use
(exit 1), a `--model` that no wait can heal (exit 2). Each runs the real CLI in its own process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .helpers import running_server, serve_command

START_TIMEOUT_S = 60


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
