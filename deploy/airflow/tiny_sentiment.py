"""A small sentiment classifier trained in seconds and logged to MLflow as training jobs log theirs: the stand-in for
the platform's real training step in `ml_training.py` (replace `train_and_log` with yours).

Runs in the training environment (torch, transformers, tokenizers, MLflow: `pip install 'ortserve[export]'`), never in
Airflow's. The data are generated sentences (a template, a subject, an opinion word); the held-out split uses subjects
the training never sees, so its accuracy says whether the model learnt the opinion words.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

LABELS = ("negative", "positive")
OPINIONS = {
    "negative": ["terrible", "awful", "broken", "disappointing", "useless", "slow", "rude", "dreadful"],
    "positive": ["great", "excellent", "wonderful", "reliable", "delightful", "fast", "friendly", "superb"],
}
TEMPLATES = ["the {subject} was {opinion}", "what a {opinion} {subject}", "i found the {subject} {opinion} today"]
TRAIN_SUBJECTS = ["service", "phone", "hotel", "movie", "meal", "delivery"]
HELDOUT_SUBJECTS = ["concert", "laptop", "flight", "book"]
EXPERIMENT = "ml_training"


def examples(subjects: list[str]) -> list[tuple[str, int]]:
    return [
        (template.format(subject=subject, opinion=opinion), label)
        for label, name in enumerate(LABELS)
        for opinion in OPINIONS[name]
        for subject in subjects
        for template in TEMPLATES
    ]


def build(directory: Path, corpus: list[str], seed: int) -> tuple[Any, Any]:
    """A 2-layer BERT with a WordPiece vocabulary learnt from `corpus`, saved to `directory` and returned."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    markers = [(token, raw.token_to_id(token)) for token in ("[CLS]", "[SEP]")]
    raw.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=markers)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def train_and_log(name: str, tracking_uri: str, seed: int = 0, epochs: int = 4) -> dict[str, Any]:
    """Train, measure held-out accuracy, log both with the model to MLflow and register it as a new version of
    `name` (no alias: promotion is the DAG's decision). Returns name, version, run id and accuracy."""
    import mlflow
    import torch

    rng = random.Random(seed)
    train, heldout = examples(TRAIN_SUBJECTS), examples(HELDOUT_SUBJECTS)
    with tempfile.TemporaryDirectory(prefix="ml-training-") as scratch:
        model, tokenizer = build(Path(scratch), [text for text, _ in train], seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(epochs):
            rng.shuffle(train)
            for start in range(0, len(train), 16):
                texts, labels = zip(*train[start : start + 16], strict=True)
                batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
                loss = model(**batch, labels=torch.tensor(labels)).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            batch = tokenizer([text for text, _ in heldout], padding=True, return_tensors="pt")
            predicted = model(**batch).logits.argmax(-1).tolist()
        accuracy = sum(p == label for p, (_, label) in zip(predicted, heldout, strict=True)) / len(heldout)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=f"train {name}") as run:
            mlflow.log_params({"seed": seed, "epochs": epochs, "train_texts": len(train)})
            mlflow.log_metric("heldout_accuracy", accuracy)
            info = mlflow.transformers.log_model(
                {"model": model, "tokenizer": tokenizer},
                name="model",
                task="text-classification",
                registered_model_name=name,
                # Explicit requirements: MLflow's inference of them imports torchvision, which CPU installs lack.
                pip_requirements=["torch", "transformers"],
            )
    return {"name": name, "version": str(info.registered_model_version), "run_id": run.info.run_id,
            "accuracy": accuracy}  # fmt: skip
