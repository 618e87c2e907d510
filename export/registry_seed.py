"""Seeds an MLflow Model Registry with tiny text classifiers logged the way users log them, for the demo and tests.

`topic-classification` is logged as a transformers text-classification pipeline, `sentiment-analysis` as a
components dict `{"model": ..., "tokenizer": ...}`. Each new version gets the alias `production` and the legacy
stage `Production`. Models are built offline from configs (random weights, trained tokenizers).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tiny_models import SENTIMENT_LABELS, TOPIC_LABELS, Architecture, build_tiny_classifier
from .tracking import experiment_id_for, use_tracking_uri

log = logging.getLogger(__name__)

#: Experiment holding the seed runs.
SEED_EXPERIMENT = "ortserve-seed"


@dataclass(frozen=True)
class SeedModel:
    """One model to seed: how it is built and how it is logged."""

    name: str
    architecture: Architecture
    labels: tuple[str, ...]
    logged_as: str
    """`pipeline` (a transformers Pipeline) or `components` (a dict of model and tokenizer)."""
    hidden_size: int = 64
    multi_label: bool = False


#: The models `seed_registry` logs, by registered name.
SEED_MODELS = {
    "topic-classification": SeedModel("topic-classification", "roberta", tuple(TOPIC_LABELS), "pipeline"),
    "sentiment-analysis": SeedModel("sentiment-analysis", "bert", tuple(SENTIMENT_LABELS), "components"),
}


def seed_registry(
    tracking_uri: str | None = None,
    models: Sequence[str] = tuple(SEED_MODELS),
    alias: str | None = "production",
    stage: str | None = "Production",
    workdir: Path | None = None,
) -> dict[str, str]:
    """Log and register each of `models` (names of `SEED_MODELS`) in the store at `tracking_uri` (default: MLflow's
    current tracking URI); point `alias` and `stage` at the new versions. Returns registered name -> version.

    Each call registers new versions; the Hugging Face directories are built under `workdir` (default: a temporary
    directory, removed afterwards).
    """
    with tempfile.TemporaryDirectory(prefix="ortserve-seed-") as scratch:
        root = Path(workdir) if workdir is not None else Path(scratch)
        return {
            name: log_classifier(
                SEED_MODELS[name], root / name, tracking_uri=tracking_uri, alias=alias, stage=stage, seed=i
            )
            for i, name in enumerate(models)
        }


def log_classifier(
    spec: SeedModel,
    directory: Path,
    tracking_uri: str | None = None,
    alias: str | None = None,
    stage: str | None = None,
    seed: int = 0,
    register: bool = True,
) -> str:
    """Build `spec` into `directory`, log it with `mlflow.transformers.log_model` and register it under `spec.name`.

    Returns the registered version, or the logged model's runs:/ URI when `register` is False.
    """
    import transformers

    build_tiny_classifier(
        directory, spec.architecture, list(spec.labels), multi_label=spec.multi_label, hidden_size=spec.hidden_size,
        seed=seed,
    )
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    transformers_model: Any
    if spec.logged_as == "pipeline":
        transformers_model = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)
    else:
        transformers_model = {"model": model, "tokenizer": tokenizer}
    return log_transformers_model(transformers_model, spec.name, tracking_uri, alias, stage, register)


def log_transformers_model(
    transformers_model: Any,
    name: str,
    tracking_uri: str | None = None,
    alias: str | None = None,
    stage: str | None = None,
    register: bool = True,
) -> str:
    """Log a pipeline or components dict as users do, in a new run of `SEED_EXPERIMENT`; register it as `name`.

    Returns the registered version, or the logged model's runs:/ URI when `register` is False.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = experiment_id_for(client, SEED_EXPERIMENT)
    run = client.create_run(experiment_id, tags={"mlflow.runName": f"train {name}"})
    with use_tracking_uri(client.tracking_uri):
        logged = client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)
        info = mlflow.transformers.log_model(
            transformers_model,
            name="model",
            model_id=logged.model_id,  # filed in the run's experiment, as logging inside `mlflow.start_run` does
            run_id=run.info.run_id,
            task="text-classification",
            # Explicit requirements: MLflow's inference of them imports torchvision, which the CPU install lacks.
            pip_requirements=["torch", "transformers"],
        )
        client.set_terminated(run.info.run_id)
        if not register:
            return f"runs:/{run.info.run_id}/model"
        version = str(mlflow.register_model(info.model_uri, name).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    if stage:
        with warnings.catch_warnings():  # stages are deprecated in MLflow, but users' registries still have them
            warnings.simplefilter("ignore")
            client.transition_model_version_stage(name, version, stage, archive_existing_versions=True)
    log.info("seeded models:/%s/%s (alias %s, stage %s)", name, version, alias, stage)
    return version
