"""The demo's training path end to end, made small: generate headlines, fine-tune a 2-layer cut of the real
MiniLM-L6 for a few steps, cache it, export it, serve it, and check held-out accuracy through the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.evaluate import served_accuracy
from demo.headlines import TOPIC_LABELS
from demo.train import TrainingConfig, trained_model
from ortserve.export.pipeline import ExportOptions, export_local_model

from .helpers import running_server

pytestmark = [pytest.mark.slow, pytest.mark.torch]

#: Small enough for a test on 2 cores: 2 of MiniLM's 6 layers, 240 training texts, 30 steps.
SMALL = TrainingConfig(train_per_label=40, heldout_per_label=20, epochs=2, batch_size=16, learning_rate=3e-4, layers=2)


def test_small_minilm_learns_topics_it_was_never_shown_and_serves_them(tmp_path: Path) -> None:
    result = trained_model("topic-classification", tmp_path / "trained", SMALL)
    chance = 1 / len(TOPIC_LABELS)
    assert result.labels == list(TOPIC_LABELS)
    assert len(result.heldout_texts) == 20 * len(TOPIC_LABELS)
    assert result.metrics["heldout_accuracy"] >= 3 * chance  # held-out texts: unseen frames, subjects and events

    again = trained_model("topic-classification", tmp_path / "trained", SMALL)
    assert again.directory == result.directory and again.metrics == result.metrics  # from the cache, not retrained

    report = export_local_model(result.directory, tmp_path / "artifact", ExportOptions(quantize=False))
    assert report.output is not None
    with running_server(models=[f"topic={report.output}"]) as server:
        figures = served_accuracy(server.target, "topic", result)
    assert figures.examples == len(result.heldout_texts)
    assert figures.top1_agreement >= 0.99  # fp32 ONNX answers as PyTorch did
    assert figures.served_accuracy == pytest.approx(figures.pytorch_accuracy, abs=0.01)
    assert figures.pytorch_accuracy == pytest.approx(result.metrics["heldout_accuracy"])
