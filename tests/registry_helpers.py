"""Registers ortserve artifact directories in MLflow the way `ortserve export` logs them (onnx flavor, extra files)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ortserve.server.artifact import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE


def register_artifact(tracking_uri: str, name: str, artifact: Path, alias: str | None = None) -> str:
    """Log `artifact` as an MLflow onnx model and register it as a new version of `name`; return the version."""
    import mlflow
    import onnx

    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as scratch:
        extra = [
            shutil.copy(artifact / TOKENIZER_FILE, Path(scratch) / TOKENIZER_FILE),
            shutil.copy(artifact / MANIFEST_FILE, Path(scratch) / MANIFEST_FILE),
        ]
        with mlflow.start_run():
            info = mlflow.onnx.log_model(
                onnx.load(str(artifact / MODEL_FILE)), name="onnx-model", extra_files=extra, save_as_external_data=False
            )
    version = str(mlflow.register_model(info.model_uri, name).version)
    if alias:
        mlflow.MlflowClient(tracking_uri).set_registered_model_alias(name, alias, version)
    return version


def register_corrupt_version(tracking_uri: str, name: str, artifact: Path, alias: str | None = None) -> str:
    """Register a version whose files download fine but whose model.onnx is not an ONNX graph."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as scratch:
        files = Path(scratch) / "onnx-model"
        (files / "extra_files").mkdir(parents=True)
        (files / MODEL_FILE).write_bytes(b"\x08\x07garbage: an upload that broke half way")
        shutil.copy(artifact / TOKENIZER_FILE, files / "extra_files" / TOKENIZER_FILE)
        shutil.copy(artifact / MANIFEST_FILE, files / "extra_files" / MANIFEST_FILE)
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(files), artifact_path="onnx-model")
            source = f"{run.info.artifact_uri}/onnx-model"
    version = str(client.create_model_version(name, source, run_id=run.info.run_id).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def register_run_artifacts(
    tracking_uri: str, name: str, artifact: Path, alias: str | None = None, experiment: str | None = None
) -> str:
    """Register `artifact` from a run's artifacts (`onnx-model/` with extra_files/, the version's source under the
    run's artifact root, as MLflow 2 logged models): a new version of `name`, returned."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as scratch:
        files = Path(scratch) / "onnx-model"
        (files / "extra_files").mkdir(parents=True)
        shutil.copy(artifact / MODEL_FILE, files / MODEL_FILE)
        for extra in (TOKENIZER_FILE, MANIFEST_FILE):
            shutil.copy(artifact / extra, files / "extra_files" / extra)
        if experiment:
            mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(files), artifact_path="onnx-model")
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    source = f"{run.info.artifact_uri}/onnx-model"
    version = str(client.create_model_version(name, source, run_id=run.info.run_id).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version
