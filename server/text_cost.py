"""What a text costs before it is tokenized: the one home of the characters-per-token assumptions.

Two numbers, for two different questions. Admission and run forming need a *typical* cost, to estimate work ahead
(`estimate_tokens`, from `CHARS_PER_TOKEN_AVERAGE`); the runtime needs an *upper bound* of the characters that
`max_length` tokens can take, to cut a long text before tokenizing it without ever changing the result
(`CHARS_PER_TOKEN_BOUND`). Keeping both here keeps them consistent with each other and easy to re-measure.
"""

from __future__ import annotations

#: Characters per token assumed when estimating a text's cost before tokenizing it (English averages 4-5 for WordPiece
#: and BPE vocabularies; erring low over-estimates cost, which only makes admission more cautious).
CHARS_PER_TOKEN_AVERAGE = 4

#: Characters per token assumed when a text is cut before tokenizing (see `OnnxClassifier._encode`). English prose
#: takes 4-6 characters per WordPiece or BPE token (5.4 for the uncased BERT vocabulary on news text); 10 leaves room
#: for long words, and a text that is even sparser in tokens is tokenized again with a larger budget, so the bound
#: costs speed, never correctness. Reading a little more than needed is cheap; reading far more is not: the
#: tokenizer also builds every overflowing window of a truncated text (measured: 512 tokens from 5,120 characters
#: 1.2 ms, from 10,000 characters 6.1 ms).
CHARS_PER_TOKEN_BOUND = 10

#: Special tokens most classifiers add around a text ([CLS] ... [SEP], <s> ... </s>).
SPECIAL_TOKENS = 2


def estimate_tokens(text: str, max_length: int | None = None) -> int:
    """Tokens `text` will take, estimated from its length; at most `max_length` (the runtime truncates there)."""
    estimate = len(text) // CHARS_PER_TOKEN_AVERAGE + SPECIAL_TOKENS
    return estimate if max_length is None else min(max_length, estimate)


def window_tokens(capacity: int, max_chunks: int, stride: int) -> int:
    """Tokens of text that `max_chunks` windows of `capacity` tokens overlapping by `stride` can hold at most."""
    return capacity + (max_chunks - 1) * max(1, capacity - stride)


def windows_char_budget(capacity: int, max_chunks: int, stride: int) -> int:
    """Characters of a text read at first when it is cut into windows (`long_text=chunk`): what `max_chunks` windows
    take in ordinary text, with the same margin as one window (`CHARS_PER_TOKEN_BOUND`). The cut grows with the
    windows a call may read and no further: a text cut there still fills every window it may have."""
    return (window_tokens(capacity, max_chunks, stride) + SPECIAL_TOKENS) * CHARS_PER_TOKEN_BOUND
