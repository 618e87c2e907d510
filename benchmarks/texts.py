"""Benchmark texts with a known token count: fixed-length (21 tokens) and mixed-length (5–120 tokens)."""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer

FIXED_TOKENS = 21
MIXED_RANGE = (5, 120)


def _single_token_words(tokenizer: Tokenizer) -> list[str]:
    """Lower-case alphabetic words that the tokenizer keeps as one token, so a text of n words has n + 2 tokens."""
    vocab = tokenizer.get_vocab()
    return sorted(word for word in vocab if word.isalpha() and word.islower() and len(word) > 2)


def make_texts(tokenizer_file: Path, count: int, mixed: bool, seed: int = 0) -> list[str]:
    """`count` texts: 21 tokens each, or uniformly 5–120 tokens each when `mixed` (special tokens included)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    words = _single_token_words(tokenizer)
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        tokens = rng.randint(*MIXED_RANGE) if mixed else FIXED_TOKENS
        texts.append(" ".join(rng.choice(words) for _ in range(tokens - 2)))
    return texts
