"""The Prometheus endpoint: what it exposes after real calls, that promtool accepts it and the shipped alert rules,
and that label values stay bounded."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ortserve.server.errors import OrtServeError
from ortserve.server.settings import ServerSettings

from .helpers import RunningServer, running_server
from .observability_helpers import OBSERVABILITY_DIR, classify, prometheus_binary, scrape

UNKNOWN = "no-such-model-3f9a"


@pytest.fixture(scope="module")
def metrics_server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    with running_server(models=[f"bert={artifacts['bert']}"], metrics_port=0) as running:
        yield running


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _wait_for(port: int, name: str, expected: float, **labels: str) -> dict:  # type: ignore[type-arg]
    """Scrape until `name{labels}` reaches `expected`: an aborted call is counted just after its status is sent."""
    for _ in range(100):
        samples = _samples(scrape(port))
        if samples.get((name, frozenset(labels.items()))) == expected:
            return samples
        time.sleep(0.05)
    raise AssertionError(f"{name}{labels} never reached {expected}: {samples.get((name, frozenset(labels.items())))}")


def test_calls_are_counted_by_model_rpc_and_code_with_stage_histograms(metrics_server: RunningServer) -> None:
    assert metrics_server.server is not None and metrics_server.server.metrics_endpoint is not None
    port = metrics_server.server.metrics_endpoint.port
    texts = ["the first text", "a second, somewhat longer text to pad the batch"]
    for _ in range(3):
        assert classify(metrics_server.target, "bert", texts) is grpc.StatusCode.OK
    assert classify(metrics_server.target, UNKNOWN, ["x"]) is grpc.StatusCode.NOT_FOUND
    assert classify(metrics_server.target, "bert", []) is grpc.StatusCode.INVALID_ARGUMENT
    samples = _wait_for(
        port, "ortserve_requests_total", 1, model="bert", protocol="grpc", rpc="Classify", code="INVALID_ARGUMENT"
    )
    assert _value(samples, "ortserve_requests_total", model="bert", protocol="grpc", rpc="Classify", code="OK") == 3
    assert (
        _value(samples, "ortserve_requests_total", model="_unknown", protocol="grpc", rpc="Classify", code="NOT_FOUND")
        == 1
    )
    assert (
        _value(samples, "ortserve_request_duration_seconds_count", model="bert", protocol="grpc", rpc="Classify") == 4
    )
    # Every OK call went through one batch: one queue wait each; the batches carried exactly the texts sent.
    assert _value(samples, "ortserve_queue_wait_seconds_count", model="bert") == 3
    assert _value(samples, "ortserve_batch_size_texts_sum", model="bert") == 6
    batches = _value(samples, "ortserve_batch_size_texts_count", model="bert")
    assert 1 <= batches <= 3
    assert _value(samples, "ortserve_tokenization_duration_seconds_count", model="bert") == batches
    assert _value(samples, "ortserve_inference_duration_seconds_sum", model="bert") > 0
    assert _value(samples, "ortserve_tokenization_duration_seconds_sum", model="bert") > 0
    assert _value(samples, "ortserve_batch_padded_tokens_sum", model="bert") >= 6
    served = metrics_server.server.table.get("bert")
    assert served.current is not None
    assert _value(samples, "ortserve_model_version_info", model="bert", version=served.current.version) == 1
    assert _value(samples, "ortserve_model_state", model="bert", state="serving") == 1
    assert _value(samples, "ortserve_model_state", model="bert", state="failed") == 0
    assert _value(samples, "ortserve_model_loaded_timestamp_seconds", model="bert") == pytest.approx(
        served.current.loaded_at.timestamp()
    )
    assert _value(samples, "ortserve_queue_texts", model="bert") == 0
    assert _value(samples, "ortserve_calls_in_flight", model="bert") == 0
    assert _value(samples, "ortserve_model_failed_updates_total", model="bert") == 0
    assert _value(samples, "process_resident_memory_bytes") > 0


def test_unknown_model_names_create_no_series(metrics_server: RunningServer) -> None:
    assert metrics_server.server is not None and metrics_server.server.metrics_endpoint is not None
    for index in range(5):
        classify(metrics_server.target, f"{UNKNOWN}-{index}", ["x"])
        classify(metrics_server.target, f"{UNKNOWN}-{index}", [])
    text = scrape(metrics_server.server.metrics_endpoint.port)
    assert UNKNOWN not in text
    models = {labels for (_, labels) in _samples(text)}
    assert {value for labels in models for key, value in labels if key == "model"} <= {"bert", "_unknown", "_none"}


def test_promtool_accepts_the_exposition(metrics_server: RunningServer) -> None:
    promtool = prometheus_binary("promtool")
    assert metrics_server.server is not None and metrics_server.server.metrics_endpoint is not None
    classify(metrics_server.target, "bert", ["lint me"])
    text = scrape(metrics_server.server.metrics_endpoint.port)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_alert_rules_and_prometheus_config_pass_promtool() -> None:
    promtool = prometheus_binary("promtool")
    for command in (
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts_test.yml"],  # each alert fires on the series it is meant for
    ):
        result = subprocess.run([promtool, *command], cwd=OBSERVABILITY_DIR, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(command)}:\n{result.stdout}{result.stderr}"


def test_metrics_are_off_unless_a_port_is_set(server: RunningServer) -> None:
    assert ServerSettings().metrics_port is None
    assert server.server is not None
    assert server.server.metrics is None and server.server.metrics_endpoint is None


def test_a_taken_metrics_port_is_a_clear_start_error(artifacts: dict[str, Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        running = RunningServer(
            ServerSettings(
                models=[f"bert={artifacts['bert']}"], host="127.0.0.1", port=0, metrics_port=port, drain_period_s=0
            )
        )
        try:
            with pytest.raises(
                OrtServeError, match=f"cannot serve metrics on port {port} of 127.0.0.1: it is in use.*--metrics-port"
            ):
                running.start()
        finally:
            running.stop()
