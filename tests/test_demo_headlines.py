"""The demo's headline generator: deterministic, balanced, and a held-out split the training never sees."""

from __future__ import annotations

from collections import Counter

import pytest

from demo.headlines import (
    NEWS_FRAMES,
    SENTIMENT_LABELS,
    SHOWCASE,
    TOPIC_LABELS,
    TOPICS,
    sentiment_dataset,
    split_pool,
    topic_dataset,
)

DATASETS = {"topic": (topic_dataset, TOPIC_LABELS), "sentiment": (sentiment_dataset, SENTIMENT_LABELS)}


@pytest.mark.parametrize("task", DATASETS)
def test_same_seed_same_data_other_seed_other_data(task: str) -> None:
    make, _ = DATASETS[task]
    first, again, other = make(60, 20, seed=1), make(60, 20, seed=1), make(60, 20, seed=2)
    assert first == again
    assert [e.text for e in first.train] != [e.text for e in other.train]


@pytest.mark.parametrize("task", DATASETS)
def test_labels_are_balanced_and_texts_distinct(task: str) -> None:
    make, labels = DATASETS[task]
    dataset = make(120, 30)
    assert dataset.labels == labels
    assert Counter(e.label for e in dataset.train) == dict.fromkeys(labels, 120)
    assert Counter(e.label for e in dataset.heldout) == dict.fromkeys(labels, 30)
    assert len({e.text for e in dataset.train}) == len(dataset.train)
    assert len({e.text for e in dataset.heldout}) == len(dataset.heldout)


@pytest.mark.parametrize("task", DATASETS)
def test_heldout_texts_share_no_frame_subject_or_event_with_training(task: str) -> None:
    make, _ = DATASETS[task]
    dataset = make(300, 60)
    train, heldout = {e.text for e in dataset.train}, {e.text for e in dataset.heldout}
    assert not train & heldout
    heldout_only = [
        item
        for parts in TOPICS.values()
        for pool in (parts.subjects, *parts.events.values())
        for item in split_pool(pool, "heldout")
    ]
    assert heldout_only  # every pool gives the held-out split parts of its own
    for item in heldout_only:
        assert not any(item in text for text in train), item
    assert any(any(item in text for item in heldout_only) for text in heldout)


def test_pools_split_every_fourth_item_to_heldout() -> None:
    assert split_pool("abcdefgh", "heldout") == ("d", "h")
    assert split_pool("abcdefgh", "train") == ("a", "b", "c", "e", "f", "g")
    assert len(split_pool(NEWS_FRAMES, "heldout")) == len(NEWS_FRAMES) // 4


def test_showcase_texts_are_never_generated() -> None:
    showcase = {text for text, _, _ in SHOWCASE}
    for make, _ in DATASETS.values():
        dataset = make(300, 60)
        assert not showcase & {e.text for e in dataset.train + dataset.heldout}


def test_too_many_examples_asked_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="distinct texts for label"):
        sentiment_dataset(10, 100_000)


@pytest.mark.parametrize("task", DATASETS)
def test_long_articles_open_with_unlabelled_text_then_the_labelled_body(task: str) -> None:
    from demo.headlines import long_articles

    articles = long_articles(6, task)  # type: ignore[arg-type]
    again = long_articles(6, task)  # type: ignore[arg-type]
    assert articles == again and len(articles) == 6 * len(DATASETS[task][1])
    label_of = (lambda a: a.topic) if task == "topic" else (lambda a: a.polarity)
    assert Counter(label_of(a) for a in articles) == dict.fromkeys(DATASETS[task][1], 6)
    assert Counter(a.opening for a in articles) == {"boilerplate": len(articles) // 2, "other_lede": len(articles) // 2}
    for article in articles:
        opening, body = article.text[: article.body_start], article.text[article.body_start :]
        assert len(opening.split()) >= 90 and len(body.split()) > len(opening.split()) / 2
        assert "cookies" in opening or "Subscribe" in opening or "Share" in opening or "Sign" in opening
        if article.opening == "other_lede":  # a lede about another topic: a subject of another topic
            assert any(s in opening for t in TOPIC_LABELS if t != article.topic for s in TOPICS[t].subjects)
        assert any(s in body for s in TOPICS[article.topic].subjects)
    heldout_subjects = [s for parts in TOPICS.values() for s in split_pool(parts.subjects, "heldout")]
    assert all(any(s in a.text[a.body_start :] for s in heldout_subjects) for a in articles)
