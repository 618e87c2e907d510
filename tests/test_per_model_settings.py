"""Settings per model: a model's spec (`NAME=URI?SETTING=VALUE&...`) or its `ORTSERVE_MODEL_<NAME>_<SETTING>`
variables override the server-wide batching and admission settings for that model only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from ortserve.server.settings import PER_MODEL_SETTINGS, ModelSpec, ServerSettings, per_model_env_var
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc

from .helpers import running_server


def test_a_spec_sets_its_own_values_and_falls_back_to_the_server_wide_ones() -> None:
    settings = ServerSettings(
        models=["topic=/a?max_batch_size=64&concurrent_runs=1", "sentiment=/b"], max_batch_size=8, concurrent_runs=3
    )
    topic, sentiment = settings.models
    assert (topic.uri, topic.settings) == ("/a", {"max_batch_size": 64, "concurrent_runs": 1})
    assert (settings.batch_limits(topic).max_batch_size, settings.batch_limits(topic).concurrent_runs) == (64, 1)
    assert (settings.batch_limits(sentiment).max_batch_size, settings.batch_limits(sentiment).concurrent_runs) == (8, 3)
    assert settings.runs_for(topic) == 1 and settings.runs_for(sentiment) == 3


def test_per_model_environment_variables_sit_between_the_spec_and_the_server_wide_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert per_model_env_var("topic-v2.1", "max_batch_tokens") == "ORTSERVE_MODEL_TOPIC_V2_1_MAX_BATCH_TOKENS"
    monkeypatch.setenv("ORTSERVE_MODEL_TOPIC_V2_1_MAX_BATCH_TOKENS", "1000")
    monkeypatch.setenv("ORTSERVE_MODEL_TOPIC_V2_1_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("ORTSERVE_MAX_BATCH_SIZE", "16")
    settings = ServerSettings(models=["topic-v2.1=/a?max_batch_size=2", "other=/b"])
    topic, other = (settings.batch_limits(spec) for spec in settings.models)
    assert (topic.max_batch_size, topic.max_batch_tokens) == (2, 1000)  # the spec wins over its variable
    assert (other.max_batch_size, other.max_batch_tokens) == (16, 8192)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a=/x?batch=3", "unknown setting 'batch'; a model may set max_batch_size"),
        ("a=/x?max_batch_size=0", "max_batch_size='0': Input should be greater than or equal to 1"),
        ("a=/x?concurrent_runs=two", "concurrent_runs='two'"),
        ("a=/x?max_batch_size", "settings after '?' must look like SETTING=VALUE"),
        ("a=?max_batch_size=2", "has settings but no URI"),
    ],
)
def test_a_wrong_model_setting_is_refused_naming_the_model_and_the_setting(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="model 'a'|has settings but no URI") as refusal:
        ModelSpec.parse(spec)
    assert message in str(refusal.value)


def test_the_cli_refuses_a_wrong_model_setting_with_exit_code_2() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ortserve.cli.main", "serve", "--model", "a=/x?max_queue_texts=-5", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "model 'a': setting max_queue_texts='-5'" in run.stderr and "Traceback" not in run.stderr


def test_serve_help_says_how_to_set_them() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ortserve.cli.main", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    help_text = " ".join(run.stdout.split())
    assert (
        "NAME=URI?max_batch_size=64&concurrent_runs=1" in help_text and "ORTSERVE_MODEL_<NAME>_<SETTING>" in help_text
    )
    assert all(f"--{key.replace('_', '-')}" in help_text for key in PER_MODEL_SETTINGS)


def test_each_served_model_batches_with_its_own_limits(artifacts: dict[str, Path]) -> None:
    """Through a real server: each model's batcher gets its own bounds, and both answer."""
    with running_server(
        models=[f"tight={artifacts['bert']}?max_queue_texts=2&max_batch_size=1", f"roomy={artifacts['bert']}"],
        max_batch_size=32,
    ) as server:
        assert server.server is not None
        tight, roomy = (server.server.table.get(name) for name in ("tight", "roomy"))
        assert (tight.batcher.limits.max_queue_texts, tight.batcher.limits.max_batch_size) == (2, 1)
        assert (roomy.batcher.limits.max_queue_texts, roomy.batcher.limits.max_batch_size) == (2048, 32)
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            answer = stub.Classify(pb.ClassifyRequest(model="tight", texts=["one", "two", "three"]), timeout=30)
            assert len(answer.results) == 3  # an empty queue admits any call
            answer = stub.Classify(pb.ClassifyRequest(model="roomy", texts=["one", "two", "three"]), timeout=30)
            assert len(answer.results) == 3
