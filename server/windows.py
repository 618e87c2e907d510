"""Long texts read as overlapping windows: how a call reads a text longer than the model's window, where the windows
of a text fall, and how their scores become the text's.

A model reads at most `max_length` tokens. With the `truncate` strategy (the default) a longer text is classified by
its first window only. With `chunk`, the text is cut into windows of at most `max_length` tokens that overlap by
`stride` tokens, each window is classified as a row of its own (the batcher and admission count every window), and
the text's scores are aggregated over its windows: the `mean` of each label's probability, or its `max`. At most
`max_chunks` windows are read per text; the rest of a longer text is cut, and its result says it was truncated.

The windows are substrings of the text (cut at token boundaries that fall between words), so a window is an
ordinary text to every later stage: the runtime tokenizes it again, the result cache keys it, and a version swapped
in meanwhile reads it like any other text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, cast

import numpy as np
from tokenizers import Encoding

from .errors import InvalidInputError

LongTextStrategy = Literal["truncate", "chunk"]
Aggregation = Literal["mean", "max"]
STRATEGIES: tuple[LongTextStrategy, ...] = ("truncate", "chunk")
AGGREGATIONS: tuple[Aggregation, ...] = ("mean", "max")


@dataclass(frozen=True)
class LongTextPolicy:
    """How one model reads a text longer than its window: the model's defaults, or one call's resolved choice."""

    strategy: LongTextStrategy = "truncate"
    """`truncate`: classify the first window only; `chunk`: classify every window and aggregate."""
    aggregate: Aggregation = "mean"
    """How `chunk` combines the windows' scores: `mean` or `max` of each label's probability."""
    max_chunks: int = 16
    """Most windows read per text: the cap of one text's cost (the rest of a longer text is cut)."""
    stride: int = 16
    """Tokens shared by consecutive windows, so that a sentence cut at one window's end is whole in the next."""

    def resolved(self, request: LongTextRequest | None) -> LongTextPolicy:
        """This policy with what `request` chose; a call may ask for fewer windows than `max_chunks`, not more."""
        if request is None or request.empty:
            return self
        return replace(
            self,
            strategy=cast(LongTextStrategy, request.checked().strategy or self.strategy),
            aggregate=cast(Aggregation, request.aggregate or self.aggregate),
            max_chunks=min(request.max_chunks, self.max_chunks) if request.max_chunks else self.max_chunks,
        )


#: The policy of a model that sets none: `truncate` (built once: a call must not pay for building it).
DEFAULT_POLICY = LongTextPolicy()


@dataclass(frozen=True)
class LongTextRequest:
    """One call's long-text choice, as a request carries it; empty fields keep the model's default."""

    strategy: str = ""
    """"" (the model's default), `truncate` or `chunk`."""
    aggregate: str = ""
    """"" (the model's default), `mean` or `max`."""
    max_chunks: int = 0
    """Most windows per text; 0 for the model's `max_chunks`, which also caps what a call may ask."""

    @property
    def empty(self) -> bool:
        return not (self.strategy or self.aggregate or self.max_chunks)

    def checked(self) -> LongTextRequest:
        """`self`, or `InvalidInputError` naming the field that is not one of its values."""
        if self.strategy not in ("", *STRATEGIES):
            raise InvalidInputError(
                f"long_text must be one of {', '.join(STRATEGIES)} (or empty for the model's default), "
                f"got {self.strategy[:40]!r}"
            )
        if self.aggregate not in ("", *AGGREGATIONS):
            raise InvalidInputError(
                f"aggregate must be one of {', '.join(AGGREGATIONS)} (or empty for the model's default), "
                f"got {self.aggregate[:40]!r}"
            )
        if self.max_chunks < 0:
            raise InvalidInputError(f"max_chunks must be 0 (the model's default) or positive, got {self.max_chunks}")
        return self


@dataclass(frozen=True)
class TextWindows:
    """The windows of one text, in order, and whether they leave part of the text unread (`max_chunks`)."""

    windows: list[str]
    cut: bool = False


def split_windows(text: str, encoding: Encoding, capacity: int, stride: int, max_chunks: int) -> TextWindows:
    """The windows of `text`, from its encoding (with offsets and word ids, no truncation, special tokens marked).

    Each window holds at most `capacity` tokens of the text (the model's max length less its special tokens) and
    starts `stride` tokens before the previous one ended. Window ends are moved back to a word boundary, and starts
    to the first token of their word, so that re-tokenizing a window's substring gives the tokens it held; a single
    word longer than a window is the exception and is split. A text that fits in one window is its own window.
    """
    content = [i for i, special in enumerate(encoding.special_tokens_mask) if not special]
    if len(content) <= capacity:
        return TextWindows([text])
    offsets, word_ids = encoding.offsets, encoding.word_ids
    words = [word_ids[i] for i in content]

    def word_start(position: int, floor: int) -> int:
        """`position` moved back to the first token of its word, not before `floor`."""
        while position > floor and words[position] is not None and words[position] == words[position - 1]:
            position -= 1
        return position

    windows: list[str] = []
    start, total = 0, len(content)
    while True:
        end = min(start + capacity, total)
        if end < total:  # do not end inside a word, unless the word fills the whole window
            end = word_start(end, start + 1)
        windows.append(text[offsets[content[start]][0] : offsets[content[end - 1]][1]])
        if end >= total:
            return TextWindows(windows)
        if len(windows) == max_chunks:
            return TextWindows(windows, cut=True)
        following = word_start(max(end - stride, start + 1), start + 1)
        start = following if following > start else end


def aggregate_scores(rows: np.ndarray, how: Aggregation, normalize: bool) -> np.ndarray:
    """One text's scores from its windows' (`rows`: windows × labels): each label's mean or max over the windows.
    With `normalize` (single-label models, whose scores are a distribution), the max is rescaled to sum to 1."""
    if how == "max":
        pooled = rows.max(axis=0)
        return pooled / pooled.sum() if normalize and pooled.sum() > 0 else pooled
    return np.asarray(rows.mean(axis=0))
