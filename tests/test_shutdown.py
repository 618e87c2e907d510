"""`ortserve serve` as a real process: SIGTERM during a stream of calls finishes every accepted call."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ortserve.client import InferenceClient, InferenceError
from ortserve.server.healthcheck import wait_until_serving

from .helpers import ORTSERVE, free_port, serve_command


@pytest.mark.slow  # a server process; the fast lane drains one in test_drain
def test_sigterm_finishes_in_flight_calls(artifacts: dict[str, Path]) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    # A batch delay keeps every call in flight for ~300 ms, so SIGTERM surely lands while calls are running.
    process = subprocess.Popen(
        serve_command(
            port,
            "--model",
            f"bert={artifacts['bert']}",
            "--max-batch-delay-ms",
            "300",
            "--grace-period-s",
            "10",
            "--drain-period-s",
            "0",
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    outcomes: list[tuple[float, str]] = []  # (call start time, "ok" or status name)
    lock = threading.Lock()
    stop = threading.Event()

    def caller() -> None:
        with InferenceClient(target, timeout=15) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    client.classify("bert", ["a steady stream of calls"])
                    outcome = "ok"
                except InferenceError as exc:
                    outcome = exc.code.name
                with lock:
                    outcomes.append((started, outcome))
                if outcome != "ok":
                    return

    try:
        wait_until_serving(target, process)
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        sigterm_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(30)
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.communicate()[1]

    assert exit_code == 0, stderr
    in_flight = [outcome for started, outcome in outcomes if started < sigterm_at - 0.05]
    assert len(in_flight) >= 8
    assert set(in_flight) == {"ok"}, outcomes
    # Calls after shutdown began are refused cleanly (UNAVAILABLE), never answered with an internal error.
    assert {outcome for _, outcome in outcomes} <= {"ok", "UNAVAILABLE"}
    assert "stopped" in stderr


def test_serve_without_models_exits_with_a_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORTSERVE_")}
    result = subprocess.run([ORTSERVE, "serve"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "no models to serve" in result.stderr and "Traceback" not in result.stderr


def test_serve_rejects_a_bad_model_spec() -> None:
    result = subprocess.run(
        [ORTSERVE, "serve", "--model", "no-equals-sign"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "must look like NAME=URI" in result.stderr and "Traceback" not in result.stderr


def test_models_from_environment(artifacts: dict[str, Path]) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ORTSERVE_MODELS": f"bert={artifacts['bert']};roberta={artifacts['roberta']}",
        "ORTSERVE_PORT": str(port),
        "ORTSERVE_HOST": "127.0.0.1",
    }
    process = subprocess.Popen([ORTSERVE, "serve"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(f"127.0.0.1:{port}", process)
        with InferenceClient(f"127.0.0.1:{port}") as client:
            assert [m.name for m in client.list_models()] == ["bert", "roberta"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
