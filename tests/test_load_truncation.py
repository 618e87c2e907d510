"""Bounded cost per text: a text is cut to what the model can use before it is tokenized, with exact results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ortserve.server.runtime import OnnxClassifier, cut_text

PROSE = "Shares of the regional bank rallied after a strong quarter, while bond yields slipped. "


class CountingTokenizer:
    """Wraps the real tokenizer and records how many characters it was given."""

    def __init__(self, real: object):
        self._real = real
        self.chars = 0

    def encode_batch_fast(self, texts: list[str]) -> object:
        self.chars += sum(len(text) for text in texts)
        return self._real.encode_batch_fast(texts)  # type: ignore[attr-defined]

    def encode(self, text: str) -> object:
        return self._real.encode(text)  # type: ignore[attr-defined]


def _full_ids(classifier: OnnxClassifier, text: str) -> list[int]:
    return list(classifier._tokenizer.encode(text).ids)


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_a_long_text_tokenizes_to_max_length_reading_only_the_char_budget(
    artifacts: dict[str, Path], name: str
) -> None:
    classifier = OnnxClassifier.load(artifacts[name])
    text = (PROSE * 200)[:10_000]
    counting = CountingTokenizer(classifier._tokenizer)
    classifier._tokenizer = counting  # type: ignore[assignment]
    batch = classifier.tokenize([text])
    assert batch.lengths == [classifier.max_length]
    assert counting.chars <= classifier.char_budget < len(text)  # bounded work: never the whole 10,000 characters
    assert list(batch.inputs["input_ids"][0]) == _full_ids(classifier, text)  # same tokens as tokenizing it all


def test_a_text_sparse_in_tokens_is_read_further_until_the_window_is_full(artifacts: dict[str, Path]) -> None:
    classifier = OnnxClassifier.load(artifacts["bert"])
    # Long runs of spaces hold no tokens: the first cut underfills the window, so the text is read again, further.
    sparse = ("market" + " " * 60) * 150
    assert len(sparse) > classifier.char_budget
    (encoding,) = classifier._encode([sparse])
    assert list(encoding.ids) == _full_ids(classifier, sparse)
    assert len(encoding.ids) == classifier.max_length
    short = "market" + " " * (classifier.char_budget * 3) + "rallied"  # two words, far apart, still both read
    assert list(classifier._encode([short])[0].ids) == _full_ids(classifier, short)


def test_cut_texts_give_the_same_probabilities(artifacts: dict[str, Path]) -> None:
    classifier = OnnxClassifier.load(artifacts["bert"])
    texts = [(PROSE * 200)[:10_000], "a short one", (PROSE * 3)]
    expected = np.concatenate(
        [classifier.run(classifier._collate([classifier._tokenizer.encode(text)])) for text in texts]
    )
    np.testing.assert_allclose(classifier.probabilities(texts, by_length=True), expected, atol=1e-5)


def test_cut_text_does_not_split_a_word() -> None:
    assert cut_text("short", 10) == "short"
    assert cut_text("alpha beta gamma", 8) == "alpha"
    assert cut_text("x" * 100, 10) == "x" * 10  # no whitespace to cut at: cut at the budget
