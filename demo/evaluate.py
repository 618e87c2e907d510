"""Held-out accuracy of a served model, asked through a running ortserve server, next to its PyTorch source."""

from __future__ import annotations

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
