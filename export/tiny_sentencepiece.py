"""A tiny ALBERT classifier whose tokenizer is a real SentencePiece model, trained offline, saved in its slow form.

Users' SentencePiece models (ALBERT, XLM-RoBERTa, DeBERTa-v2) often come as `spiece.model` with no
`tokenizer.json`; the export converts them to the fast form the server needs. This builds such a model for tests.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .tiny_models import CORPUS, SENTIMENT_LABELS, build_tiny_classifier

#: Special tokens in SentencePiece id order: ids 0-3 are SentencePiece's own pad/unk/bos/eos slots.
_SPECIAL = {"pad": "<pad>", "unk": "<unk>", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def train_sentencepiece_tokenizer(directory: Path, corpus: Sequence[str] = CORPUS, vocab_size: int = 160) -> Any:
    """Train a unigram SentencePiece model on `corpus`, write `directory/spiece.model`, return an `AlbertTokenizer`
    (slow) over it."""
    import sentencepiece as spm
    from transformers import AlbertTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus) * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        pad_piece=_SPECIAL["pad"], unk_piece=_SPECIAL["unk"], bos_piece=_SPECIAL["cls"], eos_piece=_SPECIAL["sep"],
        user_defined_symbols=[_SPECIAL["mask"]],
        character_coverage=1.0,
        hard_vocab_limit=False,  # a tiny corpus may not fill the vocabulary
        minloglevel=2,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spiece.model").write_bytes(model.getvalue())
    return AlbertTokenizer(
        str(directory / "spiece.model"),
        bos_token=_SPECIAL["cls"], eos_token=_SPECIAL["sep"], cls_token=_SPECIAL["cls"], sep_token=_SPECIAL["sep"],
        pad_token=_SPECIAL["pad"], unk_token=_SPECIAL["unk"], mask_token=_SPECIAL["mask"],
    )


def build_sentencepiece_classifier(
    directory: str | Path, labels: Sequence[str] = SENTIMENT_LABELS, hidden_size: int = 32, seed: int = 0
) -> Path:
    """Save a random `AlbertForSequenceClassification` with a slow SentencePiece tokenizer (no tokenizer.json)."""
    directory = Path(directory)
    with tempfile.TemporaryDirectory(prefix="ortserve-spm-") as scratch:
        tokenizer = train_sentencepiece_tokenizer(Path(scratch))
        build_tiny_classifier(directory, "albert", labels, hidden_size=hidden_size, seed=seed, tokenizer=tokenizer)
    return directory
