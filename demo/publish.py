"""Logs a trained model to MLflow the way a training job does, and records served accuracy on its ONNX version.

`log_trained_model` opens a run in `TRAINING_EXPERIMENT`, logs the training parameters and metrics, logs the model
with `mlflow.transformers.log_model` (as a text-classification pipeline or as a `{"model", "tokenizer"}` components
dict, the two ways users log classifiers), registers it and points the `production` alias and the legacy
`Production` stage at the new version.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any, Literal

from .train import TrainingResult

log = logging.getLogger(__name__)

TRAINING_EXPERIMENT = "ortserve-demo-training"
LoggedAs = Literal["pipeline", "components"]

#: How the demo logs each model: one of each of the two forms the export must read.
LOGGED_AS: dict[str, LoggedAs] = {"topic-classification": "pipeline", "sentiment-analysis": "components"}


def log_trained_model(
    result: TrainingResult,
    tracking_uri: str,
    logged_as: LoggedAs,
    alias: str | None = "production",
    stage: str | None = "Production",
) -> str:
    """Log `result` in a new run of `TRAINING_EXPERIMENT`, register it as `result.name`; return the version."""
    import mlflow
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(result.directory, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(result.directory, local_files_only=True)
    transformers_model: Any
    if logged_as == "pipeline":
        transformers_model = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)
    else:
        transformers_model = {"model": model, "tokenizer": tokenizer}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(TRAINING_EXPERIMENT)
    with mlflow.start_run(run_name=f"train {result.name}"):
        mlflow.log_params(result.params)
        mlflow.log_metrics(result.metrics)
        info = mlflow.transformers.log_model(
            transformers_model,
            name="model",
            task="text-classification",
            registered_model_name=result.name,
            # Explicit requirements: MLflow's inference of them imports torchvision, which the CPU install lacks.
            pip_requirements=["torch", "transformers"],
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient(tracking_uri)
    if alias:
        client.set_registered_model_alias(result.name, alias, version)
    if stage:
        with warnings.catch_warnings():  # stages are deprecated in MLflow, but users' registries still have them
            warnings.simplefilter("ignore")
            client.transition_model_version_stage(result.name, version, stage, archive_existing_versions=True)
    log.info("registered models:/%s/%s (alias %s, stage %s)", result.name, version, alias, stage)
    return version


def tag_model_version(tracking_uri: str, name: str, version: str, tags: Mapping[str, object]) -> None:
    """Set `tags` on version `version` of the registered model `name` (values as strings)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, f"{value:.4f}" if isinstance(value, float) else str(value))
