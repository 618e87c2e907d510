"""Held-out accuracy of a served model, asked through a running ortserve server, next to its PyTorch source."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from .train import TrainingResult, accuracy


@dataclass(frozen=True)
class ServedAccuracy:
    """One model's held-out figures: the PyTorch model at training time, the ONNX model as served."""

    model: str
    """Name the model is served under."""
    model_version: str
    """Registered version of the ONNX model that answered."""
    examples: int
    pytorch_accuracy: float
    served_accuracy: float
    top1_agreement: float
    """Share of held-out texts whose top label is the same from the served model and from PyTorch."""

    def tags(self) -> dict[str, object]:
        """The figures as registered-model-version tags."""
        return {
            "demo.heldout_examples": self.examples,
            "demo.heldout_accuracy_pytorch": self.pytorch_accuracy,
            "demo.heldout_accuracy_onnx_served": self.served_accuracy,
            "demo.top1_agreement_onnx_vs_pytorch": self.top1_agreement,
        }


def served_accuracy(target: str, served_name: str, result: TrainingResult) -> ServedAccuracy:
    """Classify `result`'s held-out texts through the server at `target` and compare with labels and PyTorch."""
    from ortserve.client import InferenceClient

    with InferenceClient(target) as client:
        answers = client.classify(served_name, result.heldout_texts, top_k=1)
    predicted = [answer.top.label for answer in answers]
    versions = {answer.model_version for answer in answers}
    return ServedAccuracy(
        model=served_name,
        model_version=",".join(sorted(versions)),
        examples=len(predicted),
        pytorch_accuracy=accuracy(result.heldout_predictions, result.heldout_labels),
        served_accuracy=accuracy(predicted, result.heldout_labels),
        top1_agreement=accuracy(predicted, result.heldout_predictions),
    )


#: The long-text strategies compared: (label, long_text, aggregate).
LONG_TEXT_STRATEGIES: tuple[tuple[str, str, str], ...] = (
    ("truncate", "truncate", ""),
    ("chunk+mean", "chunk", "mean"),
    ("chunk+max", "chunk", "max"),
)


@dataclass(frozen=True)
class LongTextAccuracy:
    """One model's accuracy on long articles with one strategy, through a running server."""

    model: str
    strategy: str
    articles: int
    accuracy: float
    windows_per_article: float
    """Mean windows read per article (1 with `truncate`)."""
    seconds: float
    """Wall-clock seconds of classifying all the articles (one call of all of them)."""


def long_text_accuracy(
    target: str, served_name: str, texts: Sequence[str], labels: Sequence[str]
) -> list[LongTextAccuracy]:
    """Accuracy of the model `served_name` at `target` on `texts` (long articles with their expected `labels`) with
    each of `LONG_TEXT_STRATEGIES`."""
    from ortserve.client import InferenceClient

    rows = []
    with InferenceClient(target, timeout=600) as client:
        for name, long_text, aggregate in LONG_TEXT_STRATEGIES:
            started = time.perf_counter()
            answers = client.classify(served_name, texts, top_k=1, long_text=long_text, aggregate=aggregate)
            seconds = time.perf_counter() - started
            predicted = [answer.top.label for answer in answers]
            windows = [max(1, answer.windows) for answer in answers]
            rows.append(
                LongTextAccuracy(
                    served_name, name, len(texts), accuracy(predicted, labels), sum(windows) / len(windows), seconds
                )
            )
    return rows


def long_text_table(rows: Sequence[LongTextAccuracy], headline_accuracy: dict[str, float]) -> str:
    """The rows as a Markdown table, with each model's held-out headline accuracy (the reference) beside them."""
    lines = [
        "| model | strategy | articles | accuracy | headline accuracy | windows per article | ms per article |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        reference = headline_accuracy.get(row.model)
        lines.append(
            f"| {row.model} | {row.strategy} | {row.articles} | {row.accuracy:.1%} | "
            f"{'-' if reference is None else f'{reference:.1%}'} | {row.windows_per_article:.1f} | "
            f"{row.seconds / max(1, row.articles) * 1000:.1f} |"
        )
    return "\n".join(lines)
