"""Accuracy gate: compares an exported ONNX classifier with its source PyTorch model on the same texts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Everyday sentences that exercise casing, punctuation, numbers and length; mixed with vocabulary samples.
_SENTENCES = [
    "The central bank raised interest rates by a quarter point on Wednesday.",
    "Shares of the company fell 12% after the earnings report missed expectations.",
    "The home team won the championship in overtime!",
    "Heavy rain is expected across the region this weekend.",
    "Scientists announced a breakthrough in battery technology.",
    "I am not sure this is a good idea, but let's try it anyway.",
    "Terrible service, the food was cold and the staff was rude.",
    "What a wonderful day for a walk in the park.",
    "The election results will be announced tomorrow morning.",
    "New smartphone sales exceeded analysts' forecasts in Q3 2024.",
]


#: Score at which a multi-label model's label counts as present.
MULTI_LABEL_THRESHOLD = 0.5


@dataclass(frozen=True)
class GateThresholds:
    """What an export must reach against its source model to be kept."""

    fp32_max_abs_diff: float = 1e-4
    """Largest allowed absolute difference of any probability, for the fp32 model."""
    fp32_min_top1_agreement: float = 1.0
    """Share of texts whose top label must agree, for the fp32 model."""
    int8_min_top1_agreement: float = 0.99
    """Share of texts whose top label must agree, for the int8 model (else fp32 is kept). For multi-label models
    the same share of label decisions (score ≥ 0.5) must agree too, since those decisions are what callers use."""


@dataclass(frozen=True)
class ParityReport:
    """How closely a candidate's probabilities follow the reference's on `texts` texts."""

    texts: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    decision_agreement: float = 1.0
    """Share of (text, label) decisions at `MULTI_LABEL_THRESHOLD` that agree (multi-label models; else top-1)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(reference: np.ndarray, candidate: np.ndarray, multi_label: bool = False) -> ParityReport:
    """Parity of two (texts, labels) probability matrices."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape}, candidate {candidate.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    decisions = (
        float(np.mean((reference >= MULTI_LABEL_THRESHOLD) == (candidate >= MULTI_LABEL_THRESHOLD)))
        if multi_label
        else agreement
    )
    return ParityReport(len(reference), float(diff.max()), float(diff.mean()), agreement, decisions)


def default_validation_texts(tokenizer: Any, count: int = 64, seed: int = 0) -> list[str]:
    """Deterministic texts for the gate: everyday sentences plus runs of words from the tokenizer's vocabulary.

    Vocabulary samples reach tokens a fixed sentence list would miss (and work for any language's vocabulary);
    their lengths vary from a few tokens to about a hundred so that padding and truncation are exercised.
    """
    rng = random.Random(seed)
    special = set(getattr(tokenizer, "all_special_tokens", []))
    words = sorted(
        token.lstrip("Ġ▁").removeprefix("##")
        for token in tokenizer.get_vocab()
        if token not in special and token.lstrip("Ġ▁").removeprefix("##").isalpha()
    )
    texts = list(_SENTENCES)
    while words and len(texts) < count:
        length = rng.choice([3, 8, 16, 32, 64, 120])
        texts.append(" ".join(rng.choice(words) for _ in range(length)))
    return texts[:count]


def torch_probabilities(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, multi_label: bool
) -> np.ndarray:
    """Probabilities of the source PyTorch model, computed the way the server does (same truncation)."""
    import inspect

    import torch

    # Fast tokenizers may return token_type_ids that a model (DistilBERT, RoBERTa) does not take.
    accepted = set(inspect.signature(model.forward).parameters)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), 16):
            batch = tokenizer(
                list(texts[start : start + 16]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits = model(**{k: v for k, v in batch.items() if k in accepted}).logits.float()
            rows.append((torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)).numpy())
    return np.concatenate(rows)
