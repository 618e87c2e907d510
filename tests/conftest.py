"""Shared fixtures: tiny classifiers built offline, their exported artifacts, and a running server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.tiny_models import SENTIMENT_LABELS, TOPIC_LABELS, build_tiny_classifier
from ortserve.export.pipeline import ExportOptions, export_local_model

from .helpers import RunningServer, running_server
from .mlflow_server import MlflowServer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: name -> (architecture, labels, multi_label)
TINY_MODELS = {
    "bert": ("bert", SENTIMENT_LABELS, False),
    "distilbert": ("distilbert", SENTIMENT_LABELS, False),
    "roberta": ("roberta", TOPIC_LABELS, False),
    "multilabel": ("bert", TOPIC_LABELS, True),
}


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Hugging Face model directories of every tiny model (built once per test session)."""
    root = tmp_path_factory.mktemp("hf-models")
    return {
        name: build_tiny_classifier(root / name, arch, labels, multi_label=multi, seed=i)
        for i, (name, (arch, labels, multi)) in enumerate(TINY_MODELS.items())
    }


@pytest.fixture(scope="session")
def artifacts(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 ortserve artifacts of every tiny model, exported the project's way."""
    root = tmp_path_factory.mktemp("artifacts")
    return {
        name: export_local_model(directory, root / name, ExportOptions(quantize=False)).output
        for name, directory in model_dirs.items()
    }


@pytest.fixture(scope="session")
def server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    """One server on an ephemeral port serving every tiny model under its fixture name."""
    with running_server(
        models=[f"{name}={path}" for name, path in artifacts.items()], max_texts_per_request=16, max_text_chars=500
    ) as running:
        yield running


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` on 127.0.0.1 shared by the registry tests of a session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield server
    finally:
        server.stop()
