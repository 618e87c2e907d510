"""A drain that loses nothing: `ortserve serve` as real processes, SIGTERM with calls in flight, rolling restarts."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ortserve.client import InferenceClient, InferenceError
from ortserve.server.healthcheck import wait_until_serving
from ortserve.v2 import grpc_predict_v2_pb2 as pb_v2
from ortserve.v2 import grpc_predict_v2_pb2_grpc as pb_v2_grpc

from .helpers import free_port, serve_command
from .observability_helpers import scrape

WAIT_S = 60  # generous bound for "this happens", never a performance claim


@contextmanager
def server_process(artifact: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen(
        serve_command(port, "--model", f"bert={artifact}", *args),
        stderr=subprocess.PIPE,
        text=True,
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, process)
        yield process, target
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def _health(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _v2_ready(target: str) -> tuple[bool, bool]:
    """Open Inference Protocol readiness: (ServerReady, ModelReady of the served model)."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_v2_grpc.GRPCInferenceServiceStub(channel)
        server = stub.ServerReady(pb_v2.ServerReadyRequest(), timeout=5).ready
        model = stub.ModelReady(pb_v2.ModelReadyRequest(name="bert"), timeout=5).ready
    return server, model


def _calls_in_flight(metrics_port: int) -> float:
    """The server's `ortserve_calls_in_flight` of the model: calls handed to its batcher and not yet answered."""
    match = re.search(r'^ortserve_calls_in_flight\{model="bert"\} (\S+)$', scrape(metrics_port), re.MULTILINE)
    return float(match[1]) if match else 0.0


class Outcomes:
    """Outcomes of calls made in threads: "ok" or the status name, with the details of refusals."""

    def __init__(self) -> None:
        self.codes: list[str] = []
        self.details: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def call(self, target: str, texts: Sequence[str], retry: bool = False) -> threading.Thread:
        def run() -> None:
            options = {} if retry else {"retry": None}
            with InferenceClient(target, timeout=WAIT_S, **options) as client:  # type: ignore[arg-type]
                try:
                    client.classify("bert", list(texts))
                    code, detail = "ok", ""
                except InferenceError as exc:
                    code, detail = exc.code.name, exc.details
            with self._lock:
                self.codes.append(code)
                self.details.append(detail)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def join(self) -> None:
        for thread in self._threads:
            thread.join(WAIT_S)


def test_sigterm_drains_answers_every_call_in_flight_then_refuses_with_unavailable(artifacts: dict[str, Path]) -> None:
    # A long batch delay with a batch size above 50 keeps the 50 calls queued (in flight) across the signal.
    metrics_port = free_port()
    with server_process(
        artifacts["bert"],
        "--metrics-port",
        str(metrics_port),
        "--max-batch-delay-ms",
        "8000",
        "--max-batch-size",
        "128",
        "--drain-period-s",
        "1.5",
        "--grace-period-s",
        "20",
    ) as (process, target):
        assert _v2_ready(target) == (True, True)
        in_flight = Outcomes()
        for i in range(50):
            in_flight.call(target, [f"call number {i} in flight"])
        # The signal comes once all 50 calls are in the server's hands: a call still on its way when the port closes
        # is refused (UNAVAILABLE, which clients retry elsewhere), and only accepted calls must be answered.
        end = time.monotonic() + WAIT_S
        while _calls_in_flight(metrics_port) < 50:
            assert time.monotonic() < end, "the 50 calls never all reached the server"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        end = time.monotonic() + WAIT_S
        while _health(target) != "NOT_SERVING":
            assert time.monotonic() < end, "health never turned NOT_SERVING"
        ready_during_drain = _v2_ready(target)  # KServe probes V2 readiness: it must agree with gRPC health
        during_drain = Outcomes()
        during_drain.call(target, ["a new call while draining"])  # answered: load balancers still send
        later = Outcomes()
        while process.poll() is None and time.monotonic() < end and "UNAVAILABLE" not in later.codes:
            later.call(target, ["a new call after the drain"])
            time.sleep(0.1)
        exit_code = process.wait(WAIT_S)
        in_flight.join()
        during_drain.join()
        later.join()
        stderr = process.stderr.read() if process.stderr else ""

    assert exit_code == 0, stderr
    assert in_flight.codes == ["ok"] * 50  # 0 CANCELLED: every accepted call was answered
    assert during_drain.codes == ["ok"]
    assert ready_during_drain == (False, False)
    assert set(later.codes) <= {"ok", "UNAVAILABLE"}, later.codes
    assert "UNAVAILABLE" in later.codes  # refused while the 50 calls were still being answered
    assert "stopped" in stderr


@pytest.mark.slow  # two server processes, one restarted under traffic
def test_a_rolling_restart_of_one_of_two_replicas_fails_no_call(artifacts: dict[str, Path]) -> None:
    args = ("--drain-period-s", "0.5", "--grace-period-s", "10")
    with (
        server_process(artifacts["bert"], *args) as (first, first_target),
        server_process(artifacts["bert"], *args) as (second, second_target),
    ):
        both = f"ipv4:{first_target},{second_target}"
        codes: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def caller() -> None:
            with InferenceClient(both, timeout=WAIT_S) as client:  # round-robin and retries of UNAVAILABLE
                while not stop.is_set():
                    try:
                        client.classify("bert", ["a steady stream of calls"])
                        code = "ok"
                    except InferenceError as exc:
                        code = exc.code.name
                    with lock:
                        codes.append(code)

        threads = [threading.Thread(target=caller, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # calls flow to both replicas (setup only)
        first.send_signal(signal.SIGTERM)
        assert first.wait(WAIT_S) == 0
        with lock:
            at_stop = len(codes)
        time.sleep(0.5)  # calls go on against the remaining replica
        stop.set()
        for thread in threads:
            thread.join(WAIT_S)
        assert second.poll() is None

    assert len(codes) > at_stop > 0
    assert set(codes) == {"ok"}, {code: codes.count(code) for code in set(codes)}
