"""Small Hugging Face text classifiers built offline from a config, for demos, tests and benchmarks.

Nothing is downloaded: the tokenizer is trained on a few sentences with `tokenizers`, the weights are random
(seeded). The tokenizer is saved with fixed padding to 128 tokens, as tokenizers saved by training runs often are,
so that the server's own padding is exercised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

Architecture = Literal["bert", "distilbert", "roberta", "albert"]

CORPUS = [
    "The central bank raised interest rates by a quarter point on Wednesday.",
    "Shares of the company fell sharply after the earnings report.",
    "The home team won the championship in overtime.",
    "Heavy rain is expected across the region this weekend.",
    "Scientists announced a breakthrough in battery technology.",
    "The election results will be announced tomorrow morning.",
    "Terrible service, the food was cold and the staff was rude.",
    "What a wonderful day for a walk in the park!",
    "Markets rallied as inflation cooled faster than expected.",
    "The striker scored twice in the second half.",
    "Parliament passed the new budget after a long debate.",
    "A new smartphone was launched with a faster chip and a better camera.",
    "I love this product, it works great and arrived early.",
    "This is the worst movie I have seen in years.",
    "The weather is fine, nothing special to report.",
]

SENTIMENT_LABELS = ["negative", "neutral", "positive"]
TOPIC_LABELS = ["business", "politics", "science", "sports", "weather"]


def train_tokenizer(architecture: Architecture, corpus: Sequence[str] = CORPUS, vocab_size: int = 400) -> Any:
    """A fast tokenizer of the kind `architecture` uses (WordPiece, byte-level BPE or Unigram), trained on `corpus`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if architecture in ("bert", "distilbert"):
        special = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
        tokenizer = Tokenizer(models.WordPiece(unk_token=special["unk"]))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer: Any = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(special.values()))
    elif architecture == "roberta":
        special = {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>"}
        tokenizer = Tokenizer(models.BPE(unk_token=special["unk"]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[special[k] for k in ("cls", "pad", "sep", "unk", "mask")],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif architecture == "albert":
        special = {"pad": "<pad>", "unk": "<unk>", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=[special[k] for k in ("pad", "unk", "cls", "sep", "mask")],
            unk_token=special["unk"],
        )
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    tokenizer.train_from_iterator(list(corpus), trainer)
    cls_id, sep_id = tokenizer.token_to_id(special["cls"]), tokenizer.token_to_id(special["sep"])
    if architecture == "roberta":
        tokenizer.post_processor = processors.RobertaProcessing((special["sep"], sep_id), (special["cls"], cls_id))
    else:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{special['cls']} $A {special['sep']}",
            pair=f"{special['cls']} $A {special['sep']} $B:1 {special['sep']}:1",
            special_tokens=[(special["cls"], cls_id), (special["sep"], sep_id)],
        )
    pad_id = tokenizer.token_to_id(special["pad"])
    tokenizer.enable_padding(length=128, pad_id=pad_id, pad_token=special["pad"])  # as training runs often save it
    tokenizer.enable_truncation(max_length=128)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=special["pad"],
        unk_token=special["unk"],
        cls_token=special["cls"],
        sep_token=special["sep"],
        mask_token=special["mask"],
        bos_token=special["cls"] if architecture == "roberta" else None,
        eos_token=special["sep"] if architecture == "roberta" else None,
    )


def build_tiny_classifier(
    directory: str | Path,
    architecture: Architecture = "bert",
    labels: Sequence[str] = SENTIMENT_LABELS,
    multi_label: bool = False,
    hidden_size: int = 32,
    layers: int = 2,
    max_position_embeddings: int = 128,
    seed: int = 0,
    tokenizer: Any | None = None,
    attention_heads: int | None = None,
) -> Path:
    """Save a randomly initialised `…ForSequenceClassification` and its fast tokenizer into `directory`.

    `attention_heads` defaults to one head per 16 hidden units (tiny models); benchmarks pass real shapes (12).
    """
    import torch
    import transformers

    tokenizer = tokenizer or train_tokenizer(architecture)
    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        "problem_type": "multi_label_classification" if multi_label else "single_label_classification",
        "pad_token_id": tokenizer.pad_token_id,
    }
    heads = attention_heads or max(1, hidden_size // 16)
    if architecture == "bert":
        config: Any = transformers.BertConfig(
            hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=hidden_size * 4, max_position_embeddings=max_position_embeddings, **common,
        )
        model_class: Any = transformers.BertForSequenceClassification
    elif architecture == "distilbert":
        config = transformers.DistilBertConfig(
            dim=hidden_size, n_layers=layers, n_heads=heads, hidden_dim=hidden_size * 4,
            max_position_embeddings=max_position_embeddings, **common,
        )
        model_class = transformers.DistilBertForSequenceClassification
    elif architecture == "roberta":
        config = transformers.RobertaConfig(
            hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=hidden_size * 4, max_position_embeddings=max_position_embeddings + 2,
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **common,
        )
        model_class = transformers.RobertaForSequenceClassification
    elif architecture == "albert":
        config = transformers.AlbertConfig(
            embedding_size=16, hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=hidden_size * 4, max_position_embeddings=max_position_embeddings, **common,
        )
        model_class = transformers.AlbertForSequenceClassification
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    torch.manual_seed(seed)
    model = model_class(config).eval()
    # Random heads give near-uniform scores; a larger classifier scale spreads them so that rankings are stable.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "classifier" in name and name.endswith("weight"):
                param.mul_(20.0)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
