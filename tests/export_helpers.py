"""Helpers of the export tests: registered artifacts as the server sees them, source-model answers, odd models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ortserve.export.parity import torch_probabilities
from ortserve.server.artifact import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE
from ortserve.server.runtime import OnnxClassifier

TEXTS = [
    "Shares rallied after a strong quarter.",
    "The match was cancelled because of heavy rain.",
    "Parliament passed the budget after a long debate.",
    "I love this phone, the camera is great!",
    "Terrible service and cold food.",
    "Scientists found a new battery material.",
]


def download_registered(tracking_uri: str, name: str, version: str, destination: Path) -> Path:
    """Download a registered ONNX version with MLflow and check the layout the server relies on."""
    import mlflow

    from ortserve.export.tracking import use_tracking_uri

    # download_artifacts(tracking_uri=...) still resolves models:/ URIs against the global registry URI.
    with use_tracking_uri(tracking_uri):
        downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(destination)))
    for relative in ("MLmodel", MODEL_FILE, f"extra_files/{TOKENIZER_FILE}", f"extra_files/{MANIFEST_FILE}"):
        assert (downloaded / relative).is_file(), f"{relative} missing from models:/{name}/{version}"
    return downloaded


def load_registered(tracking_uri: str, name: str, version: str, workdir: Path) -> OnnxClassifier:
    """The registered version as the server loads it: the downloaded files arranged as an artifact directory."""
    downloaded = download_registered(tracking_uri, name, version, workdir / "download")
    artifact = workdir / "artifact"
    artifact.mkdir()
    (artifact / MODEL_FILE).symlink_to(downloaded / MODEL_FILE)
    for extra in (TOKENIZER_FILE, MANIFEST_FILE):
        (artifact / extra).symlink_to(downloaded / "extra_files" / extra)
    return OnnxClassifier.load(artifact)


def source_probabilities(model_uri: str, tracking_uri: str, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Probabilities of the source transformers model logged in MLflow, loaded the way users load it."""
    import mlflow

    from ortserve.export.tracking import use_tracking_uri

    with use_tracking_uri(tracking_uri):
        components = mlflow.transformers.load_model(model_uri, return_type="components")
    model = components["model"].eval()
    multi_label = model.config.problem_type == "multi_label_classification"
    return torch_probabilities(model, components["tokenizer"], texts, max_length, multi_label)


def assert_answers_like(answered: np.ndarray, expected: np.ndarray, quantized: bool, multi_label: bool) -> None:
    """fp32 must match the source within the gate; int8 passed a 99% gate on 64 texts, so on these few texts allow
    one disagreement and a small mean difference."""
    if not quantized:
        assert np.abs(answered - expected).max() <= 1e-4
        np.testing.assert_array_equal(answered.argmax(axis=1), expected.argmax(axis=1))
        return
    assert np.abs(answered - expected).mean() < 0.05
    assert np.mean(answered.argmax(axis=1) == expected.argmax(axis=1)) >= 1 - 1 / len(answered)
    if multi_label:
        assert np.mean((answered >= 0.5) == (expected >= 0.5)) >= 1 - 1 / len(answered)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `ortserve export ARGS` as a subprocess, as a scheduler would."""
    binary = Path(sys.executable).parent / "ortserve"
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    environment = {k: v for k, v in environment.items() if v is not None}
    return subprocess.run(
        [str(binary), "export", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def last_error_line(stderr: str) -> str:
    """The `ortserve export: ...` line of a failed run (library warnings may precede it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("ortserve export: ")]
    assert lines, f"no 'ortserve export:' line in stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def summary(stdout: str) -> dict[str, Any]:
    """The JSON summary `ortserve export` prints on success."""
    result: dict[str, Any] = json.loads(stdout)
    return result


def build_slow_only_tokenizer_model(directory: Path) -> tuple[Any, Any]:
    """A tiny BERT classifier whose tokenizer is CTRL's byte-pair tokenizer, which transformers has only in a slow
    (Python) form: what "a tokenizer with no fast form" looks like. Returns (model, tokenizer)."""
    import transformers

    from fixtures.tiny_models import build_tiny_classifier

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(["<unk>", "the", "market", "rain", "good", "bad", "a@@", "b@@"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\na b\n")
    tokenizer = transformers.CTRLTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    assert not tokenizer.is_fast
    model_dir = build_tiny_classifier(directory / "model", "bert")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer
