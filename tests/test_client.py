"""`InferenceClient` against a real server: chunking, order, errors, the public API, and what the channel is made of."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from ortserve.client import InferenceClient, InferenceError
from ortserve.client.channel import ChannelConfig, RetryPolicy, channel_options, normalize_target, service_config

from .helpers import RunningServer, running_server

#: The `server` fixture accepts at most 16 texts per request.
CHUNK = 16
DISTINCT = [f"{word} number {i} in the news today" for i, word in enumerate(["markets", "rain", "goal", "vote"] * 10)]


def test_ten_thousand_texts_come_back_complete_and_in_order(server: RunningServer) -> None:
    with InferenceClient(server.target, chunk_size=CHUNK) as client:
        reference = {text: client.classify("bert", [text])[0] for text in DISTINCT}
        # Index i holds DISTINCT[(i * 7) % 40]: any shuffle, loss or duplication of a chunk changes some result.
        texts = [DISTINCT[(i * 7) % len(DISTINCT)] for i in range(10_000)]
        results = client.classify("bert", texts, timeout=30)
    assert len(results) == 10_000
    for text, result in zip(texts, results, strict=True):
        expected = reference[text]
        assert [s.label for s in result.labels] == [s.label for s in expected.labels]
        assert [s.score for s in result.labels] == pytest.approx([s.score for s in expected.labels], abs=1e-5)


def test_public_api_keeps_working(server: RunningServer) -> None:
    with InferenceClient(server.target) as client:
        (result,) = client.classify("roberta", ["Shares rallied after a strong quarter."], top_k=2, timeout=5)
        assert len(result.labels) == 2 and result.top == result.labels[0]
        assert {m.name for m in client.list_models()} == {"bert", "distilbert", "roberta", "multilabel"}
        assert client.get_model("bert").state == "serving"
        with pytest.raises(InferenceError) as missing:
            client.get_model("nope")
        assert missing.value.code is grpc.StatusCode.NOT_FOUND
        with pytest.raises(InferenceError) as unknown:
            client.classify("nope", ["a"])
        assert unknown.value.code is grpc.StatusCode.NOT_FOUND


def test_a_failed_chunk_names_the_callers_slice_and_nothing_is_returned(artifacts: dict[str, Path]) -> None:
    texts = ["fine text"] * 40
    texts[37] = "long text " * 60  # its request is over max_request_chars (a blank text no longer fails a request)
    with (
        running_server(models=[f"bert={artifacts['bert']}"], max_request_chars=500) as server,
        InferenceClient(server.target, chunk_size=CHUNK) as client,
    ):
        with pytest.raises(InferenceError) as failure:
            client.classify("bert", texts)
        assert failure.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "max_request_chars=500" in failure.value.details and "texts[32:40]" in failure.value.details
        # The client is still usable after a failed call.
        assert len(client.classify("bert", texts[:3])) == 3


def test_chunk_size_over_the_server_limit_is_the_servers_error(server: RunningServer) -> None:
    with InferenceClient(server.target, chunk_size=CHUNK + 1) as client:
        with pytest.raises(InferenceError) as failure:
            client.classify("bert", ["a"] * (CHUNK + 1))
    assert failure.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "max_texts_per_request" in failure.value.details


def test_input_mistakes_fail_before_any_call() -> None:
    client = InferenceClient("127.0.0.1:1")  # nothing listens there: these must not reach the network
    assert client.classify("bert", []) == []
    with pytest.raises(TypeError, match="wrap it in a list"):
        client.classify("bert", "one text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        client.classify("bert", ["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="top_k"):
        client.classify("bert", ["a"], top_k=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        InferenceClient("127.0.0.1:1", chunk_size=0)
    client.close()
    with pytest.raises(ValueError, match="closed"):
        client.classify("bert", ["a"])


def test_unreachable_server_is_unavailable_after_retries() -> None:
    with InferenceClient("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(InferenceError) as failure:
            client.classify("bert", ["a"])
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:50051", "localhost:50051"),
        ("dns:///ortserve.internal:50051", "dns:///ortserve.internal:50051"),
        ("127.0.0.1:50051,127.0.0.1:50052", "ipv4:127.0.0.1:50051,127.0.0.1:50052"),
        ("ipv4:10.0.0.1:50051,10.0.0.2:50051", "ipv4:10.0.0.1:50051,10.0.0.2:50051"),
        ("[::1]:50051, [::1]:50052", "ipv6:[::1]:50051,[::1]:50052"),
    ],
)
def test_targets_become_grpc_uris(given: str, expected: str) -> None:
    assert normalize_target(given) == expected


@pytest.mark.parametrize("bad", ["", "a.internal:1,b.internal:1", "127.0.0.1:1,[::1]:2", "127.0.0.1,127.0.0.2"])
def test_target_lists_that_grpc_cannot_resolve_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="target"):
        normalize_target(bad)


def test_service_config_balances_retries_and_throttles() -> None:
    config = service_config(ChannelConfig("x:1", retry=RetryPolicy(max_attempts=3)))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "ortserve.v1.Inference"}]
    assert method["retryPolicy"]["maxAttempts"] == 3
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED", "RESOURCE_EXHAUSTED"]
    assert "retryThrottling" in config and "healthCheckConfig" not in config
    options = dict(channel_options(ChannelConfig("x:1", retry=None, health_check_service="")))
    assert options["grpc.enable_retries"] == 0 and options["grpc.keepalive_time_ms"] == 60_000
    assert json.loads(options["grpc.service_config"])["healthCheckConfig"] == {"serviceName": ""}


def test_the_client_package_imports_no_server_side_dependency() -> None:
    script = (
        "import sys, ortserve.client, ortserve.client.compat, ortserve.cli.predict\n"
        "heavy = ('onnxruntime', 'torch', 'numpy', 'pydantic', 'tokenizers', 'transformers', 'ortserve.server')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    assert loaded.strip() == "[]"
