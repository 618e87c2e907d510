"""Shared fixtures: tiny artifacts built without torch and a server serving them (the fast lane); tiny Hugging Face
classifiers and their exported artifacts (the export and real-model tests, marked `torch`); a real `mlflow server`."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.tiny_models import SENTIMENT_LABELS, TOPIC_LABELS
from fixtures.tiny_onnx import build_tiny_artifacts

from .helpers import RunningServer, running_server
from .mlflow_server import MlflowServer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The modules a `torch` test needs: without them (the fast lane's venv) such tests are skipped, not failed.
TORCH_MODULES = ("torch", "transformers", "optimum")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use the shared `mlflow_server` as `registry`; skip `torch` and `registry` tests in a venv
    that lacks what they need (the fast lane's), with a reason, instead of failing them."""
    missing = [name for name in TORCH_MODULES if importlib.util.find_spec(name) is None]
    skip_torch = pytest.mark.skip(reason=f"needs {', '.join(missing)} (`make venv` installs them; `make test` runs it)")
    # `mlflow server` is the full mlflow of the export extra; the server extra's mlflow-skinny has no flask.
    skip_registry = pytest.mark.skip(reason="needs `mlflow server` (the full mlflow of the export extra; `make test`)")
    no_mlflow_server = importlib.util.find_spec("flask") is None
    for item in items:
        if "mlflow_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.registry)
        if missing and item.get_closest_marker("torch"):
            item.add_marker(skip_torch)
        if no_mlflow_server and item.get_closest_marker("registry"):
            item.add_marker(skip_registry)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny torch-free artifacts of `fixtures.tiny_onnx` (bert, distilbert, roberta, multilabel), built once per
    session: what the server, client, batching and security tests serve."""
    return build_tiny_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def server(artifacts: dict[str, Path]) -> Iterator[RunningServer]:
    """One server on an ephemeral port serving every tiny artifact under its fixture name."""
    with running_server(
        models=[f"{name}={path}" for name, path in artifacts.items()], max_texts_per_request=16, max_text_chars=500
    ) as running:
        yield running


#: Hugging Face tiny models of the `torch` tests: name -> (architecture, labels, multi_label)
TINY_MODELS = {
    "bert": ("bert", SENTIMENT_LABELS, False),
    "distilbert": ("distilbert", SENTIMENT_LABELS, False),
    "roberta": ("roberta", TOPIC_LABELS, False),
    "multilabel": ("bert", TOPIC_LABELS, True),
}


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Hugging Face model directories of every tiny model, randomly initialised with torch (built once per session)."""
    from fixtures.tiny_models import build_tiny_classifier

    root = tmp_path_factory.mktemp("hf-models")
    return {
        name: build_tiny_classifier(root / name, arch, labels, multi_label=multi, seed=i)
        for i, (name, (arch, labels, multi)) in enumerate(TINY_MODELS.items())
    }


@pytest.fixture(scope="session")
def exported_artifacts(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 ortserve artifacts of every tiny Hugging Face model, exported the project's way (torch and optimum)."""
    from ortserve.export.pipeline import ExportOptions, export_local_model

    root = tmp_path_factory.mktemp("exported")
    return {
        name: export_local_model(directory, root / name, ExportOptions(quantize=False)).output
        for name, directory in model_dirs.items()
    }


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` on 127.0.0.1 shared by the registry tests of a session."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield server
    finally:
        server.stop()
