"""Reads a local Hugging Face model directory: checks that ortserve can export it, and loads its PyTorch model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExportError

log = logging.getLogger(__name__)

#: Model types whose position ids start after the padding index, so that two positions are unusable.
_OFFSET_POSITION_MODELS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text"}
#: Upper bound when neither the tokenizer nor the config gives a usable length.
_FALLBACK_MAX_LENGTH = 512


@dataclass
class HuggingFaceClassifier:
    """A sequence-classification model directory with its config and fast tokenizer."""

    directory: Path
    config: Any
    tokenizer: Any
    labels: list[str]
    multi_label: bool
    max_length: int

    @property
    def problem_type(self) -> str:
        return "multi_label_classification" if self.multi_label else "single_label_classification"


def inspect_model_dir(directory: Path, label: str | None = None) -> HuggingFaceClassifier:
    """Load the config and fast tokenizer of `directory`; raise `ExportError` naming what is missing.

    `label` names the source in messages (e.g. the models:/ URI a temporary `directory` was downloaded from).
    """
    from transformers import AutoConfig, AutoTokenizer

    directory = Path(directory)
    label = label or str(directory)
    if not (directory / "config.json").is_file():
        raise ExportError(f"{label} is not a Hugging Face model directory: config.json is missing")
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError for unknown or broken configs
        raise ExportError(f"{label}: cannot read config.json: {exc}") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(arch.endswith("ForSequenceClassification") for arch in architectures):
        raise ExportError(
            f"{label} is not a sequence-classification model (architectures: {architectures or 'none'}); "
            "ortserve exports text-classification models (…ForSequenceClassification) only"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, use_fast=True, local_files_only=True)
    except Exception as exc:
        raise ExportError(f"{label}: cannot load a tokenizer: {exc}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"{label}: tokenizer {type(tokenizer).__name__} has no fast form (tokenizer.json); the server needs "
            "one. Save or log the model with a fast tokenizer (PreTrainedTokenizerFast) and export again"
        )
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    labels = [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
    return HuggingFaceClassifier(
        directory=directory,
        config=config,
        tokenizer=tokenizer,
        labels=labels,
        multi_label=config.problem_type == "multi_label_classification",
        max_length=_max_length(config, tokenizer),
    )


def _max_length(config: Any, tokenizer: Any) -> int:
    # Tokenizers without a known limit report a huge sentinel (int(1e30)); the position embeddings are the real bound.
    candidates = []
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        candidates.append(model_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = 2 if config.model_type in _OFFSET_POSITION_MODELS else 0
        candidates.append(positions - offset)
    return min(candidates) if candidates else _FALLBACK_MAX_LENGTH


def load_torch_model(model_dir: Path, label: str) -> Any:
    """The PyTorch `…ForSequenceClassification` of `model_dir` in eval mode (the parity reference)."""
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
    except Exception as exc:  # missing or mismatched weights surface as OSError/ValueError/RuntimeError
        raise ExportError(f"{label}: cannot load the PyTorch model: {exc}") from None
