"""`--log-format json` means every stderr line is JSON, gRPC core's own lines included (a failed TLS handshake makes
gRPC core log `I... ssl_transport_security.cc ... Handshake failed`), and a start that fails says why in JSON."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .helpers import free_port, serve_command
from .security_helpers import TestPki


def json_lines(stderr: str) -> list[dict[str, object]]:
    lines = []
    for line in stderr.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a stderr line is not JSON: {line!r}")
    return lines


def wait_until_serving_tls(target: str, ca: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    credentials = grpc.ssl_channel_credentials(ca.read_bytes())
    deadline = time.monotonic() + timeout
    with grpc.secure_channel(target, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    pytest.fail("the TLS server did not become SERVING")


def test_grpc_core_lines_become_json_records(artifacts: dict[str, Path], tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    server = pki.issue("server")
    port = free_port()
    tls = ["--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key)]
    command = serve_command(port, "--model", f"bert={artifacts['bert']}", "--log-format", "json", *tls)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving_tls(f"127.0.0.1:{port}", pki.ca, process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plaintext:  # plaintext to a TLS port: handshake fails
            with pytest.raises(grpc.FutureTimeoutError):
                grpc.channel_ready_future(plaintext).result(timeout=3)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    lines = json_lines(stderr)
    handshakes = [line for line in lines if "Handshake failed" in str(line["message"])]
    assert handshakes and all(line["logger"] == "grpc.core" for line in handshakes)
    assert any(str(line["message"]).startswith("ortserve listening") for line in lines)


def test_a_failed_start_reports_in_json(tmp_path: Path) -> None:
    run = subprocess.run(
        serve_command(0, "--model", f"m={tmp_path / 'missing'}", "--log-format", "json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    (line,) = json_lines(run.stderr)
    assert line["level"] == "ERROR" and "does not exist" in str(line["message"])


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_failed_tls_handshakes_are_rate_limited(artifacts: dict[str, Path], tmp_path: Path, log_format: str) -> None:
    from ortserve.server.observability.logs import CORE_LINES_PER_SOURCE

    pki = TestPki(tmp_path)
    server = pki.issue("server")
    port = free_port()
    tls = ["--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key)]
    command = serve_command(port, "--model", f"bert={artifacts['bert']}", "--log-format", log_format, *tls)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    attempts = 4 * CORE_LINES_PER_SOURCE
    try:
        wait_until_serving_tls(f"127.0.0.1:{port}", pki.ca, process)
        for _ in range(attempts):  # not TLS: each connection fails its handshake at once
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                with contextlib.suppress(OSError):
                    conn.recv(1024)
        time.sleep(11)  # the window closes: the next core line says how many were suppressed
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plaintext, pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(plaintext).result(timeout=2)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    handshakes = [line for line in stderr.splitlines() if "Handshake failed" in line]
    suppressed = [line for line in stderr.splitlines() if "suppressed" in line]
    # Not one per connection: at most CORE_LINES_PER_SOURCE per 10 s window (two windows if the loop was slow).
    assert 1 <= len(handshakes) <= 2 * CORE_LINES_PER_SOURCE + 2 < attempts, len(handshakes)
    assert suppressed, stderr[-2000:]
