"""The demo's training cache key and gate texts (no training here: see test_training.py)."""

from __future__ import annotations

from dataclasses import replace

from demo.headlines import topic_dataset
from demo.train import DEMO_CONFIGS, TrainingConfig, cache_key, gate_texts

CONFIG = TrainingConfig(train_per_label=30, heldout_per_label=10)


def test_cache_key_follows_data_and_configuration() -> None:
    data = topic_dataset(30, 10)
    key = cache_key("topic-classification", CONFIG, data)
    assert key == cache_key("topic-classification", CONFIG, topic_dataset(30, 10))
    assert key != cache_key("topic-classification", replace(CONFIG, epochs=3), data)
    assert key != cache_key("topic-classification", CONFIG, topic_dataset(30, 10, seed=99))
    assert key != cache_key("sentiment-analysis", CONFIG, data)


def test_gate_texts_are_training_texts_never_heldout() -> None:
    config = DEMO_CONFIGS["topic-classification"]
    texts = gate_texts("topic-classification", 50)
    data = topic_dataset(config.train_per_label, config.heldout_per_label, config.seed)
    assert texts == [e.text for e in data.train[:50]]
    assert not set(texts) & {e.text for e in data.heldout}
