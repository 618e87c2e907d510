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
        intra_op_threads=1,
        allow_spinning=False,
        spin_during_runs=False,
        enable_cpu_mem_arena=False,
        graph_optimization_level="basic",
    ).session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.enable_cpu_mem_arena is False
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert SessionConfig(use_global_thread_pool=True).session_options().use_per_session_threads is False


def test_threads_may_spin_inside_runs_only() -> None:
    """Spinning between the ops of a run, stopped when the last run returns: a one-text run does not wake a sleeping
    thread per op, and idle threads do not spin. Off by default (no spinning at all)."""
    assert SessionConfig().session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    options = SessionConfig(spin_during_runs=True).session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    always = SessionConfig(allow_spinning=True).session_options()  # spinning between runs too: no forced stop
    assert always.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        always.get_session_config_entry("session.force_spinning_stop")
    assert ServerSettings().session_config().spin_during_runs is False
    assert ServerSettings(spin_during_runs=True).session_config().spin_during_runs is True


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


@pytest.mark.parametrize("name", ["bert", "multilabel"])
def test_a_tiny_output_is_post_processed_without_numpy_and_ranked_alike(
    artifacts: dict[str, Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25: one text's few probabilities are computed and ranked in plain Python (numpy's fixed cost per
    operation was most of the post-processing); the answer is numpy's, to float32 rounding, in the same order."""
    from ortserve.server import runtime

    classifier = OnnxClassifier.load(artifacts[name])
    texts = ["the market rallied today", "Terrible service, the food was cold.", "x"]
    small = [classifier.rank(classifier.probabilities([text])) for text in texts]
    ties = np.array([[0.25, 0.5, 0.25]], dtype=np.float32)
    small_ties = classifier.rank(ties[:, : len(classifier.labels)])
    extremes = np.array([[-1000.0, 1000.0, 0.0]], dtype=np.float32)
    small_extremes = runtime._sigmoid(extremes), runtime._softmax(extremes)
    monkeypatch.setattr(runtime, "SMALL_OUTPUT", 0)  # every output through numpy
    with np.errstate(over="ignore"):
        assert np.allclose(runtime._sigmoid(extremes), small_extremes[0], atol=1e-7)
    assert np.allclose(runtime._softmax(extremes), small_extremes[1], atol=1e-7)
    for text, (ranked,) in zip(texts, small, strict=True):
        (expected,) = classifier.rank(classifier.probabilities([text]))
        assert [score.label for score in ranked] == [score.label for score in expected]
        assert np.allclose([s.score for s in ranked], [s.score for s in expected], atol=1e-6)
        assert all(type(score.score) is float for score in ranked)
    assert [s.label for s in small_ties[0]] == [s.label for s in classifier.rank(ties[:, : len(classifier.labels)])[0]]
