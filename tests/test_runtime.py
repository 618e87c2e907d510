"""The runtime's session settings and batch path on real ONNX Runtime sessions of tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ortserve.server.runtime import OnnxClassifier, SessionConfig
from ortserve.server.settings import ServerSettings


def test_session_config_maps_to_session_options() -> None:
    options = SessionConfig(
        intra_op_threads=1, allow_spinning=False, enable_cpu_mem_arena=False, graph_optimization_level="basic"
    ).session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.enable_cpu_mem_arena is False
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert SessionConfig(use_global_thread_pool=True).session_options().use_per_session_threads is False


def test_unknown_optimization_level_names_the_choices() -> None:
    with pytest.raises(ValueError, match="one of .*'all'.*got 'max'"):
        SessionConfig(graph_optimization_level="max").session_options()


def test_server_settings_carry_the_measured_defaults() -> None:
    assert ServerSettings().session_config() == SessionConfig()


def test_fixed_padding_of_a_saved_tokenizer_is_not_used(artifacts: dict[str, Path]) -> None:
    # The tiny models' tokenizer.json pads to 128 tokens, as many saved by training runs do.
    classifier = OnnxClassifier.load(artifacts["bert"])
    batch = classifier.tokenize(["the markets", "the home team won the championship"])
    assert batch.lengths[0] < batch.lengths[1] < 20
    assert batch.inputs["input_ids"].shape == (2, batch.lengths[1])


@pytest.mark.parametrize("name", ["bert", "roberta", "multilabel"])
def test_length_grouped_runs_give_the_same_probabilities(artifacts: dict[str, Path], name: str) -> None:
    classifier = OnnxClassifier.load(artifacts[name], SessionConfig(intra_op_threads=1))
    texts = [("stocks " * n).strip() for n in (1, 90, 3, 40, 2, 120, 7)]
    grouped = classifier.probabilities(texts, max_batch_size=2, max_batch_tokens=256)
    alone = np.concatenate([classifier.probabilities([text]) for text in texts])
    np.testing.assert_allclose(grouped, alone, atol=1e-5)
